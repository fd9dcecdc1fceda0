"""`embedding_from_text(model_id, text)`: a SQL function that embeds text with a named
model and returns the float32 BLOB, so a query can rank by meaning without a vector
parameter. Registered only on request (`embsqlite.register(conn, embed_text=True)`, and
by the Datasette plugin), because calling it runs a model in the calling process.

The result depends only on (model, text), so the last `CACHE_SIZE` results are kept, each
under a SHA-256 digest of (model, text) rather than the text itself: a query that compares
every row with one text embeds that text once, and the same search run again (Datasette's
"Run this SQL") embeds nothing. A text longer than `max_text_chars()` (100,000 characters
unless `$EMBSQLITE_SQL_MAX_TEXT` says otherwise) is an error, so one call's time and memory
are bounded: SQLite's interrupts (Datasette's time limit) act between calls, not inside one.

Errors name the function. A Python function registered with `create_function` can only
report "user-defined function raised exception", so on stdlib `sqlite3` and `pysqlite3`
connections the function is registered through the connection's own SQLite library with
ctypes, which lets it set its own message (`sqlite3_result_error`). apsw passes Python's
message on by itself; any other connection gets `create_function` and the generic text.
"""
from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import os
import sys
import threading
from typing import Any, Optional

from . import loading, vectors
from .model import UnknownModelError
from .registry import get_embedding_model

FUNCTION = "embedding_from_text"
CACHE_SIZE = 32
MAX_TEXT_CHARS = 100_000
MAX_TEXT_ENV = "EMBSQLITE_SQL_MAX_TEXT"
_MAX_MESSAGE = 300  # characters of a model's error message kept in ours
_MAX_ECHO = 100  # characters of a caller's value (a model id) quoted in an error

# SQLite constants (sqlite3.h)
_UTF8 = 1
_DETERMINISTIC = 0x800
# Callable only from top-level SQL, never from a view, trigger, CHECK, generated column or
# index of the schema: opening someone else's database must not make its schema run a
# model. SQLite checks the flag when it parses the schema, so a schema read before the
# function existed is read again (`PRAGMA writable_schema=RESET`, SQLite 3.33.0 and later).
_DIRECTONLY = 0x80000
_SAFE_SINCE = 3033000
_RELOAD_SCHEMA = "PRAGMA writable_schema=RESET"
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


def echo(value: Any) -> str:
    """A caller's value quoted in an error, cut to `_MAX_ECHO` characters."""
    text = repr(value)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def model_error(model_id: str, error: BaseException) -> str:
    """What went wrong when `model_id` was looked up or asked to embed, in one line; an
    unknown model's message does not list the models that are installed."""
    reason = "unknown, or not installed here" if isinstance(error, UnknownModelError) else one_line(error)
    return f"cannot embed with model {echo(model_id)}: {reason}"


class TextTooLong(ValueError):
    """The text is longer than `max_text_chars()`."""


def max_text_chars() -> int:
    """The longest text embedded, in characters: `$EMBSQLITE_SQL_MAX_TEXT`, else 100,000."""
    setting = os.environ.get(MAX_TEXT_ENV, "").strip()
    if not setting:
        return MAX_TEXT_CHARS
    try:
        limit = int(setting)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"${MAX_TEXT_ENV} must be a positive whole number of characters,"
                         f" not {echo(setting)}")
    return limit


def check_length(characters: int) -> None:
    """Raise TextTooLong for a text of more than `max_text_chars()` characters."""
    limit = max_text_chars()
    if characters > limit:
        raise TextTooLong(f"text is {characters:,} characters long; the limit is {limit:,}"
                          f" (${MAX_TEXT_ENV})")


class _Results:
    """The last CACHE_SIZE embeddings, keyed by a digest of (model, text): the texts
    themselves are not kept. Shared by every connection's thread."""

    def __init__(self, size: int):
        self.size = size
        self.blobs: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def key(model_id: str, text: str) -> bytes:
        model = model_id.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(len(model).to_bytes(8, "little") + model)  # no ambiguous split
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def get(self, key: bytes) -> Optional[bytes]:
        with self.lock:
            blob = self.blobs.get(key)
            if blob is not None:
                self.blobs.move_to_end(key)
            return blob

    def put(self, key: bytes, blob: bytes) -> None:
        with self.lock:
            self.blobs[key] = blob
            self.blobs.move_to_end(key)
            while len(self.blobs) > self.size:
                self.blobs.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.blobs.clear()


_results = _Results(CACHE_SIZE)


def clear_cache() -> None:
    """Forget every kept embedding."""
    _results.clear()


def cache_keys() -> list[bytes]:
    """The keys of the kept embeddings, oldest first (digests, never texts)."""
    with _results.lock:
        return list(_results.blobs)


def embed_text(model_id: str, text: str) -> bytes:
    """`text` embedded by the model with this id or alias, as a float32 blob; the last
    CACHE_SIZE results are kept. Raises TextTooLong past `max_text_chars()`, else
    ValueError with `model_error`'s message."""
    check_length(len(text))
    key = _results.key(model_id, text)
    blob = _results.get(key)
    if blob is not None:
        return blob
    try:
        blob = vectors.encode(get_embedding_model(model_id).embed(text))
    except Exception as error:  # unknown model, missing extra or API key, model failure
        raise ValueError(model_error(model_id, error)) from None
    if not blob:
        raise ValueError(model_error(model_id, ValueError("the model returned an empty vector")))
    _results.put(key, blob)
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
            "sqlite3_db_filename": (ctypes.c_char_p, [vp, ctypes.c_char_p]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)  # AttributeError: symbols hidden, no way in
            function.restype, function.argtypes = restype, argtypes
        self.lib = lib
        self.version = lib.sqlite3_libversion().decode()
        self.callback = self.callback_type(self._call)  # kept alive with this object

    def _value(self, value: Any, argument: str) -> Any:
        """An argument as str, None for NULL, or its type; never copies an overlong text."""
        kind = self.lib.sqlite3_value_type(value)
        if kind != _TEXT:
            return None if kind == _NULL else _TypeOnly(kind)
        size = self.lib.sqlite3_value_bytes(value)
        limit = max_text_chars()
        if size > 4 * limit:  # more characters than the limit however it decodes: not copied
            raise TextTooLong(f"{argument} is {size:,} bytes of UTF-8, more than"
                              f" {limit:,} characters (${MAX_TEXT_ENV})")
        pointer = self.lib.sqlite3_value_text(value)
        if not pointer:
            raise MemoryError("out of memory reading the arguments")
        return ctypes.string_at(pointer, size).decode("utf-8", "replace")

    def _call(self, context: int, argc: int, argv: Any) -> None:
        """The SQL function: every failure becomes an SQL error with its own message."""
        try:
            blob = _embed_argument(self._value(argv[0], "model_id"), self._value(argv[1], "text"))
            if blob is None:
                self.lib.sqlite3_result_null(context)
            else:
                self.lib.sqlite3_result_blob(context, blob, len(blob), _TRANSIENT)
        except BaseException as error:  # nothing may escape a C callback
            message = str(error)
            if not message.startswith(FUNCTION):
                message = f"{FUNCTION}: {one_line(error)}"
            self.lib.sqlite3_result_error(context, message.encode("utf-8", "replace"), -1)

    def register(self, handle: int) -> bool:
        _check_version(self.lib.sqlite3_libversion_number(), self.version)
        return self.lib.sqlite3_create_function_v2(
            handle, FUNCTION.encode(), 2, _UTF8 | _DETERMINISTIC | _DIRECTONLY, None,
            self.callback, None, None, None
        ) == 0


def _check_version(number: int, version: str) -> None:
    """Refuse a SQLite library that cannot keep the function out of a database's schema."""
    if number < _SAFE_SINCE:
        raise RuntimeError(f"{FUNCTION} needs SQLite 3.33.0 or newer (this connection's is"
                           f" {version}), so that no database's schema can call it")


class _TypeOnly:
    """A non-TEXT, non-NULL SQL argument, kept only for its type's name."""

    def __init__(self, kind: int):
        self.name = _TYPE_NAMES.get(kind, "unknown type")


@functools.cache
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
        found = loading.connection_handle(conn)
        if found is None:
            return False
        handle, main_file = found
        # Only a handle whose main database is the connection's own file is used.
        if library.lib.sqlite3_db_filename(handle, b"main") != main_file:
            return False
        return library.register(handle)
    return False


def register_embed_text(conn: Any) -> None:
    """Add `embedding_from_text(model_id, text)` to a stdlib, pysqlite3/sqlean or apsw
    connection. Nothing is loaded until the function is called. Runs no statement before
    registering, then makes SQLite read the schema again, so that a schema calling the
    function fails ("unsafe use of embedding_from_text()") whatever ran on `conn` before."""
    if hasattr(conn, "createscalarfunction"):  # apsw reports the exception's own message
        import apsw

        _check_version(_version_number(apsw.sqlitelibversion()), apsw.sqlitelibversion())
        conn.createscalarfunction(FUNCTION, _embed_argument, 2, deterministic=True,
                                  flags=_DIRECTONLY)
    elif not _register_with_ctypes(conn):
        raise RuntimeError(f"{FUNCTION} cannot be registered on {type(conn).__module__}."
                           f"{type(conn).__name__}: it needs SQLITE_DIRECTONLY, which this"
                           " connection type cannot set")
    conn.cursor().execute(_RELOAD_SCHEMA).fetchall()


def _version_number(version: str) -> int:
    """"3.45.1" as SQLite's version number, 3045001."""
    major, minor, patch = (int(part) for part in (version.split(".") + ["0", "0"])[:3])
    return major * 1_000_000 + minor * 1000 + patch

