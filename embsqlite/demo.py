"""The main job (`embsqlite demo`): embed the docstrings of the Python standard library on
this machine into a collection with the default model, then run a few searches.

The corpus is read with `ast` from the standard library's source files, never imported:
the first paragraph of each public module's docstring and of each public top-level class
and function's. Nothing is downloaded; every Python installation has it.
"""
from __future__ import annotations

import ast
import functools
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

from . import dbfile
from .collection import Collection
from .progress import progress_bar

# Package directories whose docstrings are tests, tools or generated boilerplate.
SKIPPED_DIRS = frozenset({
    "test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "pydoc_data",
    "encodings", "site-packages", "dist-packages", "__pycache__", "__phello__",
    "tkinter", "distutils", "msilib",
})
DEFAULT_LIMIT = 1500  # about 20 s with all-MiniLM-L6-v2 on two cores
MIN_CHARS = 20  # shorter first paragraphs ("Constants.", "Helper.") say too little
MAX_CHARS = 300  # long paragraphs are cut at a word boundary: the summary comes first

QUERIES = (
    "compress files into an archive",
    "parse command-line options",
    "measure how long code takes to run",
    "find files matching a wildcard pattern",
    "store Python objects on disk",
)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _first_paragraph(docstring: Optional[str]) -> Optional[str]:
    if not docstring:
        return None
    text = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    if len(text) < MIN_CHARS:
        return None
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit(" ", 1)[0] + " ..."
    return text


def _module_name(root: Path, path: Path) -> Optional[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or any(p.startswith("_") or p in SKIPPED_DIRS or "-" in p for p in parts):
        return None
    if parts[-1].startswith("test_"):
        return None
    return ".".join(parts)


def stdlib_docstrings(root: Optional[Path] = None) -> list[tuple[str, str, dict]]:
    """`(id, text, metadata)` for each public module, class and function docstring of the
    standard library at `root`, in a stable order (by file path, then source order)."""
    return [(id_, text, dict(meta)) for id_, text, meta in _docstrings(root or stdlib_root())]


@functools.lru_cache(maxsize=2)
def _docstrings(root: Path) -> tuple:
    """Parsed once per process (a few seconds of `ast.parse`)."""
    return tuple(_read_docstrings(root))


def _read_docstrings(root: Path) -> Iterator[tuple[str, str, dict]]:
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        if module is None:
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        text = _first_paragraph(ast.get_docstring(tree))
        if text:
            yield module, text, {"kind": "module", "module": module}
        for node in tree.body:
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("_"):
                continue
            text = _first_paragraph(ast.get_docstring(node))
            if text:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                yield f"{module}.{node.name}", text, {"kind": kind, "module": module}


def _spaced(indices: list[int], count: int) -> list[int]:
    """`count` of `indices`, evenly spaced."""
    if count >= len(indices):
        return indices
    step = len(indices) / count if count else 0
    return [indices[int(k * step)] for k in range(count)]


def select(items: list, limit: Optional[int]) -> list:
    """At most `limit` items: modules' docstrings first, then classes and functions, each
    evenly spaced over the library (so every part of it shows up), in list order."""
    if limit is None or limit >= len(items):
        return items
    modules = [i for i, item in enumerate(items) if item[2]["kind"] == "module"]
    others = [i for i, item in enumerate(items) if item[2]["kind"] != "module"]
    chosen = _spaced(modules, limit)
    chosen += _spaced(others, limit - len(chosen))
    keep = set(chosen)
    return [item for i, item in enumerate(items) if i in keep]


def run(
    database: Path,
    model: Optional[str] = None,
    collection_name: str = "python-stdlib",
    limit: Optional[int] = DEFAULT_LIMIT,
    fresh: bool = False,
    queries: Optional[list[str]] = None,
    echo: Callable[[str], None] = print,
) -> Collection:
    """Embed the corpus into `collection_name` in `database`, then search it; returns the
    collection (its connection open)."""
    started = time.perf_counter()
    root = stdlib_root()
    corpus = select(stdlib_docstrings(root), limit)
    if not corpus:
        raise ValueError(f"found no docstrings under {root}")
    version = ".".join(map(str, sys.version_info[:3]))
    echo(f"Corpus: {len(corpus)} docstrings of the Python {version} standard library ({root}),"
         f" read in {time.perf_counter() - started:.1f}s")

    conn = dbfile.connect(database, create_parent=True)
    if fresh and Collection.exists(conn, collection_name):
        Collection(collection_name, conn, create=False).delete()
    collection = Collection.open_or_create(collection_name, conn, model_id=model)
    embedding_model = collection.model()
    echo(f"Model: {collection.model_id}; collection {collection_name!r} in {database}")

    before = collection.count()
    started = time.perf_counter()
    # Similar lengths in a batch mean less padding for transformer models.
    ordered = sorted(corpus, key=lambda item: len(item[1]))
    with progress_bar(len(ordered)) as bar:
        collection.embed_multi_with_metadata(ordered, store=True, batch_size=64, progress=bar.update)
    elapsed = time.perf_counter() - started
    added = collection.count() - before
    # The rate counts only what the model embedded: stored items cost a hash lookup.
    rate = (f"{added / max(elapsed, 1e-9):.0f} new items/s with {embedding_model.model_id}"
            if added else "nothing new to embed")
    echo(f"Embedded {len(corpus)} docstrings ({added} new, {len(corpus) - added} already stored)"
         f" in {elapsed:.1f}s: {rate}")

    for query in queries or QUERIES:
        started = time.perf_counter()
        results = collection.similar(query, number=3)
        echo("")
        echo(f"Search: {query!r}  ({(time.perf_counter() - started) * 1000:.0f} ms)")
        for entry in results:
            snippet = (entry.content or "")
            snippet = snippet if len(snippet) <= 70 else snippet[:67].rstrip() + "..."
            echo(f"  {entry.score:.3f}  {entry.id:<32} {snippet}")
    echo("")
    echo("Search it yourself:")
    echo(f"  embsqlite similar {collection_name} -d {database} -c 'read a config file' --plain -n 3")
    echo(f"  datasette {database}   # then open /-/embsqlite/search")
    return collection
