"""One source of truth for the SQL surface: the header comment of csrc/embsqlite.c.

README, embsqlite.loading.FUNCTIONS and what the compiled extension registers must all list
the same functions with the same arities."""
from __future__ import annotations

import pathlib
import re

from embsqlite import loading

ROOT = pathlib.Path(__file__).resolve().parent.parent


def header_functions() -> dict[str, int]:
    source = (ROOT / "csrc" / "embsqlite.c").read_text()
    header = source[: source.index("*/")]
    found = re.findall(r"^\*\*\s+(\w+)\(([^)]*)\)\s+->", header, flags=re.M)
    return {name: len([a for a in args.split(",") if a.strip()]) for name, args in found}


def test_header_lists_the_functions():
    functions = header_functions()
    assert set(functions) == set(loading.FUNCTIONS)
    assert functions["cosine_similarity"] == 2 and functions["embsqlite_version"] == 0


def test_compiled_extension_registers_exactly_those(conn):
    rows = conn.execute(
        "select name, narg, flags from pragma_function_list"
        f" where name in ({','.join('?' * len(loading.FUNCTIONS))})",
        loading.FUNCTIONS,
    ).fetchall()
    assert {(name, narg) for name, narg, _ in rows} == set(header_functions().items())
    deterministic, innocuous = 0x800, 0x200000  # SQLITE_DETERMINISTIC, SQLITE_INNOCUOUS
    assert all(flags & deterministic and flags & innocuous for _, _, flags in rows)


def test_readme_documents_each_function():
    readme = (ROOT / "README.md").read_text()
    for name in header_functions():
        assert f"`{name}(" in readme, f"README does not document {name}"
