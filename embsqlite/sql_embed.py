"""`embedding_from_text(model_id, text)`: a SQL function that embeds text with a named
model and returns the float32 BLOB, so a query can rank by meaning without a vector
parameter. Registered only on request (`embsqlite.register(conn, embed_text=True)`, and
by the Datasette plugin), because calling it runs a model in the calling process.

The result depends only on (model, text), so the last `CACHE_SIZE` results are kept: a
query that compares every row with one text embeds that text once, and the same search
run again (Datasette's "Run this SQL") embeds nothing.

Errors name the function. A Python function registered with `create_function` can only
report "user-defined function raised exception", so on stdlib `sqlite3` and `pysqlite3`
connections the function is registered through the connection's own SQLite library with
ctypes, which lets it set its own message (`sqlite3_result_error`). apsw passes Python's
message on by itself; any other connection gets `create_function` and the generic text.
"""
from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any, Optional

from . import vectors
from .registry import get_embedding_model

FUNCTION = "embedding_from_text"
CACHE_SIZE = 32
_MAX_MESSAGE = 300  # characters of a model's error message kept in ours

# SQLite constants (sqlite3.h)
_UTF8 = 1
_DETERMINISTIC = 0x800
# Callable only from top-level SQL, never from a view, trigger or index of the schema:
# opening someone else's database must not make its schema run a model.
_DIRECTONLY = 0x80000
_DIRECTONLY_SINCE = 3031000
_TYPE_NAMES = {1: "INTEGER", 2: "REAL", 3: "TEXT", 4: "BLOB", 5: "NULL"}
_TEXT, _NULL = 3, 5
_PYTHON_TYPE_NAMES = {int: "INTEGER", float: "REAL", bytes: "BLOB", memoryview: "BLOB"}
_TRANSIENT = ctypes.c_void_p(-1)
# Modules whose Connection objects hold their `sqlite3 *` right after the object header
# (CPython's `_sqlite3` and its copies), with the library they bind to.
_SQLITE_MODULES = ("_sqlite3", "pysqlite3._sqlite3", "sqlean._sqlite3")


def one_line(error: BaseException) -> str:
    """An exception as one short line: its message's first line, else its type's name."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def model_error(model_id: str, error: BaseException) -> str:
    """What went wrong when `model_id` was looked up or asked to embed, in one line."""
    return f"cannot embed with model {model_id!r}: {one_line(error)}"


@functools.lru_cache(maxsize=CACHE_SIZE)
def embed_text(model_id: str, text: str) -> bytes:
    """`text` embedded by the model with this id or alias, as a float32 blob; the last
    CACHE_SIZE results are kept. Raises ValueError with `model_error`'s message."""
    try:
        blob = vectors.encode(get_embedding_model(model_id).embed(text))
    except Exception as error:  # unknown model, missing extra or API key, model failure
        raise ValueError(model_error(model_id, error)) from None
    if not blob:
        raise ValueError(model_error(model_id, ValueError("the model returned an empty vector")))
    return blob


def _sql_type(value: Any) -> str:
    """The SQL type name of an argument that arrived as a Python value."""
    if isinstance(value, _TypeOnly):
        return value.name
    return _PYTHON_TYPE_NAMES.get(type(value), type(value).__name__)


def _embed_argument(model_id: Any, text: Any) -> Optional[bytes]:
    """Check the SQL arguments (as Python values) and embed; NULL in gives NULL out."""
    if model_id is None or text is None:
        return None
    if not isinstance(model_id, str):
        raise ValueError(f"{FUNCTION}: model_id must be TEXT (a model id or alias)")
    if not isinstance(text, str):
        raise ValueError(f"{FUNCTION}: text must be TEXT, not {_sql_type(text)}")
    try:
        return embed_text(model_id, text)
    except ValueError as error:
        raise ValueError(f"{FUNCTION}: {error}") from None


class _Library:
    """One SQLite library's C API, and the C callback of the function bound to it."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        vp, ip = ctypes.c_void_p, ctypes.c_int
        self.callback_type = ctypes.CFUNCTYPE(None, vp, ip, ctypes.POINTER(vp))
        signatures = {
            "sqlite3_create_function_v2": (ip, [vp, ctypes.c_char_p, ip, ip, vp,
                                                self.callback_type, vp, vp, vp]),
            "sqlite3_value_type": (ip, [vp]),
            "sqlite3_value_text": (vp, [vp]),
            "sqlite3_value_bytes": (ip, [vp]),
            "sqlite3_result_blob": (None, [vp, ctypes.c_char_p, ip, vp]),
            "sqlite3_result_null": (None, [vp]),
            "sqlite3_result_error": (None, [vp, ctypes.c_char_p, ip]),
            "sqlite3_libversion": (ctypes.c_char_p, []),
            "sqlite3_libversion_number": (ip, []),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)  # AttributeError: symbols hidden, no way in
            function.restype, function.argtypes = restype, argtypes
        self.lib = lib
        self.version = lib.sqlite3_libversion().decode()
        self.callback = self.callback_type(self._call)  # kept alive with this object

    def _value(self, value: Any) -> Any:
        kind = self.lib.sqlite3_value_type(value)
        if kind != _TEXT:
            return None if kind == _NULL else _TypeOnly(kind)
        pointer = self.lib.sqlite3_value_text(value)
        if not pointer:
            raise MemoryError("out of memory reading the arguments")
        size = self.lib.sqlite3_value_bytes(value)
        return ctypes.string_at(pointer, size).decode("utf-8", "replace")

    def _call(self, context: int, argc: int, argv: Any) -> None:
        """The SQL function: every failure becomes an SQL error with its own message."""
        try:
            blob = _embed_argument(self._value(argv[0]), self._value(argv[1]))
            if blob is None:
                self.lib.sqlite3_result_null(context)
            else:
                self.lib.sqlite3_result_blob(context, blob, len(blob), _TRANSIENT)
        except BaseException as error:  # nothing may escape a C callback
            message = str(error) if str(error).startswith(FUNCTION) else f"{FUNCTION}: {one_line(error)}"
            self.lib.sqlite3_result_error(context, message.encode("utf-8", "replace"), -1)

    def register(self, handle: int) -> bool:
        flags = _UTF8 | _DETERMINISTIC
        if self.lib.sqlite3_libversion_number() >= _DIRECTONLY_SINCE:
            flags |= _DIRECTONLY
        return self.lib.sqlite3_create_function_v2(
            handle, FUNCTION.encode(), 2, flags, None, self.callback, None, None, None
        ) == 0


class _TypeOnly:
    """A non-TEXT, non-NULL SQL argument, kept only for its type's name."""

    def __init__(self, kind: int):
        self.name = _TYPE_NAMES.get(kind, "unknown type")


@functools.lru_cache(maxsize=None)
def _library(module_name: str) -> Optional[_Library]:
    """The C API of the SQLite library an imported `_sqlite3`-like module links, if its
    symbols can be reached and it is the version the module reports."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        library = _Library(path)
    except (OSError, AttributeError):
        return None
    return library if library.version == getattr(module, "sqlite_version", None) else None


def _register_with_ctypes(conn: Any) -> bool:
    """Create the function on a stdlib-layout connection through its own library."""
    for name in _SQLITE_MODULES:
        module = sys.modules.get(name)
        if module is None or not isinstance(conn, getattr(module, "Connection", ())):
            continue
        library = _library(name)
        if library is None:
            return False
        conn.execute("select 1")  # raises ProgrammingError if the connection is closed
        # These modules keep the connection's sqlite3* right after the object header.
        handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        return bool(handle) and library.register(handle)
    return False


def register_embed_text(conn: Any) -> None:
    """Add `embedding_from_text(model_id, text)` to a stdlib, pysqlite3/sqlean or apsw
    connection. Nothing is loaded until the function is called."""
    if hasattr(conn, "createscalarfunction"):  # apsw reports the exception's own message
        conn.createscalarfunction(FUNCTION, _embed_argument, 2, deterministic=True)
    elif not _register_with_ctypes(conn):
        conn.create_function(FUNCTION, 2, _embed_argument, deterministic=True)

