"""The vector file: a collection's vectors in a file beside the database, mapped into memory.

A search of a collection whose database keeps change tokens (changes.py) scans a copy of
its float32 vectors in a file beside the database, ``<database>-embsqlite-<collection
id>.vectors``, instead of reading every row through SQLite's pages: the file is mapped
(shared with every process that searches it, through the page cache), scanned in C on
`threads()` threads, and only the top rows are read from SQLite, by rowid.

The file holds a header (magic, format, byte order, the `changes.State` it was built
from, collection id and name, dimensions, rows), then the matrix (one row per non-NULL
embedding, in rowid order, the stored bytes), each row's squared norm and each row's
rowid, then the sketch (csrc/sketch.c): each row coded in one signed byte a value, and
32 bytes of scale and error bounds a row. A search reads the sketch (a quarter of the
matrix's bytes: the only part mapped with all its pages at once) and scores exactly,
from the float32 rows, only the few rows whose bounds say they may be among the best:
the answer is the full scan's, to the bit.

The file is valid only while the database's state reads the same; the state is read in
the read transaction of the search, which also reads the top rows, so a search never
uses a copy of other rows than those it returns. When the file is missing or stale and
the directory can be written, the search builds it (one statement reading the table in
rowid order, into a temporary file renamed into place: readers keep their old mapping)
and ranks from it; otherwise, or when the database keeps no tokens, the search falls back
to SQL and the in-memory cache. A search never writes the database.

Ties: the C scan orders by score, then rowid; a search also asks it for the best score
left out, and when that ties with the k-th, fetches all rows of that score (up to
`TIE_LIMIT`, else the search falls back to SQL) and orders them by id as SQLite does.

Every row a search returns is checked against the file: its stored bytes must equal the
file's row, and its id must not be NULL; else the file is dropped and SQL answers. The
header also records the database file's device and inode, so a database re-created at the
same path (e.g. from a `.dump`, which renumbers rowids) never uses the old file.

Writes the triggers cannot see: incremental blob I/O (`sqlite3_blob_write`) and writes
made with triggers turned off (SQLITE_DBCONFIG_ENABLE_TRIGGER). A returned row changed so
is caught by the check above; a row changed so that should now rank higher is not: a
known limit (delete the file after such writes).
"""
from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import re
import socket
import stat
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional, Union

from . import cache, changes, idorder, settings
from .transaction import in_transaction, read_transaction

logger = logging.getLogger(__name__)

SUFFIX = ".vectors"
FORMAT = 4
MAGIC = b"embsqlite-vector"  # 16 bytes
HEADER_BYTES = 4096  # the matrix starts on a page boundary
SKETCH_ALIGN = 65536  # the sketch starts at an offset any page size can map from
SKETCH_ROW_BYTES = 32  # a SketchRow of csrc/sketch.c
_BYTE_ORDER = 0x01020304
# magic, format, byte order, schema (hash), token (0/1 present, value), the largest and
# the smallest copied rowid with their rows' hashes (changes.State), collection id,
# dimensions, rows, boot id, database device and inode, name length; native order (norms
# and rowids are native too)
_HEADER = struct.Struct("=16sIIqIqqqqqqIq16sQQI")
_DURABLE = bytes(16)  # the boot id of a file fsynced before it was renamed into place
_NAME_MAX = HEADER_BYTES - _HEADER.size
# The top rows by rowid, in SQLite's order of ids (ties are then kept in it); the unary +
# keeps the planner off the primary-key index (a walk of the whole collection).
_FETCH_SQL = (
    "select rowid, id, content, metadata, embedding from embeddings where rowid in"
    " (select value from json_each(?)) and +collection_id = ? and embedding is not null"
    " and id is not null order by id"
)
# The rows a file holds (those the SQL ranking statement can return: it joins on id).
_ROWS_WHERE = "collection_id = ? and embedding is not null and id is not null"
SPACE_MARGIN = 64 * 2**20  # a build needs twice the file's size free, and this much more
TIE_LIMIT = 10_000  # more rows tied with the k-th score: the search runs in SQL

_enabled = settings.env_number("EMBSQLITE_VECTOR_FILES", 1, integer=True) != 0
_threads = int(settings.env_number("EMBSQLITE_SCAN_THREADS", min(2, os.cpu_count() or 1),
                                   minimum=1, integer=True))
_lock = threading.Lock()
_mapped: dict[str, _Mapped] = {}  # by file path: the current mapping of each file
_unwritable: set[str] = set()  # directories noted once as not writable
# (file path, key) at which a build failed (rows, space, the file system) or, with a
# deadline, was abandoned: process-wide, so no search retries it until the state moves
_failed: set[tuple[str, _Key]] = set()
_late: set[tuple[str, _Key]] = set()


def configure(*, enabled: Optional[bool] = None, threads: Optional[int] = None) -> None:
    """Turn vector files on or off (EMBSQLITE_VECTOR_FILES=0 turns them off) and set the
    scan's threads (EMBSQLITE_SCAN_THREADS, default: 2 or the number of CPUs if fewer)."""
    global _enabled, _threads
    if enabled is not None:
        _enabled = enabled
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int of at least 1, not {threads!r}")
        _threads = threads


def enabled() -> bool:
    """Whether searches use (and build) vector files."""
    return _enabled


def threads() -> int:
    """Threads a scan of a vector file uses."""
    return _threads


def file_path(database: str, collection_id: int) -> str:
    """The vector file of a collection of the database file `database`."""
    return f"{database}-embsqlite-{collection_id}{SUFFIX}"


def database_path(conn: Any) -> Optional[str]:
    """The file of the connection's main database; None for an in-memory or temporary one."""
    for row in conn.execute("pragma database_list").fetchall():
        if row[1] == "main":
            return str(row[2]) or None
    return None


class Row(NamedTuple):
    """One result: id, score, and the stored content and metadata (JSON text)."""

    id: str
    score: float
    content: Optional[str]
    metadata: Optional[str]


# What a file must record to be used: the state, the collection id, and the database
# file's (device, inode)
_Key = tuple[changes.State, int, tuple[int, int]]


class _Mapped(NamedTuple):
    """An open, checked vector file: replaced as a whole when the file changes."""

    identity: tuple[int, int, int, int]  # device, inode, size, mtime (ns)
    key: _Key
    dimensions: int
    rows: int
    mapping: Optional[mmap.mmap]  # None when the file holds no rows
    sketch_mapping: Optional[mmap.mmap]  # the sketch's part, its pages mapped at once
    matrix: Any  # cffi pointers into the mappings
    norms: Any
    rowids: Any
    codes: Any
    sketch: Any


class _Layout(NamedTuple):
    """Byte offsets of a file's parts, and its size."""

    norms: int
    rowids: int
    codes: int
    sketch: int
    size: int


def _offsets(rows: int, dimensions: int) -> _Layout:
    """Where the parts of a file of `rows` rows of `dimensions` values are (the norms and
    rowids where native.c's file sink writes them, then the sketch)."""
    norms = (HEADER_BYTES + rows * dimensions * 4 + 7) & ~7
    codes = (norms + 16 * rows + SKETCH_ALIGN - 1) // SKETCH_ALIGN * SKETCH_ALIGN
    sketch = (codes + rows * dimensions + 7) & ~7
    return _Layout(norms, norms + 8 * rows, codes, sketch, sketch + SKETCH_ROW_BYTES * rows)


_boot: Optional[bytes] = None


def boot_id() -> bytes:
    """This boot of the kernel (Linux's random boot id), or _DURABLE where there is none.

    A file is written without fsync and records the boot: until the next boot the page
    cache is the file, written back or not, so it is trusted; after a reboot (perhaps a
    crash that lost pages written before their metadata) it is not, and the first search
    builds it again. Without a boot id the file is fsynced before it is renamed."""
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as stream:
                text = stream.read(100).strip()
            _boot = bytes.fromhex(text.decode("ascii").replace("-", "")) if len(text) == 36 else _DURABLE
        except (OSError, ValueError):
            _boot = _DURABLE
    return _boot


def _header(key: _Key, name: str, dimensions: int, rows: int) -> bytes:
    state, collection_id, (device, inode) = key
    encoded = name.encode("utf-8", "surrogatepass")[:_NAME_MAX]
    return _HEADER.pack(
        MAGIC, FORMAT, _BYTE_ORDER, state.schema, state.token is not None,
        state.token or 0, state.last_rowid, state.last_row, state.first_rowid, state.first_row,
        collection_id, dimensions, rows,
        boot_id(), device, inode, len(encoded),
    ) + encoded


def _database_identity(database: Optional[str]) -> Optional[tuple[int, int]]:
    """The database file's (device, inode): a file re-created at its path has others."""
    if database is None:
        return None
    try:
        info = os.stat(database)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _open(path: str, fits: Callable[[_Key], bool]) -> Optional[_Mapped]:
    """The file at `path` mapped when it is a regular vector file recording a key that
    `fits` (its header is read and checked before anything is mapped), reusing this
    process's mapping while the file is the same (device, inode, size, mtime); None
    otherwise. A FIFO, a directory, a symlink or any error reads as no usable file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    mapped: Optional[_Mapped] = None
    try:
        fd = os.open(path, flags)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
                with _lock:
                    known = _mapped.get(path)
                if known is not None and known.identity == identity:
                    return known if fits(known.key) else None
                mapped = _read(fd, identity, fits)
        except (OSError, ValueError) as error:
            logger.debug("vector file %s not used: %s", path, error)
            mapped = None
        finally:
            os.close(fd)
    with _lock:
        if mapped is None:
            _mapped.pop(path, None)
        else:
            _mapped[path] = mapped
    return mapped


def _read(fd: int, identity: tuple[int, int, int, int], fits: Callable[[_Key], bool]) -> Optional[_Mapped]:
    """Map the open file `fd` if its header records a key that `fits` and its size is the
    one the header implies (checked before mapping: a stale or foreign file is never
    mapped)."""
    from . import _native

    head = os.pread(fd, _HEADER.size, 0)
    if len(head) != _HEADER.size:
        return None
    (magic, fmt, order, schema, has_token, token, last_rowid, last_row, first_rowid,
     first_row, collection_id, dimensions, count, boot, device, inode, _) = _HEADER.unpack(head)
    if (magic, fmt, order) != (MAGIC, FORMAT, _BYTE_ORDER) or dimensions <= 0 or count < 0:
        return None
    if boot not in (boot_id(), _DURABLE):
        return None  # written before a reboot and never fsynced
    key = (changes.State(schema, token if has_token else None, last_rowid, last_row,
                         first_rowid, first_row), collection_id, (device, inode))
    if not fits(key):
        return None
    at = _offsets(count, dimensions)
    if identity[2] != at.size:
        return None
    if count == 0:
        return _Mapped(identity, key, dimensions, 0, None, None, None, None, None, None, None)
    # The float32 rows are read a few at a time (the candidates a sketch lets through, the
    # rows returned); the sketch whole, at every search: MAP_POPULATE maps its pages at
    # once (in the page cache: no read), which costs a new process less than a fault per
    # 64 KiB during its first scan (measured: ~2/3 of it)
    mapping = mmap.mmap(fd, at.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    sketch_mapping = mmap.mmap(fd, at.size - at.codes, offset=at.codes, prot=mmap.PROT_READ,
                               flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
    ffi = _native.ffi
    whole = ffi.cast("unsigned char *", ffi.from_buffer(mapping))
    sketch = ffi.cast("unsigned char *", ffi.from_buffer(sketch_mapping))
    return _Mapped(
        identity, key, dimensions, count, mapping, sketch_mapping, whole + HEADER_BYTES,
        ffi.cast("double *", whole + at.norms), ffi.cast("long long *", whole + at.rowids),
        ffi.cast("signed char *", sketch), ffi.cast("SketchRow *", sketch + (at.sketch - at.codes)),
    )


def _drop(path: str, mapped: Optional[_Mapped] = None) -> None:
    """Forget this process's mapping of `path` and delete the file when it is a regular
    file (`mapped`'s, when given): never anything else that sits at our path."""
    with _lock:
        _mapped.pop(path, None)
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(info.st_mode) and (mapped is None or (info.st_dev, info.st_ino) == mapped.identity[:2]):
        _unlink(path)


class _Mismatch(Exception):
    """A row the file ranked is not, in SQLite, the row the file holds."""


class VectorFile:
    """The vector file of one collection, as one connection searches and builds it."""

    def __init__(self, conn: Any, collection_id: int, name: str) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self.name = name
        self.database = database_path(conn)
        self.path = None if self.database is None else file_path(os.path.abspath(self.database), collection_id)
        self.builds = 0  # files this object wrote
        self._used: Optional[changes.State] = None  # state of the last search from the file
        self._stale: Optional[changes.State] = None  # a state seen once, not yet built

    def search(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str], token: Optional[tuple[Any, ...]],
        rowids: Optional[Union[Sequence[int], Callable[[], Sequence[int]]]] = None,
        deadline: Optional[float] = None,
    ) -> Optional[list[Row]]:
        """The top `number` rows for `query` (ids in [low, high), without skip_id, and
        only `rowids` when given: ascending rowids of the collection, e.g. a filter's, or a
        function returning them, called inside this search's read transaction),
        best first, ties by id; None when the file cannot answer (the caller searches
        SQLite). `token` is the connection's change token, None inside a transaction;
        a build still running at `deadline` (time.monotonic()) is abandoned, and not tried
        again with a deadline at the same state."""
        if not _enabled or self.path is None or token is None:
            return None
        if not all(cache._encodable(text) for text in (low, high, skip_id)):
            return None
        with read_transaction(self.conn):
            want = self._key()
            if want is None:
                return None
            state = want[0]
            mapped = _open(self.path, self._fits(want))
            if mapped is None:
                with _lock:
                    given_up = (self.path, want) in _failed or (
                        deadline is not None and (self.path, want) in _late)
                if given_up:
                    return None
                if self._used is not None and state not in (self._used, self._stale):
                    # written since this object's last search from the file: a process
                    # that writes and searches in turn would rebuild for every search, so
                    # SQL answers and a second search at the same state builds (as the
                    # cache loads); a new process (the command line) builds at once
                    self._stale = state
                    return None
                mapped = self._build(want, deadline)
                if mapped is None:
                    return None
            self._used = state
            if len(query) != 4 * mapped.dimensions:
                return None  # SQLite reports the mismatch
            if callable(rowids):  # a filter's rows, chosen now that the file answers, here
                rowids = rowids()
            try:
                return self._rank(mapped, query, number, low, high, skip_id, rowids)
            except _Mismatch:
                logger.debug("vector file %s does not hold the rows it ranks: dropped", self.path)
                _drop(self.path, mapped)
                return None

    def _fits(self, want: _Key) -> Callable[[_Key], bool]:
        """Whether a file recording a key holds the collection now that its key reads
        `want` (inside the read transaction): the same collection and database file, and
        `changes.unchanged` (rows added to other collections since leave it valid)."""
        def fits(key: _Key) -> bool:
            return key[1:] == want[1:] and changes.unchanged(self.conn, key[0], want[0])
        return fits

    def _key(self) -> Optional[_Key]:
        """What the file must record now (inside the read transaction); None when the
        database keeps no tokens for the collection or its file cannot be told."""
        state = changes.state(self.conn, self.collection_id)
        database = _database_identity(self.database)
        if state is None or database is None:
            return None
        return state, self.collection_id, database

    def build(self) -> Optional[str]:
        """Write the file now unless it is current (the database must keep change tokens);
        its path, or None when it cannot be written here."""
        if self.path is None:
            return None
        with read_transaction(self.conn):
            want = self._key()
            if want is None:
                return None
            mapped = _open(self.path, self._fits(want))
            if mapped is None:
                mapped = self._build(want)
        return None if mapped is None else self.path

    def remove(self) -> None:
        """Delete the collection's vector file, if any, and this process's mapping of it."""
        if self.path is not None:
            _drop(self.path)

    def _rank(
        self, mapped: _Mapped, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str], subset: Optional[Sequence[int]],
    ) -> Optional[list[Row]]:
        """Scan `mapped` and read the top rows, inside the search's read transaction."""
        from . import _native

        ffi, lib = _native.ffi, _native.lib
        if mapped.rows == 0:
            return []
        positions = ffi.NULL
        count = mapped.rows
        if low is not None or subset is not None:
            if low is None:
                wanted = subset if isinstance(subset, array) else list(subset or ())
            else:
                wanted = sorted(self._prefix_rowids(low, high))
                if subset is not None:
                    wanted = sorted(set(wanted).intersection(subset))
            if isinstance(wanted, array):  # an array('q') is handed over without a copy
                want = ffi.from_buffer("long long[]", wanted)
            else:
                want = ffi.new("long long[]", wanted)
            positions = ffi.new("long long[]", max(len(wanted), 1))
            count = lib.embsqlite_positions(mapped.rowids, mapped.rows, want, len(wanted), positions)
            if count < 0:
                raise ValueError("rowids must ascend")
        skip = -1
        if skip_id is not None:
            found = self.conn.execute(
                "select rowid from embeddings where collection_id = ? and id = ?",
                (self.collection_id, skip_id),
            ).fetchone()
            if found is not None:
                want = ffi.new("long long[]", [found[0]])
                at = ffi.new("long long[]", 1)
                if lib.embsqlite_positions(mapped.rowids, mapped.rows, want, 1, at) == 1:
                    skip = at[0]
        k = min(number, count)
        if k == 0:
            return []
        if k > 2**31 - 1:
            return None
        out_rows = ffi.new("long long[]", k)
        out_scores = ffi.new("double[]", k)
        best_out = ffi.new("double *")
        found = lib.embsqlite_sketch_scan(
            mapped.codes, mapped.sketch, mapped.matrix, mapped.norms, mapped.rows,
            mapped.dimensions, query, positions, 0, count, skip, k, _threads, out_rows,
            out_scores, best_out,
        )
        if found < 0:
            return None  # non-finite data: SQLite raises the proper error
        scores = dict(zip(ffi.unpack(out_rows, found), ffi.unpack(out_scores, found)))
        if found and best_out[0] == out_scores[found - 1]:
            last = out_scores[found - 1]
            tied = ffi.new("long long[]", TIE_LIMIT)
            ties = lib.embsqlite_ties(
                mapped.matrix, mapped.norms, mapped.rows, mapped.dimensions, query, positions,
                0, count, skip, last, tied, TIE_LIMIT,
            )
            if ties < 0 or ties > TIE_LIMIT:
                return None
            scores.update(dict.fromkeys(ffi.unpack(tied, ties), last))
        by_rowid = {mapped.rowids[position]: score for position, score in scores.items()}
        try:  # in SQLite's order of ids, then (a stable sort) by score
            fetched = self.conn.execute(_FETCH_SQL, (json.dumps(list(by_rowid)), self.collection_id)).fetchall()
        except Exception as error:
            if "json_each" not in str(error):
                raise
            return None  # an SQLite without JSON: SQL answers instead
        if len(fetched) != len(by_rowid):
            raise _Mismatch  # a rowid the file ranked is gone (or its id is NULL)
        row_bytes = 4 * mapped.dimensions
        position_of = {mapped.rowids[position]: position for position in scores}
        for row in fetched:  # each returned row holds the bytes the file scored
            at = mapped.matrix + position_of[row[0]] * row_bytes
            if row[4] != ffi.buffer(at, row_bytes)[:]:
                raise _Mismatch
        negated = [-by_rowid[row[0]] for row in fetched]
        order = sorted(range(len(fetched)), key=negated.__getitem__)[:k]
        return [Row(fetched[i][1], -negated[i], fetched[i][2], fetched[i][3]) for i in order]

    def _prefix_rowids(self, low: str, high: Optional[str]) -> list[int]:
        """Rowids of the collection's rows with low <= id < high (SQLite's order)."""
        sql = ("select rowid from embeddings where collection_id = ? and id >= ?"
               + (" and id < ?" if high is not None else ""))
        params: tuple[Any, ...] = (self.collection_id, low) + ((high,) if high is not None else ())
        return [row[0] for row in self.conn.execute(sql, params)]

    def _build(self, want: _Key, deadline: Optional[float] = None) -> Optional[_Mapped]:
        """Write the file from the collection's rows at `want` (inside the search's read
        transaction) and map it; None if it cannot be written here (the path holds
        something else, too little free space, rows that cannot be copied such as vectors
        of mixed lengths, a file system error: remembered process-wide for `want`) or
        `deadline` passed first (remembered for searches with a deadline)."""
        assert self.path is not None
        path = self.path
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                logger.debug("vector file %s: the path holds something else", path)
                return self._give_up(want)
        except FileNotFoundError:
            pass
        except OSError:
            return self._give_up(want)
        first = self.conn.execute(
            f"select length(embedding) from embeddings where {_ROWS_WHERE} limit 1", (self.collection_id,)
        ).fetchone()
        if first is None or not isinstance(first[0], int) or first[0] <= 0 or first[0] % 4:
            return None  # no vectors, or not blobs of float32: SQLite's path answers
        row_bytes = first[0]
        rows = self.conn.execute(  # an upper bound, from the primary key's index
            "select count(*) from embeddings where collection_id = ?", (self.collection_id,)
        ).fetchone()[0]
        size = _offsets(rows, row_bytes // 4).size
        directory = os.path.dirname(path)
        try:
            space = os.statvfs(directory)
            free = space.f_bavail * space.f_frsize
        except OSError:
            free = 0
        if free < 2 * size + SPACE_MARGIN:
            logger.debug("vector file %s not written: %d bytes free, %d needed", path, free,
                         2 * size + SPACE_MARGIN)
            return self._give_up(want)
        _remove_stale_temporaries(path)
        try:
            fd, made = _temporary(path)
        except OSError as error:
            if directory not in _unwritable:
                _unwritable.add(directory)
                logger.debug("no vector files in %s: %s", directory, error)
            return self._give_up(want)
        temporary: Optional[str] = made
        try:
            late = [False]
            if deadline is not None:
                def past_deadline() -> int:
                    late[0] = time.monotonic() > deadline
                    return late[0]
                self.conn.set_progress_handler(past_deadline, 10_000)
            try:
                count = self._copy_rows(fd, row_bytes)
            except Exception as error:
                if isinstance(error, OSError):
                    raise
                count = None
            finally:
                if deadline is not None:
                    self.conn.set_progress_handler(None, 0)
            if count is None:
                if late[0]:
                    with _lock:
                        _late.add((path, want))
                    return None
                return self._give_up(want)
            os.ftruncate(fd, _offsets(count, row_bytes // 4).size)
            written = _write_sketch(fd, count, row_bytes // 4, deadline) if count else True
            if written is None:
                with _lock:
                    _late.add((path, want))
                return None
            if not written:
                return self._give_up(want)
            at = _offsets(count, row_bytes // 4)
            first, last = (struct.unpack("=q", os.pread(fd, 8, at.rowids + 8 * i))[0]
                           for i in (0, count - 1)) if count else (0, 0)
            key = (changes.recorded(self.conn, want[0], first, last), *want[1:])
            os.pwrite(fd, _header(key, self.name, row_bytes // 4, count), 0)
            _match_mode(fd, str(self.database))
            if boot_id() == _DURABLE:
                os.fsync(fd)
            os.replace(made, path)
            temporary = None
            self.builds += 1
        except OSError as error:
            logger.debug("vector file %s not written: %s", path, error)
            return self._give_up(want)
        finally:
            os.close(fd)
            if temporary is not None:
                _unlink(temporary)
        return _open(path, self._fits(want))

    def _give_up(self, want: _Key) -> Optional[_Mapped]:
        """Remember (process-wide) that this file cannot be built at `want`; None."""
        assert self.path is not None
        with _lock:
            if len(_failed) > 10_000:
                _failed.clear()
            _failed.add((self.path, want))
        return None

    def _copy_rows(self, fd: int, row_bytes: int) -> Optional[int]:
        """Copy the collection's non-NULL vectors in rowid order into `fd` (from
        HEADER_BYTES, then norms and rowids); how many, or None if a row is not a blob of
        `row_bytes` bytes. One statement reads the table in rowid order: through C on a
        connection of the cffi copy, else through the cursor."""
        from . import _native

        ffi, lib = _native.ffi, _native.lib
        where = f"from embeddings not indexed where {_ROWS_WHERE}"
        sink = lib.embsqlite_sink_file(fd, row_bytes, HEADER_BYTES)
        if sink == 0:
            return None  # out of memory, or rows too long for the sink's buffer
        try:
            self.conn.execute(
                f"select sum(embsqlite_sink_append(?, rowid, embedding) is null) {where}",
                (sink, self.collection_id),
            ).fetchone()
            via_c = True
        except Exception as error:
            if "no such function" not in str(error):
                return None
            via_c = False
        finally:
            copied = lib.embsqlite_sink_close(sink)
        if via_c:
            return None if copied < 0 else int(copied)
        matrix, rowids = bytearray(), []
        for rowid, blob in self.conn.execute(f"select rowid, embedding {where} order by rowid",
                                             (self.collection_id,)):
            if type(blob) is not bytes or len(blob) != row_bytes:
                return None
            matrix += blob
            rowids.append(rowid)
        count = len(rowids)
        norms = ffi.new("double[]", max(count, 1))
        lib.embsqlite_norms(ffi.from_buffer(matrix), count, row_bytes // 4, norms)
        norms_at = _offsets(count, row_bytes // 4).norms
        os.pwrite(fd, bytes(matrix), HEADER_BYTES)
        os.pwrite(fd, bytes(ffi.buffer(norms, 8 * count)), norms_at)
        os.pwrite(fd, struct.pack(f"={count}q", *rowids), norms_at + 8 * count)
        return count


SKETCH_CHUNK_BYTES = 32 * 2**20  # codes computed and written per step of a build


def _write_sketch(fd: int, rows: int, dimensions: int, deadline: Optional[float] = None) -> Optional[bool]:
    """Write the sketch of the file `fd` (sized, its matrix and norms written) with pwrite,
    a chunk of rows at a time (a full disk is an OSError, never a fault in a mapping);
    True when written, False when out of memory, None when `deadline` (time.monotonic())
    passed before a chunk."""
    from . import _native

    ffi, lib = _native.ffi, _native.lib
    at = _offsets(rows, dimensions)
    step = max(1, SKETCH_CHUNK_BYTES // dimensions)
    codes = ffi.new("signed char[]", min(step, rows) * dimensions)
    sketch = ffi.new("SketchRow[]", min(step, rows))
    with mmap.mmap(fd, at.codes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as mapping:
        buffer = ffi.from_buffer(mapping)  # the matrix and norms, read only
        try:
            whole = ffi.cast("unsigned char *", buffer)
            matrix, norms = whole + HEADER_BYTES, ffi.cast("double *", whole + at.norms)
            for low in range(0, rows, step):
                if deadline is not None and time.monotonic() > deadline:
                    return None
                count = min(step, rows - low)
                if lib.embsqlite_sketch_build(matrix + low * dimensions * 4, norms + low, count,
                                              dimensions, codes, sketch, _threads) < 0:
                    return False
                os.pwrite(fd, ffi.buffer(codes, count * dimensions), at.codes + low * dimensions)
                os.pwrite(fd, ffi.buffer(sketch, count * SKETCH_ROW_BYTES),
                          at.sketch + low * SKETCH_ROW_BYTES)
        finally:
            ffi.release(buffer)  # before the mapping closes
    return True


_HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"


def _temporary(path: str) -> tuple[int, str]:
    """A new temporary file beside `path` (a hidden name of this host and process), open
    for writing."""
    name = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{_HOST}-{os.getpid()}-{os.urandom(6).hex()}.tmp"
    return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), name


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files of `path` left by builders of this host that died (killed
    mid-build): only regular files named as `_temporary` names them, of dead processes."""
    directory, base = os.path.split(path)
    pattern = re.compile(r"\." + re.escape(base) + r"\.(?:([0-9a-f]{8})-)?([0-9]+)-[0-9a-f]{12}\.tmp")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match.group(1) not in (None, _HOST) or _alive(int(match.group(2))):
            continue
        stale = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.lstat(stale).st_mode):
                _unlink(stale)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    """Whether a process of this id exists (on this host)."""
    if pid <= 0:
        return True  # not a process id we wrote: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True


def _match_mode(fd: int, database: str) -> None:
    """Give the file the database's read and write permission bits (it holds its vectors)."""
    try:
        os.fchmod(fd, os.stat(database).st_mode & 0o666)
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as error:
        if error.errno != errno.ENOENT:
            logger.debug("could not remove %s: %s", path, error)


def search_collection(
    conn: Any, name: str, query: bytes, number: int, prefix: str, encoding: str,
    deadline: Optional[float] = None,
) -> Optional[list[Row]]:
    """A search of the collection `name` from its vector file, for callers without a
    `Collection` (Datasette's page): rows as `VectorFile.search` gives them, or None
    (search with the SQL statement)."""
    row = conn.execute("select id from collections where name = ?", (name,)).fetchone()
    if row is None or not isinstance(row[0], int):
        return None
    low = high = None
    if prefix:
        low, high = idorder.prefix_range(prefix, encoding)
    token = None if in_transaction(conn) else cache.change_token(conn)
    return VectorFile(conn, row[0], name).search(query, number, low, high, None, token,
                                                 deadline=deadline)


def track(conn: Any) -> None:
    """Keep change tokens in this database (changes.install: a no-op once installed), so
    its collections can be searched from vector files; run after each batch embsqlite
    commits, so a batch that fails leaves nothing of ours either. Anything that stops it
    (a table of the tokens' name that is not ours, a lock held elsewhere) leaves the
    database untracked, searched in SQL: the batch itself was written."""
    try:
        changes.install(conn)
        remove_files(conn, orphans_only=True)
    except Exception as error:
        module = type(error).__module__.split(".")[0]
        if not isinstance(error, changes.ForeignChangesTable) and module not in _DRIVERS:
            raise  # a bug, not the database refusing
        logger.debug("change tokens not installed: %s", error)


def remove_files(conn: Any, orphans_only: bool = False) -> list[str]:
    """Delete the vector files of the connection's database (with `orphans_only`, only
    those of collections that no longer exist, e.g. deleted by llm); their paths. Only
    regular files named as `file_path` names them are touched."""
    database = database_path(conn)
    if database is None:
        return []
    directory, base = os.path.split(os.path.abspath(database))
    keep: set[int] = set()
    if orphans_only:
        keep = {row[0] for row in conn.execute("select id from collections")}
    pattern = re.compile(re.escape(base) + r"-embsqlite-([0-9]+)" + re.escape(SUFFIX))
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is not None and int(match.group(1)) not in keep:
            path = os.path.join(directory, name)
            _drop(path)
            removed.append(path)
    return removed


_DRIVERS = ("sqlite3", "pysqlite3", "apsw")  # modules whose errors are the database's


def mapped_bytes() -> int:
    """Bytes of vector files this process has mapped (they count in RSS as shared page
    cache, not in the cache budget)."""
    with _lock:
        return sum(m.identity[2] for m in _mapped.values() if m.mapping is not None)

