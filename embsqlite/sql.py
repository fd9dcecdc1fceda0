"""The C SQL functions on every kind of SQLite connection Python can hold.

How the functions reach a connection, best first:
- stdlib ``sqlite3``: at import, the cffi module's init is registered with
  ``sqlite3_auto_extension`` on the SQLite library that ``_sqlite3`` links, so
  every connection opened afterwards has the functions; a connection opened
  earlier is registered directly through its ``sqlite3*`` handle;
- ``pysqlite3``, ``sqlean``, ``apsw`` and stdlib builds that have
  ``enable_load_extension``: the loadable extension (``loadable_path()``);
- otherwise, a ``create_function`` fallback in Python that warns once: it is
  correct but calls Python for every row.
"""
from __future__ import annotations

import ctypes
import math
import os
import sqlite3
import sys
import warnings
from typing import Any

from . import vectors
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

_HERE = os.path.dirname(os.path.abspath(__file__))
_auto_registered = False
_fallback_warned = False


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


def _native():
    """The cffi module, or None if it was not built."""
    try:
        from . import _native as native
    except ImportError:
        return None
    return native


def _register_auto_extension() -> bool:
    """Register the C init with sqlite3_auto_extension in the library behind _sqlite3."""
    global _auto_registered
    if _auto_registered:
        return True
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
    _auto_registered = _has_functions(probe)
    probe.close()
    return _auto_registered


def _has_functions(conn: Any) -> bool:
    try:
        conn.execute("select embsqlite_version()").fetchall()
    except Exception:
        return False
    return True


def native_handle(conn: Any) -> Any:
    """The `sqlite3 *` of a stdlib connection, as a cffi pointer the cffi module's C code
    may use (it is bound to the same SQLite library); None for any other connection."""
    native = _native()
    if not isinstance(conn, sqlite3.Connection) or native is None:
        return None
    if not _register_auto_extension():
        return None
    conn.total_changes  # raises ProgrammingError if closed; runs no statement
    # CPython's connection object holds its sqlite3* right after the object header.
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    return native.ffi.cast("sqlite3 *", db) if db else None


def _register_stdlib(conn: sqlite3.Connection) -> bool:
    """Register the C functions on an already open stdlib connection."""
    db = native_handle(conn)
    return db is not None and _native().lib.embsqlite_register_on(db) == 0


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
    _register_fallback(target)


def connect(path: str | os.PathLike = ":memory:", **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)`` with the SQL functions registered."""
    _register_auto_extension()
    return register(sqlite3.connect(path, **kwargs))


def uses_c(conn: Any) -> bool:
    """True when `conn`'s functions are the C ones, not the Python fallback."""
    target = getattr(conn, "conn", conn)
    row = target.execute("select embsqlite_version()").fetchone()
    return not str(row[0]).endswith("(python fallback)")


# The fallback: the same functions, in Python, registered with create_function.


_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}


def _fallback_vector(name: str, blob: Any, arg: int) -> list[float] | None:
    if blob is None:
        return None
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        kind = _SQL_TYPES.get(type(blob), type(blob).__name__)
        raise ValueError(f"{name}: argument {arg} must be a float32 BLOB, not {kind}")
    if len(blob) % 4:
        raise ValueError(
            f"{name}: argument {arg} is a {len(blob)}-byte blob; "
            "a float32 embedding's length is a multiple of 4"
        )
    return vectors.decode(bytes(blob))


def _fallback_finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name}: the result is not finite (an input holds NaN or infinity)")
    return value


def _cosine_similarity(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    va = _fallback_vector("cosine_similarity", a, 1)
    vb = _fallback_vector("cosine_similarity", b, 2)
    assert va is not None and vb is not None
    if len(va) != len(vb):
        raise ValueError(
            f"cosine_similarity: the vectors have different dimensions ({len(va)} and {len(vb)})"
        )
    return _fallback_finite("cosine_similarity", vectors.cosine(va, vb))


def _embedding_to_json(a: Any) -> str | None:
    va = _fallback_vector("embedding_to_json", a, 1)
    return None if va is None else vectors.to_json(va)


def _embedding_from_json(text: Any) -> bytes | None:
    return None if text is None else vectors.from_json(text)


def _embedding_dimensions(a: Any) -> int | None:
    va = _fallback_vector("embedding_dimensions", a, 1)
    return None if va is None else len(va)


def _embedding_norm(a: Any) -> float | None:
    va = _fallback_vector("embedding_norm", a, 1)
    if va is None:
        return None
    return _fallback_finite("embedding_norm", math.sqrt(vectors.norm2(va)))


def _register_fallback(conn: Any) -> None:
    """Register the Python versions; warns once per process that they are slow."""
    global _fallback_warned
    if not _fallback_warned:
        warnings.warn(
            "embsqlite: the C SQL functions cannot be loaded into this connection; "
            "using slower Python functions (one Python call per row)",
            RuntimeWarning,
            stacklevel=4,
        )
        _fallback_warned = True
    from . import __version__

    funcs = (
        ("cosine_similarity", 2, _cosine_similarity),
        ("embedding_to_json", 1, _embedding_to_json),
        ("embedding_from_json", 1, _embedding_from_json),
        ("embedding_dimensions", 1, _embedding_dimensions),
        ("embedding_norm", 1, _embedding_norm),
        ("embsqlite_version", 0, lambda: f"{__version__} (python fallback)"),
    )
    for name, nargs, func in funcs:
        if hasattr(conn, "createscalarfunction"):  # apsw
            conn.createscalarfunction(name, func, nargs, deterministic=True)
        else:
            conn.create_function(name, nargs, func, deterministic=True)


# Connections opened after `import embsqlite` get the C functions automatically.
_register_auto_extension()
