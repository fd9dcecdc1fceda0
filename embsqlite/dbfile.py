"""Database files embsqlite opens itself (a path given to `Collection`, or the command
line's `-d`): which paths are accepted, how a copy on read-only media is opened, and the
tuning every connection we own gets.

Rules:
- the path must be a regular file, or not exist yet in a directory that exists; a
  directory, device (/dev/null), FIFO or socket is refused before SQLite opens it, so
  nothing (no `-journal`, no `-wal`) is left beside it;
- only the command line's default database may have its directory created;
- a WAL database whose `-shm` cannot be created (a read-only mount or directory) is
  opened again with ``immutable=1`` when no `-wal` holds changes: then nothing can
  write the file, so SQLite may read it without the shared-memory index.
"""
from __future__ import annotations

import os
import sqlite3
import stat
import urllib.parse
from pathlib import Path
from typing import Any, Union

from . import connection, loading

PathLike = Union[str, "os.PathLike[str]"]
MEMORY = ("", ":memory:")
# Sidecar files SQLite keeps beside a database.
SIDECARS = ("-wal", "-shm", "-journal")


class DatabasePathError(ValueError):
    """A database path that cannot be a SQLite database file; nothing was created."""


def check_path(path: PathLike, create_parent: bool = False) -> Path:
    """`path` as a Path, refusing a non-regular file and a missing directory (created
    instead when `create_parent`). Opens nothing."""
    where = Path(path)
    try:
        mode = os.stat(where).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise DatabasePathError(f"database {where}: {error.strerror or error}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise DatabasePathError(f"database {where} is a directory, not a database file")
        if not stat.S_ISREG(mode):
            raise DatabasePathError(
                f"database {where} is not a regular file (a device, FIFO or socket); "
                "a SQLite database must be a regular file"
            )
        return where
    parent = where.parent
    if create_parent:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise DatabasePathError(
            f"database {where}: directory {parent} does not exist (create it first)"
        )
    if not os.access(parent, os.W_OK):  # true for root too on a read-only mount
        raise DatabasePathError(
            f"database {where} does not exist and directory {parent} is not writable "
            "(read-only media?)"
        )
    return where


def _is_wal_file(path: Path) -> bool:
    """Whether the file's header says WAL mode (bytes 18 and 19 are 2)."""
    try:
        with open(path, "rb") as stream:
            header = stream.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2 and header[19] == 2


_SQLITE_CANTOPEN = 14  # sqlite3.SQLITE_CANTOPEN from Python 3.11 on


def _cannot_open(error: sqlite3.Error) -> bool:
    """SQLITE_CANTOPEN (a WAL file's -shm could not be made), not a busy or other error."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == _SQLITE_CANTOPEN
    return "unable to open" in str(error)


def _read_only_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro&immutable=1"


def connect(path: PathLike, create_parent: bool = False) -> Any:
    """A connection embsqlite owns to the database at `path`, with the SQL functions and
    the owned-connection tuning (connection.prepare_connection). A WAL copy on read-only
    media is opened read-only (see the module docstring); DatabasePathError for a path
    that cannot be a database file."""
    timeout = connection.BUSY_TIMEOUT_MS / 1000
    if str(path) in MEMORY:
        conn = loading.connect(str(path), timeout=timeout)
        connection.prepare_connection(conn, owned=True)
        return conn
    where = check_path(path, create_parent)
    conn = loading.connect(str(where), timeout=timeout)
    try:
        conn.execute("select count(*) from sqlite_master").fetchone()
    except sqlite3.OperationalError as error:
        if not _cannot_open(error):
            raise
        conn.close()
        conn = _open_read_only(where, error)
    connection.prepare_connection(conn, owned=True)
    return conn


def _open_read_only(where: Path, error: sqlite3.Error) -> Any:
    """A WAL database that could not be opened: read-only and immutable when that is safe,
    else the error, saying what to do."""
    wal = Path(str(where) + "-wal")
    if not _is_wal_file(where):
        raise DatabasePathError(f"cannot open database {where}: {error}")
    if wal.exists() and wal.stat().st_size > 0:
        raise DatabasePathError(
            f"cannot open database {where}: it is in WAL mode, {wal.name} holds changes "
            f"and {where.name}-shm cannot be created here (read-only media?); copy "
            f"{where.name}-shm along with it, or open it once where it can be written "
            "(that folds the WAL into the file)"
        )
    conn = loading.connect(_read_only_uri(where), uri=True, timeout=connection.BUSY_TIMEOUT_MS / 1000)
    conn.execute("select count(*) from sqlite_master").fetchone()
    return conn


def remove(path: PathLike) -> None:
    """Delete a database file we created, with its sidecar files. Through a symlink that
    file (and SQLite's sidecars) is the link's target; the link itself stays."""
    target = os.path.realpath(path)
    for suffix in ("", *SIDECARS):
        try:
            os.unlink(target + suffix)
        except FileNotFoundError:
            pass


def empty_again(path: PathLike) -> None:
    """Return a file that was empty (0 bytes) before a failed command to 0 bytes, without
    sidecars, if it still holds no table (the command's own tables were dropped)."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute("select count(*) from sqlite_master").fetchone()[0]
    finally:
        conn.close()
    if objects == 0:
        os.truncate(os.path.realpath(path), 0)
        for suffix in SIDECARS:
            try:
                os.unlink(os.path.realpath(path) + suffix)
            except FileNotFoundError:
                pass
