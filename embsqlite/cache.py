"""A per-process cache of a collection's vectors, for fast repeated searches.

The first search of a collection runs in SQLite (ORDER BY the C cosine_similarity). When
a later search finds the database unchanged since the previous one, the collection's
vectors are loaded once into one contiguous float32 matrix, and searches from then on
scan that matrix in C (csrc/native.c) with a top-k heap. Scores are the same bits as the
SQL path's, and the order is the same (score descending, then id).

Exactness: the cache is keyed by a change token (`change_token`): ``total_changes()``
(this connection's row writes), ``PRAGMA data_version`` (commits by other connections
and processes), the schema cookies of ``main`` and ``temp`` (any DDL: a table dropped and
re-created, renamed into place, created by CREATE TABLE AS, VACUUM) and, where the
connection exposes it, SQLite's file data version (every commit, this connection's own
incremental blob writes and backups into it included). A search whose token differs from
the cache's never uses the cache, and nothing is cached or served while the connection is
inside a transaction (a rollback would undo rows without changing the token).

Memory: all caches together stay under a budget (EMBSQLITE_CACHE_MB, default 2048; 0
turns caching off). The size of a load is computed before anything is allocated (rows x
dimensions, each row's norm, the ids' string objects), and what cannot be kept is
remembered for that token, so such a collection is searched in SQLite at SQL speed, never
loaded and thrown away. To make room, a cache is evicted only for a collection searched at
least twice as often among the process's last searches, so collections that do not fit
together and are searched in turn never evict each other on every search.

Filtered searches (`Subset`): SQL picks the rows a filter keeps and C marks them in a
byte per row, found by rowid; the scan ranks only the marked rows. Outside the budget:
16 bytes per row for the (rowid, row) pairs, read on the first filtered search of a
loaded matrix, and a byte per row for each of the last SUBSETS_KEPT filters' marks.
"""
from __future__ import annotations

import bisect
import ctypes
import itertools
import sys
import threading
import weakref
from array import array
from collections import OrderedDict, deque
from typing import Any, NamedTuple, Optional

from . import idorder, schema, settings
from .transaction import read_transaction

_DEFAULT_MB = 2048
_lock = threading.Lock()
_budget_bytes = int(settings.env_number("EMBSQLITE_CACHE_MB", _DEFAULT_MB) * 2**20)
_loaded: OrderedDict[int, weakref.ref[VectorCache]] = OrderedDict()  # by serial, LRU first
_reserved = 0  # bytes promised to loads in progress
_serials = itertools.count()
_unique = itertools.count(-1, -1)  # tokens of connections that are never cached
# Which caches the process's last searches went to (serials): the evict-or-not decision.
_RECENT = 16
_recent: deque[int] = deque(maxlen=_RECENT)
_MIN_SEARCHES = 3  # a collection evicts others only after this many recent searches
_FCNTL_DATA_VERSION = 35  # SQLITE_FCNTL_DATA_VERSION
# A str object's size without its characters, by their width: ASCII, 1, 2 and 4 bytes.
_STR_BASE = {
    0: sys.getsizeof(""),
    1: sys.getsizeof("\xe9") - 1,
    2: sys.getsizeof("\u0100") - 2,
    4: sys.getsizeof("\U00010000") - 4,
}


def configure(*, max_mb: Optional[float] = None, enabled: Optional[bool] = None) -> None:
    """Set the memory budget of all caches (MiB) or turn caching off and on."""
    global _budget_bytes
    with _lock:
        if max_mb is not None:
            _budget_bytes = int(max_mb * 2**20)
        elif enabled:
            _budget_bytes = _budget_bytes or _DEFAULT_MB * 2**20
        if enabled is False:
            _budget_bytes = 0
    _evict_to_budget()


def budget_bytes() -> int:
    """The current budget; 0 means caching is off."""
    return _budget_bytes


def loaded_bytes() -> int:
    """Bytes held by all loaded caches now."""
    with _lock:
        return sum(c.nbytes for c in (ref() for ref in _loaded.values()) if c is not None)


def _evict_to_budget() -> None:
    """Drop least recently used caches (and forget dead ones) until all fit the budget."""
    with _lock:
        live = [(key, ref()) for key, ref in _loaded.items()]
        total = sum(c.nbytes for _, c in live if c is not None)
        for key, cache in live:
            if cache is not None and total <= _budget_bytes:
                break
            _loaded.pop(key, None)
            if cache is not None:
                total -= cache.nbytes
                cache._drop()


def _reserve(cache: VectorCache, needed: int) -> bool:
    """Promise `needed` bytes to a load by `cache`, evicting caches that were searched at
    most half as often as it among the recent searches; False (nothing evicted) if even
    that would not make room."""
    global _reserved
    with _lock:
        live = []
        for key, ref in list(_loaded.items()):
            other = ref()
            if other is None or other._state is None:
                _loaded.pop(key, None)
            elif other is not cache:
                live.append((key, other))
        used = _reserved + sum(other.nbytes for _, other in live)
        if used + needed > _budget_bytes:
            mine = _recent.count(cache.serial)
            victims = [
                (key, other) for key, other in live
                if mine >= _MIN_SEARCHES and 2 * _recent.count(other.serial) <= mine
            ]
            if used - sum(other.nbytes for _, other in victims) + needed > _budget_bytes:
                return False
            for key, other in victims:  # least recently used first
                if used + needed <= _budget_bytes:
                    break
                _loaded.pop(key, None)
                used -= other.nbytes
                other._drop()
        _reserved += needed
        return True


def _release(nbytes: int) -> None:
    """Return bytes promised by `_reserve` once the load has ended (kept or not)."""
    global _reserved
    with _lock:
        _reserved -= nbytes


def change_token(conn: Any) -> tuple[Any, ...]:
    """Everything that moves when the database changes, as seen by `conn`: for every
    database of the connection (main, temp and attached ones, which may hold the table a
    name resolves to), its schema cookie, PRAGMA data_version and file data version. A
    connection with a deserialized (memdb) database, or reading uncommitted rows of a
    shared cache (PRAGMA read_uncommitted), gets a token never seen before, so it is
    never cached: no counter tells the states it may see apart."""
    changes, dirty_reads = conn.execute(
        "select total_changes(), (select * from pragma_read_uncommitted)"
    ).fetchone()
    if dirty_reads:  # sees other connections' uncommitted rows, which move no counter
        return (next(_unique),)
    token: list[Any] = [int(changes)]
    names = [str(row[1]) for row in conn.execute("pragma database_list").fetchall()]
    for name in names:
        quoted = schema.quote(name)
        (cookie,) = conn.execute(f"pragma {quoted}.schema_version").fetchone()
        (data,) = conn.execute(f"pragma {quoted}.data_version").fetchone()
        token += [name, int(cookie), int(data)]
    versions = _file_versions(conn, names)
    if versions is None:
        return (next(_unique),)
    return (*token, *versions)


def _file_versions(conn: Any, names: list[str]) -> Optional[tuple[Any, ...]]:
    """SQLITE_FCNTL_DATA_VERSION of each database: unlike the pragma, it moves with this
    connection's own commits of any kind (incremental blob writes, backups into it). Read
    by the cffi copy's embsqlite_data_version() (stdlib connections), or by apsw. None
    when a database is a deserialized image (the memdb VFS), whose counters restart."""
    if hasattr(conn, "file_control"):  # apsw
        versions = []
        for name in names:
            if "memdb" in str(conn.vfsname(name) or ""):
                return None
            value = ctypes.c_uint32(0)
            found = conn.file_control(name, _FCNTL_DATA_VERSION, ctypes.addressof(value))
            versions.append(value.value if found else -1)
        return tuple(versions)
    try:
        row = conn.execute(
            "select " + ", ".join("embsqlite_data_version(?)" for _ in names), names
        ).fetchone()
    except Exception:  # not a connection of the cffi copy: no such function
        return ()
    if -1 in row:  # a deserialized image
        return None
    return tuple(row)


class Subset(NamedTuple):
    """The rows a search filter keeps, chosen by SQL: `statement` calls
    embsqlite_mark(?1, rowid) for each of them (its other parameters `params`); `key`
    names the result for reuse while the matrix is current (None: evaluated every time)."""

    statement: str
    params: tuple[Any, ...]
    key: Optional[tuple[Any, ...]]


SUBSETS_KEPT = 4  # the last filters' rows kept per loaded matrix (a byte per row each)


class _Matrix(NamedTuple):
    """A loaded collection: replaced or dropped as a whole, so a search that took it keeps
    a consistent view even if another thread evicts the cache meanwhile."""

    matrix: bytearray  # rows of `dimensions` float32, in id order
    norms: Any  # cffi double[]: each row's squared L2 norm
    ids: list  # the rows' ids, ascending
    keys: list  # the ids under idorder.sort_key, which bisection searches (ids in UTF-8)
    key: Any  # idorder.sort_key of the database's encoding
    dimensions: int
    token: tuple[int, ...]
    nbytes: int  # memory held: matrix, norms and the ids list with its strings


class VectorCache:
    """One collection's vectors as a float32 matrix in id order, searched in C."""

    def __init__(self, conn: Any, collection_id: int) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self.serial = next(_serials)
        self.loads = 0  # times the vectors were read from the database
        self._state: Optional[_Matrix] = None
        self._last_seen: Optional[tuple[int, ...]] = None  # token at the previous search
        # (token, bytes a load needs) or (token, None): cannot be cached at that token
        self._plan: Optional[tuple[tuple[int, ...], Optional[int]]] = None
        self._shape: tuple[int, int] = (0, 0)  # rows, bytes per row
        # for the loaded matrix only: its (rowid, row) pairs by rowid, and recent subsets
        self._subsets: Optional[tuple[_Matrix, Any, OrderedDict[tuple[Any, ...], bytearray]]] = None

    @property
    def token(self) -> Optional[tuple[int, ...]]:
        """The change token of the loaded matrix; None when nothing is loaded."""
        state = self._state
        return None if state is None else state.token

    @property
    def nbytes(self) -> int:
        """Memory held by the loaded matrix, its norms and its ids (0 if none)."""
        state = self._state
        return 0 if state is None else state.nbytes

    def _drop(self) -> None:
        self._state = None
        self._subsets = None

    def search(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str], token: Optional[tuple[int, ...]], subset: Optional[Subset] = None,
    ) -> Optional[list[tuple[str, float]]]:
        """[(id, score)] best first, or None: the caller searches in SQLite instead.
        `token` is the database's `change_token` now, None inside a transaction (a
        rollback would undo rows without moving it); `query` has the collection's
        dimensions (the caller checked). With `subset`, only the rows it marks are ranked."""
        if _budget_bytes <= 0 or token is None:
            self._drop()
            return None
        if not all(_encodable(text) for text in (low, high, skip_id)):
            return None  # SQLite raises the proper error for such text
        with _lock:
            _recent.append(self.serial)
        state = self._state
        if state is None or state.token != token:
            self._drop()
            seen_twice, self._last_seen = token == self._last_seen, token
            state = self._load(token) if seen_twice else None
            if state is None:
                return None
        with _lock:
            if self.serial in _loaded:
                _loaded.move_to_end(self.serial)
        marks = None
        if subset is not None:
            marks = self._marks(state, subset)
            if marks is None:
                return None
        return _scan(state, query, number, low, high, skip_id, marks)

    def _marks(self, state: _Matrix, subset: Subset) -> Optional[bytearray]:
        """A byte per row of `state`, 1 for the rows `subset` keeps: SQL picks them, in
        one statement at the matrix's token, and C marks them by rowid (no Python per
        row). Reused for the same `subset.key` while `state` is current. None when it
        cannot be done here (another kind of connection, a write meanwhile, an error
        that the SQL path then reports)."""
        from . import _native

        ffi, lib = _native.ffi, _native.lib
        kept = self._subsets
        if kept is None or kept[0] is not state:
            kept = self._subsets = (state, None, OrderedDict())
        recent = kept[2]
        if subset.key is not None and subset.key in recent:
            recent.move_to_end(subset.key)
            return recent[subset.key]
        rows = len(state.ids)
        marks = bytearray(rows)
        try:
            with read_transaction(self.conn):
                if change_token(self.conn) != state.token:
                    return None  # written since: the SQL path sees what the matrix does not
                pairs = kept[1]
                if pairs is None:
                    pairs = self._rowid_pairs(rows)
                    if pairs is None:
                        return None
                    kept = self._subsets = (state, pairs, recent)
                handle = lib.embsqlite_subset_open(
                    ffi.cast("RowidPos *", ffi.from_buffer(pairs)), rows, ffi.from_buffer(marks))
                if handle == 0:
                    raise MemoryError("embsqlite_subset_open")
                try:
                    self.conn.execute(subset.statement, (handle, *subset.params)).fetchall()
                finally:
                    marked = lib.embsqlite_subset_close(handle)
        except Exception:  # e.g. no embsqlite_mark on this connection, or the filter fails
            return None
        if marked < 0:
            return None
        if subset.key is not None:
            recent[subset.key] = marks
            while len(recent) > SUBSETS_KEPT:
                recent.popitem(last=False)
        return marks

    def _rowid_pairs(self, rows: int) -> Optional[array]:
        """(rowid, row) pairs of the loaded matrix's rows, sorted by rowid (C), read by a
        statement of the same order as the load's, inside the caller's read transaction."""
        from . import _native

        cursor = self.conn.execute(
            "select rowid from embeddings where collection_id = ? and embedding is not null order by id",
            (self.collection_id,),
        )
        rowids = array("q", (row[0] for row in cursor))
        if len(rowids) != rows:
            return None
        pairs = array("q", bytes(16 * rows))
        pairs[0::2] = rowids
        pairs[1::2] = array("q", range(rows))
        if _native.lib.embsqlite_rowid_index(_native.ffi.cast("RowidPos *", _native.ffi.from_buffer(pairs)), rows):
            return None
        return pairs

    def _load(self, token: tuple[int, ...]) -> Optional[_Matrix]:
        """Read every vector of the collection in id order, if the budget has room;
        None if it cannot be cached now (remembered for this token when it never can)."""
        needed = self._needed(token)
        if needed is None:
            return None
        loading = needed
        if loading > _budget_bytes or not _reserve(self, loading):
            return None
        try:
            self.loads += 1
            with read_transaction(self.conn):
                if change_token(self.conn) != token:
                    return None  # written since the search began: not this snapshot
                try:
                    state = self._read_state(token)
                except Exception:
                    state = None  # e.g. an id that is not valid UTF-8: SQLite's path reports it
            if state is None or state.nbytes > needed:
                self._plan = (token, None)
                return None
            self._state = state
            with _lock:
                _loaded[self.serial] = weakref.ref(self)
            return state
        finally:
            _release(loading)

    def _needed(self, token: tuple[int, ...]) -> Optional[int]:
        """Bytes a load at `token` would hold at most, from the primary-key index and one
        row, before anything is allocated; None if the collection cannot be cached."""
        if self._plan is not None and self._plan[0] == token:
            return self._plan[1]
        needed = None
        # each id's str object, sized by its widest character as CPython stores it
        # (length() stops at a NUL: such an id is bounded by its bytes)
        rows, ids_bytes, blob_bytes = self.conn.execute(
            "select count(*), total(case when nul then ? + 4 * b when b = c then ? + c"
            " when id not glob ? then ? + c when id not glob ? then ? + 2 * c"
            " else ? + 4 * c end), total(b) from (select id, length(cast(id as blob)) as b,"
            " length(id) as c, instr(cast(id as blob), x'00') > 0 as nul"
            " from embeddings where collection_id = ?)",
            (_STR_BASE[4], _STR_BASE[0], "*[^\x01-\xff]*", _STR_BASE[1],
             "*[^\x01-\uffff]*", _STR_BASE[2], _STR_BASE[4], self.collection_id),
        ).fetchone()
        first = self.conn.execute(
            "select length(embedding) from embeddings"
            " where collection_id = ? and embedding is not null limit 1",
            (self.collection_id,),
        ).fetchone()
        row_bytes = first[0] if first else None
        if rows and row_bytes and row_bytes % 4 == 0:
            list_bytes = sys.getsizeof([]) + 9 * rows + 64  # its slots, growth included
            needed = rows * (row_bytes + 8) + list_bytes + int(ids_bytes)
            if idorder.database_encoding(self.conn) != "UTF-8":
                # bisection keys: each id's bytes in the database's encoding, and their list
                needed += list_bytes + rows * sys.getsizeof(b"") + int(blob_bytes)
            self._shape = (int(rows), int(row_bytes))
        self._plan = (token, needed)
        return needed

    def _read_state(self, token: tuple[int, ...]) -> Optional[_Matrix]:
        """The matrix at `token`, sized by `_needed` at that token, inside the read
        transaction the token was checked in."""
        rows, row_bytes = self._shape
        if not rows or not row_bytes or row_bytes % 4:
            return None
        matrix = bytearray(rows * row_bytes)
        ids = self._read(matrix, rows, row_bytes)
        if not ids or not all(type(i) is str for i in ids):
            return None
        # Bisection orders the ids as SQLite does, in the database's text encoding
        encoding = idorder.database_encoding(self.conn)
        key = idorder.sort_key(encoding)
        keys = ids if encoding == "UTF-8" else [key(i) for i in ids]
        if not all(a < b for a, b in zip(keys, itertools.islice(keys, 1, None))):
            return None
        from . import _native

        rows = len(ids)
        norms = _native.ffi.new("double[]", rows)
        _native.lib.embsqlite_norms(_native.ffi.from_buffer(matrix), rows, row_bytes // 4, norms)
        held = len(matrix) + 8 * rows + sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
        if keys is not ids:
            held += sys.getsizeof(keys) + sum(map(sys.getsizeof, keys))
        return _Matrix(matrix, norms, ids, keys, key, row_bytes // 4, token, held)

    def _read(self, matrix: bytearray, rows: int, row_bytes: int) -> Optional[list[str]]:
        """Fill `matrix` with the collection's vectors in id order, leaving out rows whose
        embedding is NULL (the matrix is cut to the rows read), and return their ids, read
        in the same one statement; None if a vector is of another length or type, or an
        id is not text.

        Ids and vectors come from one statement. On a connection of the cffi copy the
        SQL function embsqlite_sink() copies each vector into `matrix` in C (no Python
        object per vector); elsewhere they come through the cursor."""
        from . import _native

        select = "from embeddings where collection_id = ? and embedding is not null order by id"
        sink = _native.lib.embsqlite_sink_open(_native.ffi.from_buffer(matrix), rows, row_bytes)
        if sink == 0:
            raise MemoryError("embsqlite_sink_open")
        try:
            # the row number, not the call order, places each vector: SQLite may compute
            # result columns in table order, before it sorts
            cursor = self.conn.execute(
                "select id, embsqlite_sink(?, row_number() over (order by id) - 1, embedding)"
                f" {select}", (sink, self.collection_id),
            )
            ids = [row[0] for row in cursor]
        except Exception as error:
            if "no such function" not in str(error):
                return None  # e.g. a vector of another length or type: SQLite's path reports it
            ids = None  # not a connection of the cffi copy
        finally:
            copied = _native.lib.embsqlite_sink_close(sink)
        if ids is not None:
            if copied < 0 or copied != len(ids):
                return None
            del matrix[copied * row_bytes :]
            return ids
        ids = []
        offset = 0
        for id_, blob in self.conn.execute(f"select id, embedding {select}", (self.collection_id,)):
            if type(blob) is not bytes or len(blob) != row_bytes or offset == len(matrix):
                return None
            matrix[offset : offset + row_bytes] = blob
            offset += row_bytes
            ids.append(id_)
        del matrix[offset:]
        return ids


def _encodable(text: Optional[str]) -> bool:
    """Whether `text` can be bound as SQLite text (no lone surrogates)."""
    if text is None:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scan(
    state: _Matrix, query: bytes, number: int, low: Optional[str], high: Optional[str],
    skip_id: Optional[str], marks: Optional[bytearray] = None,
) -> Optional[list[tuple[str, float]]]:
    """The top `number` rows of `state` for `query`, within [low, high), without skip_id,
    and with `marks` only the rows marked."""
    from . import _native

    ffi, lib = _native.ffi, _native.lib
    ids, keys, key = state.ids, state.keys, state.key
    lo = 0 if low is None else bisect.bisect_left(keys, key(low))
    hi = len(ids) if high is None else bisect.bisect_left(keys, key(high))
    skip = -1
    if skip_id is not None:
        at = bisect.bisect_left(keys, key(skip_id))
        if at < len(ids) and ids[at] == skip_id:
            skip = at
    k = min(number, max(hi - lo, 0))
    out_rows = ffi.new("long long[]", max(k, 1))
    out_scores = ffi.new("double[]", max(k, 1))
    if marks is None:
        found = lib.embsqlite_topk(
            ffi.from_buffer(state.matrix), state.norms, len(ids), state.dimensions, query,
            lo, hi, skip, k, out_rows, out_scores,
        )
    else:  # the marked rows of the range, as the scan's list of rows
        rows = ffi.new("long long[]", max(hi - lo, 1))
        count = lib.embsqlite_marked(ffi.from_buffer(marks), lo, max(hi, lo), rows)
        k = min(k, count)
        found = lib.embsqlite_scan(
            ffi.from_buffer(state.matrix), state.norms, len(ids), state.dimensions, query,
            rows, 0, count, skip, k, 1, out_rows, out_scores, ffi.NULL,
        ) if k else 0
    if found < 0:
        return None  # non-finite data: SQLite raises the proper error
    return [(ids[out_rows[i]], out_scores[i]) for i in range(found)]
