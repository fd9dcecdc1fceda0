"""How the C SQL functions reach every kind of SQLite connection Python can hold.

Best first:
- stdlib ``sqlite3``: on the first `connect()` or `register()` (a `Collection` calls one of
  them; importing embsqlite changes nothing), the cffi module's init is added with
  ``sqlite3_auto_extension`` to the SQLite library that ``_sqlite3`` links, so every stdlib
  connection opened afterwards has the functions. A stdlib connection opened before that
  is registered through its ``sqlite3*``, read out of the connection object only on the
  CPython versions whose layout the tests cover, and only if the handle's main database
  file is the one the connection reports;
- ``pysqlite3``, ``sqlean``, ``apsw`` and stdlib builds that have
  ``enable_load_extension``: the loadable extension (`loadable_path()`);
- otherwise the Python functions of `fallback`, with a warning.
"""
from __future__ import annotations

import ctypes
import os
import sqlite3
import sys
from typing import Any, Optional

from . import fallback
from .platforms import LOADABLE_FILENAME

# SQL function names registered by the C extension (the list in csrc/embsqlite.c).
FUNCTIONS = (
    "cosine_similarity",
    "embedding_to_json",
    "embedding_from_json",
    "embedding_dimensions",
    "embedding_norm",
    "embsqlite_version",
)
# CPython versions on which a stdlib connection object holds its sqlite3* right after the
# object header (pysqlite_Connection in Modules/_sqlite/connection.h); the host tests run
# on the oldest and newest of them.
HANDLE_LAYOUT_VERSIONS = ((3, 9), (3, 13))

_REGISTER_ON = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)
_HERE = os.path.dirname(os.path.abspath(__file__))
_hook: Optional[bool] = None  # None: not tried yet; else whether the hook works


def loadable_path() -> str:
    """Path of the plain SQLite loadable extension, for `.load` and load_extension():
    embsqlite.so (embsqlite.dylib on macOS) next to this file."""
    path = os.path.join(_HERE, LOADABLE_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"embsqlite's loadable extension is not built ({path} is missing); reinstall "
            "with `pip install embsqlite` (a source build needs a C compiler)"
        )
    return path


def _native() -> Any:
    """The cffi module, or None if it was not built."""
    try:
        from . import _native as native
    except ImportError:
        return None
    return native


def install_hook() -> bool:
    """Add the C init to the auto-extensions of the library behind _sqlite3, once per
    process; True when stdlib connections opened from now on get the C functions."""
    global _hook
    if _hook is None:
        _hook = _add_auto_extension()
    return _hook


def _add_auto_extension() -> bool:
    native = _native()
    if native is None or sys.implementation.name != "cpython":
        return False
    import _sqlite3

    try:
        auto_extension = ctypes.CDLL(_sqlite3.__file__).sqlite3_auto_extension
    except (OSError, AttributeError):
        return False  # SQLite linked statically with hidden symbols: no way in
    auto_extension.argtypes = [ctypes.c_void_p]
    auto_extension.restype = ctypes.c_int
    init = native.ffi.addressof(native.lib, "embsqlite_auto_init")
    if auto_extension(int(native.ffi.cast("uintptr_t", init))) != 0:
        return False
    # Opening one connection binds the C code to this library's API table; the
    # functions are there only if it is bound to this library, not to another.
    probe = sqlite3.connect(":memory:")
    try:
        return _has_functions(probe)
    finally:
        probe.close()


def _has_functions(conn: Any) -> bool:
    try:
        conn.execute("select embsqlite_version()").fetchall()
    except Exception:
        return False
    return True


def _handle_layout_known() -> bool:
    """Whether this interpreter's stdlib connection layout is one the tests cover."""
    low, high = HANDLE_LAYOUT_VERSIONS
    return sys.implementation.name == "cpython" and low <= sys.version_info[:2] <= high


def connection_handle(conn: Any) -> Optional[tuple[int, bytes]]:
    """The `sqlite3 *` of an open connection of a stdlib-layout module (sqlite3,
    pysqlite3, sqlean) and the main database file the connection reports, which the
    caller must check the handle against (`sqlite3_db_filename`) before using it; None
    on an interpreter whose layout the tests do not cover."""
    _ = conn.total_changes  # raises ProgrammingError if the connection is closed; runs no SQL
    if not _handle_layout_known():
        return None
    try:
        row = conn.execute("select file from pragma_database_list where name = 'main'").fetchone()
    except Exception:
        return None
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not db or row is None:
        return None
    return db, os.fsencode(row[0] or "")


def _register_stdlib(conn: sqlite3.Connection) -> bool:
    """Register the C functions on an open stdlib connection that lacks them (opened
    before the hook) through its sqlite3*, checked in C against the file it reports."""
    found = connection_handle(conn)
    native = _native()
    if found is None or native is None or not install_hook():
        return False
    db, main_file = found
    # Called through ctypes.PYFUNCTYPE, which keeps the GIL (cffi releases it): replacing a
    # Python function of the same name makes SQLite run its destructor, a Py_DECREF.
    entry = native.ffi.addressof(native.lib, "embsqlite_register_on")
    register_on = _REGISTER_ON(int(native.ffi.cast("uintptr_t", entry)))
    if register_on(db, main_file) != 0:
        return False
    return _has_functions(conn)


def _load_extension(conn: Any) -> bool:
    """Load the loadable extension through the connection's own API, if it has one."""
    path = loadable_path()
    if hasattr(conn, "enable_load_extension") and hasattr(conn, "load_extension"):
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        except Exception:
            return False
        finally:
            conn.enable_load_extension(False)
        return True
    return False


def register(conn: Any, *, embed_text: bool = False) -> Any:
    """Make the SQL functions available on `conn`, in C wherever possible.

    Accepts a stdlib or pysqlite3/sqlean ``Connection``, an ``apsw.Connection`` or a
    ``sqlite_utils.Database``. Returns `conn`. `embed_text=True` also adds
    ``embedding_from_text(model_id, text)`` (see `sql_embed`), which runs models.
    """
    target = getattr(conn, "conn", conn)  # sqlite_utils.Database wraps a connection
    _register_functions(target)
    if embed_text:
        from .sql_embed import register_embed_text

        register_embed_text(target)
    return conn


def _register_functions(target: Any) -> None:
    """The C functions (else the Python fallback) on an unwrapped connection."""
    if _has_functions(target):
        return
    if isinstance(target, sqlite3.Connection) and _register_stdlib(target):
        return
    if _load_extension(target) and _has_functions(target):
        return
    fallback.register(target, stacklevel=3)


def connect(path: str | os.PathLike[str] = ":memory:", **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)`` with the SQL functions registered."""
    install_hook()
    return register(sqlite3.connect(path, **kwargs))


def uses_c(conn: Any) -> bool:
    """True when `conn`'s functions are the C ones, not the Python fallback."""
    target = getattr(conn, "conn", conn)
    row = target.execute("select embsqlite_version()").fetchone()
    return not str(row[0]).endswith(fallback.SUFFIX)
