"""The C functions reach every SQLite host: the sqlite3 shell, stdlib sqlite3 (without
enable_load_extension), pysqlite3, apsw and sqlite-utils; the Python fallback is only a
last resort, and says so."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sqlite_utils

import embsqlite
from embsqlite import fallback, loading

VECTORS = np.random.default_rng(42).standard_normal((5, 8)).astype(np.float32)


def expected_scores(query: np.ndarray) -> list[float]:
    rows = VECTORS.astype(np.float64)
    q = query.astype(np.float64)
    return list(rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q)))


def fill(conn) -> None:
    conn.execute("create table t (id integer primary key, e blob)")
    for i, v in enumerate(VECTORS):
        conn.execute("insert into t values (?, ?)", (i, v.tobytes()))


def scores(conn, query: np.ndarray) -> list[float]:
    rows = conn.execute("select cosine_similarity(e, ?) from t order by id", (query.tobytes(),))
    return [r[0] for r in rows]


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.linux_only(reason="nm -D reads ELF dynamic symbols")
def test_loadable_has_no_python_symbols(loadable):
    undefined = subprocess.run(
        ["nm", "-D", "--undefined-only", loadable], capture_output=True, text=True, check=True
    ).stdout
    assert "Py" not in undefined
    defined = subprocess.run(
        ["nm", "-D", "--defined-only", loadable], capture_output=True, text=True, check=True
    ).stdout
    assert "sqlite3_embsqlite_init" in defined and "sqlite3_extension_init" in defined


def test_sqlite3_shell_loads_the_extension(sqlite3_shell, loadable, tmp_path):
    db = tmp_path / "shell.db"
    conn = embsqlite.connect(db)
    fill(conn)
    conn.commit()
    conn.close()
    query = VECTORS[0] + 0.5
    hex_query = query.tobytes().hex()
    result = subprocess.run(
        [sqlite3_shell, str(db), f".load {loadable}",
         f"select cosine_similarity(e, x'{hex_query}') from t order by id;",
         "select embsqlite_version();",
         "select embedding_to_json(embedding_from_json('[1.5, -2]'));"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert [float(x) for x in lines[:5]] == pytest.approx(expected_scores(query), rel=1e-9)
    assert lines[5:] == [embsqlite.__version__, "[1.5,-2]"]


def test_sqlite3_shell_reports_bad_input(sqlite3_shell, loadable):
    result = subprocess.run(
        [sqlite3_shell, ":memory:", f".load {loadable}", "select cosine_similarity(x'00', x'00');"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "cosine_similarity: argument 1 is a 1-byte blob" in result.stderr


def test_import_installs_nothing_and_the_first_connect_hooks_stdlib():
    """Importing embsqlite opens no connection and adds no auto-extension; the first
    embsqlite.connect() does, and stdlib connections opened after it have the C functions
    (stdlib sqlite3 has no enable_load_extension here)."""
    out = run_python(
        """
        import sqlite3, embsqlite
        from embsqlite import loading
        before = sqlite3.connect(":memory:")
        print(loading._hook, loading._has_functions(before))
        embsqlite.connect(":memory:")
        after = sqlite3.connect(":memory:")
        print(loading._hook, loading.uses_c(after))
        """
    )
    assert out.split() == ["None", "False", "True", "True"]


def test_stdlib_connection_opened_before_the_hook_is_registered_through_its_handle(tmp_path):
    out = run_python(
        f"""
        import sqlite3
        conn = sqlite3.connect({str(tmp_path / "before.db")!r})
        import embsqlite
        from embsqlite import loading
        print(loading._has_functions(conn))
        embsqlite.register(conn)
        print(loading.uses_c(conn), conn.execute("select embsqlite_version()").fetchone()[0])
        """
    )
    assert out.split() == ["False", "True", embsqlite.__version__]


def test_handle_of_another_file_is_refused():
    """The C side registers through a handle read out of a connection object only if the
    handle's main database is the file the connection reports."""
    out = run_python(
        """
        import ctypes, os, sqlite3, tempfile
        from embsqlite import _native, loading
        path = os.path.join(tempfile.mkdtemp(), "x.db")
        conn = sqlite3.connect(path)  # before the hook: no functions
        loading.install_hook()
        db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        handle = _native.ffi.cast("sqlite3 *", db)
        print(_native.lib.embsqlite_register_on(handle, b"/another/file.db"))
        print(loading._has_functions(conn))
        print(_native.lib.embsqlite_register_on(handle, os.fsencode(path)))
        print(loading.uses_c(conn))
        """
    )
    assert out.split() == ["20", "False", "0", "True"]  # SQLITE_MISMATCH, then SQLITE_OK


def test_register_replaces_a_python_function_of_the_same_name():
    """SQLite frees the replaced Python function while the C functions are registered:
    that must happen with the GIL held (Python 3.9 and 3.10 need it)."""
    out = run_python(
        """
        import sqlite3
        conn = sqlite3.connect(":memory:")
        conn.create_function("cosine_similarity", 2, lambda a, b: -2.0)
        import embsqlite
        embsqlite.register(conn)
        print(conn.execute("select cosine_similarity(x'0000803f', x'0000803f')").fetchone()[0])
        """
    )
    assert out.split() == ["1.0"]


def test_untested_interpreter_layout_falls_back_with_the_warning():
    """On a CPython version outside the tested ones the handle is never read: a connection
    opened before the hook gets the Python functions, with the warning."""
    out = run_python(
        """
        import sqlite3, warnings
        conn = sqlite3.connect(":memory:")
        import embsqlite
        from embsqlite import loading
        loading.HANDLE_LAYOUT_VERSIONS = ((3, 0), (3, 1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            embsqlite.register(conn)
        print(loading.uses_c(conn), [str(w.message)[:40] for w in caught])
        """
    )
    assert out.startswith("False ['embsqlite: the C SQL functions cannot")


def big_table(conn, rows: int = 100_000, dim: int = 384) -> np.ndarray:
    data = np.random.default_rng(1).standard_normal((rows, dim)).astype(np.float32)
    conn.execute("create table big (id integer primary key, e blob)")
    conn.executemany("insert into big values (?, ?)", ((i, r.tobytes()) for i, r in enumerate(data)))
    return data


@pytest.mark.slow
def test_scan_of_100000_rows_makes_no_python_call(conn, python_calls):
    data = big_table(conn)
    query = data[123]
    calls, row = python_calls(
        lambda: conn.execute("select max(cosine_similarity(e, ?)) from big", (query.tobytes(),)).fetchone()
    )
    assert row[0] == pytest.approx(1.0)
    assert calls == 1  # the lambda itself; nothing for any of the 100,000 rows


@pytest.mark.slow
def test_forced_fallback_calls_python_per_row_and_warns_once(tmp_path, monkeypatch, python_calls):
    """The same scan on the fallback: correct, but one Python call per row, and a warning."""
    import sqlite3

    monkeypatch.setattr(loading, "_has_functions", lambda conn: False)
    monkeypatch.setattr(loading, "_register_stdlib", lambda conn: False)
    monkeypatch.setattr(loading, "_load_extension", lambda conn: False)
    monkeypatch.setattr(fallback, "_warned", False)
    conn = sqlite3.connect(tmp_path / "f.db")
    with pytest.warns(RuntimeWarning, match="slower Python functions"):
        embsqlite.register(conn)
    other = sqlite3.connect(":memory:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embsqlite.register(other)  # no second warning
    assert not loading.uses_c(conn)
    data = big_table(conn, rows=2_000, dim=16)
    query = data[5]
    calls, row = python_calls(
        lambda: conn.execute("select max(cosine_similarity(e, ?)) from big", (query.tobytes(),)).fetchone()
    )
    assert row[0] == pytest.approx(1.0)
    assert calls >= 2_000
    # Same answers and the same error texts as the C functions.
    fill(conn)
    assert scores(conn, VECTORS[2]) == pytest.approx(expected_scores(VECTORS[2]), rel=1e-9)
    assert conn.execute("select embedding_to_json(embedding_from_json('[0.1, -0.0, 3]'))").fetchone()[0] == "[0.1,-0,3]"
    assert conn.execute("select cosine_similarity(x'00000000', x'00000000')").fetchone()[0] == 0.0
    # stdlib shows a generic message; the Python exception reaches sys.unraisablehook
    # (sys.excepthook before Python 3.10)
    raised: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: raised.append(str(info.exc_value)))
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: raised.append(str(value)))
    sqlite3.enable_callback_tracebacks(True)
    try:
        for bad, message in [
            ("select cosine_similarity(x'00', x'00000000')", "argument 1 is a 1-byte blob"),
            ("select cosine_similarity(x'0000803f', x'0000803f0000803f')",
             "different dimensions (1 and 2)"),
            ("select cosine_similarity('a', x'00000000')", "must be a float32 BLOB"),
            ("select embedding_from_json('[nan]')", "embedding_from_json"),
        ]:
            raised.clear()
            with pytest.raises(sqlite3.OperationalError, match="user-defined function raised"):
                conn.execute(bad).fetchall()
            assert len(raised) == 1 and message in raised[0], (bad, raised)
    finally:
        sqlite3.enable_callback_tracebacks(False)


def test_pysqlite3_gets_c_functions_through_load_extension(tmp_path):
    pysqlite3 = pytest.importorskip("pysqlite3.dbapi2", reason="pysqlite3-binary is a test dependency")
    conn = pysqlite3.connect(str(tmp_path / "p.db"))
    embsqlite.register(conn)
    assert loading.uses_c(conn)
    fill(conn)
    assert scores(conn, VECTORS[3]) == pytest.approx(expected_scores(VECTORS[3]), rel=1e-9)


def test_apsw_gets_c_functions():
    # A separate process: one copy of the loadable binds to one SQLite library, and the
    # test process has already bound it to pysqlite3's.
    out = run_python(
        """
        import apsw, embsqlite
        from embsqlite import fallback, loading
        conn = apsw.Connection(":memory:")
        embsqlite.register(conn)
        print(loading.uses_c(conn))
        a, b = embsqlite.encode([1, 0]), embsqlite.encode([1, 1])
        print(next(conn.execute("select cosine_similarity(?, ?)", (a, b)))[0])
        """
    )
    uses_c, score = out.split()
    assert uses_c == "True"
    assert float(score) == pytest.approx(0.5 ** 0.5, rel=1e-12)


def test_sqlite_utils_database_on_path_and_on_stdlib_connection(tmp_path):
    import sqlite3

    for db in (
        sqlite_utils.Database(tmp_path / "u.db"),  # uses pysqlite3 when installed
        sqlite_utils.Database(sqlite3.connect(tmp_path / "s.db")),
    ):
        embsqlite.register(db)
        assert loading.uses_c(db)
        fill(db.conn)
        row = db.execute("select embedding_dimensions(e) from t where id = 0").fetchone()
        assert row[0] == 8


def test_two_sqlite_libraries_in_one_process():
    """stdlib (cffi copy) and pysqlite3 (loadable copy) work side by side."""
    out = run_python(
        """
        import sqlite3, pysqlite3.dbapi2 as p3, embsqlite
        from embsqlite import fallback, loading
        a = embsqlite.connect(":memory:")
        b = embsqlite.register(p3.connect(":memory:"))
        print(loading.uses_c(a), loading.uses_c(b), a.execute("select sqlite_version()").fetchone()[0]
              != b.execute("select sqlite_version()").fetchone()[0])
        """
    )
    assert out.split()[:2] == ["True", "True"]


def test_loading_into_a_second_library_fails_clearly_then_falls_back():
    out = run_python(
        """
        import warnings, apsw, pysqlite3.dbapi2 as p3, embsqlite
        from embsqlite import fallback, loading
        first = embsqlite.register(p3.connect(":memory:"))  # kept open: closing unloads it
        conn = apsw.Connection(":memory:")
        conn.enable_load_extension(True)
        try:
            conn.load_extension(embsqlite.loadable_path())
        except apsw.Error as error:
            print("refused:", "already in use by another SQLite library" in str(error))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            embsqlite.register(conn)
        print("fallback:", not loading.uses_c(conn), len(caught))
        """
    )
    assert "refused: True" in out
    assert "fallback: True 1" in out


def test_connect_returns_stdlib_connection_with_functions(tmp_path):
    import sqlite3

    conn = embsqlite.connect(tmp_path / "c.db")
    assert isinstance(conn, sqlite3.Connection)
    assert loading.uses_c(conn)


def test_register_on_closed_connection_is_an_error():
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        embsqlite.register(conn)


def test_loadable_loaded_first_by_another_sqlite_does_not_break_stdlib():
    """SQLite's load_extension opens the file RTLD_GLOBAL; the cffi module must still
    bind to the stdlib's SQLite (hidden symbols), and its auto-extension must never make
    a stdlib open fail."""
    out = run_python(
        """
        import os, sqlite3, apsw
        import importlib.util
        here = os.path.dirname(importlib.util.find_spec("embsqlite").origin)
        loadable = os.path.join(here, "embsqlite.so")
        a = apsw.Connection(":memory:")
        a.enable_load_extension(True)
        a.load_extension(loadable)
        import embsqlite
        from embsqlite import fallback, loading
        conn = embsqlite.connect(":memory:")
        print(loading.uses_c(conn), loading.uses_c(a))
        print(next(a.execute("select cosine_similarity(x'0000803f', x'0000803f')"))[0])
        """
    )
    assert out.split() == ["True", "True", "1.0"]


@pytest.mark.linux_only(reason="nm -D reads ELF dynamic symbols")
def test_only_the_entry_points_are_exported(loadable):
    import embsqlite._native as native

    for path, expected in ((loadable, {"sqlite3_embsqlite_init", "sqlite3_extension_init"}),
                           (native.__file__, {"PyInit__native"})):
        symbols = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True,
                                 text=True, check=True).stdout.split("\n")
        names = {line.split()[-1] for line in symbols if line.strip() and " T " in line}
        assert names == expected, (path, names)
