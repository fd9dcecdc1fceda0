"""A per-process cache of a collection's vectors, for fast repeated searches.

The first search of a collection runs in SQLite (ORDER BY the C cosine_similarity). When
a later search finds the database unchanged since the previous one, the collection's
vectors are loaded once into one contiguous float32 matrix, and searches from then on
scan that matrix in C (csrc/native.c) with a top-k heap. Scores are the same bits as the
SQL path's, and the order is the same (score descending, then id).

Exactness: the cache is keyed by a change token, ``total_changes()`` (every write through
this connection) and ``PRAGMA data_version`` (every commit by any other connection or
process). A search whose token differs from the cache's never uses the cache, and nothing
is cached or served while the connection is inside a transaction (a rollback would undo
rows without changing the token). Not seen by the token, so not supported on a cached
connection: incremental blob writes (``blobopen``), and ``backup``/``deserialize`` into it.

Memory: all caches together stay under a budget (EMBSQLITE_CACHE_MB, default 2048;
0 turns caching off), evicting the least recently used; a collection larger than the
budget is simply searched in SQLite. ``configure()`` changes both at run time.
"""
from __future__ import annotations

import bisect
import itertools
import os
import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any, NamedTuple, Optional

from . import idorder, schema

_DEFAULT_MB = 2048
_lock = threading.Lock()
_budget_bytes = int(float(os.environ.get("EMBSQLITE_CACHE_MB", _DEFAULT_MB)) * 2**20)
_loaded: "OrderedDict[int, weakref.ref[VectorCache]]" = OrderedDict()


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
    _evict(0)


def budget_bytes() -> int:
    """The current budget; 0 means caching is off."""
    return _budget_bytes


def loaded_bytes() -> int:
    """Bytes held by all loaded caches now."""
    with _lock:
        return sum(c.nbytes for c in (ref() for ref in _loaded.values()) if c is not None)


def _evict(incoming: int, keep: Optional["VectorCache"] = None) -> None:
    """Drop least recently used caches (and forget dead ones) until `incoming` more bytes
    fit the budget; `keep` is never dropped."""
    with _lock:
        live = [(key, ref()) for key, ref in _loaded.items()]
        total = sum(c.nbytes for _, c in live if c is not None and c is not keep)
        for key, cache in live:
            if cache is keep:
                continue
            if cache is not None and total + incoming <= _budget_bytes:
                break
            _loaded.pop(key, None)
            if cache is not None:
                total -= cache.nbytes
                cache._drop()


def change_token(conn: Any) -> tuple[int, int]:
    """Changes to the database as seen by `conn`: its own writes, and others' commits."""
    row = conn.execute("select total_changes(), data_version from pragma_data_version").fetchone()
    return int(row[0]), int(row[1])


class _Matrix(NamedTuple):
    """A loaded collection: replaced or dropped as a whole, so a search that took it keeps
    a consistent view even if another thread evicts the cache meanwhile."""

    matrix: bytearray  # rows of `dimensions` float32, in id order
    norms: Any  # cffi double[]: each row's squared L2 norm
    ids: list  # the rows' ids, ascending
    keys: list  # the ids under idorder.sort_key, which bisection searches (ids in UTF-8)
    key: Any  # idorder.sort_key of the database's encoding
    dimensions: int
    token: tuple[int, int]
    nbytes: int  # memory held: matrix, norms and the ids list with its strings


class VectorCache:
    """One collection's vectors as a float32 matrix in id order, searched in C."""

    def __init__(self, conn: Any, collection_id: int) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self._state: Optional[_Matrix] = None
        self._last_seen: Optional[tuple[int, int]] = None  # token at the previous search

    @property
    def token(self) -> Optional[tuple[int, int]]:
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

    def search(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str],
    ) -> Optional[list[tuple[str, float]]]:
        """[(id, score)] best first, or None: the caller searches in SQLite instead."""
        if _budget_bytes <= 0 or schema.in_transaction(self.conn):
            self._drop()
            return None
        if not all(_encodable(text) for text in (low, high, skip_id)):
            return None  # SQLite raises the proper error for such text
        token = change_token(self.conn)
        state = self._state
        if state is None or state.token != token:
            self._drop()
            seen_twice, self._last_seen = token == self._last_seen, token
            state = self._load(token) if seen_twice else None
            if state is None:
                return None
        with _lock:
            if id(self) in _loaded:
                _loaded.move_to_end(id(self))
        if len(query) != 4 * state.dimensions:
            return None  # let SQLite report the mismatch
        return _scan(state, query, number, low, high, skip_id)

    def _load(self, token: tuple[int, int]) -> Optional[_Matrix]:
        """Read every vector of the collection in id order; None if it cannot be cached."""
        try:
            state = self._read_state(token)
        except Exception:
            return None  # e.g. an id that is not valid UTF-8: SQLite's path reports it
        if state is None or state.nbytes > _budget_bytes or change_token(self.conn) != token:
            return None
        self._state = state
        with _lock:
            _loaded[id(self)] = weakref.ref(self)
        _evict(state.nbytes, keep=self)
        return state

    def _read_state(self, token: tuple[int, int]) -> Optional[_Matrix]:
        # count(*) reads only the primary-key index; the first row gives the dimension
        (rows,) = self.conn.execute(
            "select count(*) from embeddings where collection_id = ?", (self.collection_id,)
        ).fetchone()
        first = self.conn.execute(
            "select length(embedding) from embeddings where collection_id = ? limit 1",
            (self.collection_id,),
        ).fetchone()
        row_bytes = first[0] if first else None
        if not rows or not row_bytes or row_bytes % 4:
            return None  # empty, or NULL vectors: SQLite handles those
        nbytes = rows * row_bytes
        if nbytes + 8 * rows > _budget_bytes:
            return None
        _evict(nbytes + 8 * rows, keep=self)
        matrix = bytearray(nbytes)
        ids = self._read(matrix, rows, row_bytes)
        if ids is None or not all(type(i) is str for i in ids):
            return None
        # Bisection orders the ids as SQLite does, in the database's text encoding
        encoding = idorder.database_encoding(self.conn)
        key = idorder.sort_key(encoding)
        keys = ids if encoding == "UTF-8" else [key(i) for i in ids]
        if not all(a < b for a, b in zip(keys, itertools.islice(keys, 1, None))):
            return None
        from . import _native

        norms = _native.ffi.new("double[]", rows)
        _native.lib.embsqlite_norms(_native.ffi.from_buffer(matrix), rows, row_bytes // 4, norms)
        held = nbytes + 8 * rows + sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
        if keys is not ids:
            held += sys.getsizeof(keys) + sum(map(sys.getsizeof, keys))
        return _Matrix(matrix, norms, ids, keys, key, row_bytes // 4, token, held)

    def _read(self, matrix: bytearray, rows: int, row_bytes: int) -> Optional[list[str]]:
        """Fill `matrix` with the collection's vectors in id order and return the ids,
        or None if a vector is NULL or of another length, or the rows changed meanwhile.

        On a stdlib connection C reads the vectors straight from SQLite (3x faster than
        through Python objects); elsewhere they come through the cursor in chunks."""
        from . import _native, sql

        select = "from embeddings where collection_id = ? order by id"
        db = sql.native_handle(self.conn)
        if db is not None:
            copied = _native.lib.embsqlite_read_matrix(
                db, self.collection_id, _native.ffi.from_buffer(matrix), rows, row_bytes
            )
            if copied != rows:
                return None
            ids = [row[0] for row in self.conn.execute(f"select id {select}", (self.collection_id,))]
            return ids if len(ids) == rows else None
        ids: list[str] = []
        offset = 0
        cursor = self.conn.execute(f"select id, embedding {select}", (self.collection_id,))
        while True:
            chunk = list(itertools.islice(cursor, 4096))  # apsw cursors lack fetchmany
            if not chunk:
                break
            blobs = [row[1] for row in chunk]
            if offset + len(blobs) * row_bytes > len(matrix) or not all(
                type(blob) is bytes and len(blob) == row_bytes for blob in blobs
            ):
                return None
            block = b"".join(blobs)
            matrix[offset : offset + len(block)] = block
            offset += len(block)
            ids.extend([row[0] for row in chunk])
        return ids if offset == len(matrix) else None


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
    skip_id: Optional[str],
) -> Optional[list[tuple[str, float]]]:
    """The top `number` rows of `state` for `query`, within [low, high), without skip_id."""
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
    found = lib.embsqlite_topk(
        ffi.from_buffer(state.matrix), state.norms, len(ids), state.dimensions, query,
        lo, hi, skip, k, out_rows, out_scores,
    )
    if found < 0:
        return None  # non-finite data: SQLite raises the proper error
    return [(ids[out_rows[i]], out_scores[i]) for i in range(found)]
