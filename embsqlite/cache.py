"""A per-process cache of a collection's vectors, for fast repeated searches.

The first search of a collection runs in SQLite (ORDER BY the C cosine_similarity). When
a later search finds the database unchanged since the previous one, the collection's
vectors are loaded once into one contiguous float32 matrix, and searches from then on
scan that matrix in C (csrc/native.c) with a top-k heap. Scores are the same bits as the
SQL path's, and the order is the same (score descending, then id).

Exactness: the cache is keyed by a change token, ``total_changes()`` (every write through
this connection) and ``PRAGMA data_version`` (every commit by any other connection or
process). A search whose token differs from the cache's never uses the cache.

Memory: all caches together stay under a budget (EMBSQLITE_CACHE_MB, default 2048;
0 turns caching off), evicting the least recently used; a collection larger than the
budget is simply searched in SQLite. ``configure()`` changes both at run time.
"""
from __future__ import annotations

import bisect
import itertools
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Optional

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


def _evict(incoming: int) -> None:
    """Drop least recently used caches until `incoming` more bytes fit the budget."""
    with _lock:
        live = [(key, ref()) for key, ref in _loaded.items()]
        total = sum(c.nbytes for _, c in live if c is not None)
        for key, cache in live:
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


class VectorCache:
    """One collection's vectors as a float32 matrix in id order, searched in C."""

    def __init__(self, conn: Any, collection_id: int) -> None:
        self.conn = conn
        self.collection_id = collection_id
        self.ids: list[str] = []
        self.matrix: Optional[bytearray] = None
        self.norms: Any = None  # cffi double[]: each row's squared L2 norm
        self.dimensions = 0
        self.token: Optional[tuple[int, int]] = None  # of the loaded matrix
        self._last_seen: Optional[tuple[int, int]] = None  # token at the previous search

    @property
    def nbytes(self) -> int:
        """Memory held: the matrix and one double per row for its norm."""
        return 0 if self.matrix is None else len(self.matrix) + 8 * len(self.ids)

    def _drop(self) -> None:
        self.matrix, self.norms, self.ids, self.token = None, None, [], None

    def search(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str],
    ) -> Optional[list[tuple[str, float]]]:
        """[(id, score)] best first, or None: the caller searches in SQLite instead."""
        if _budget_bytes <= 0:
            self._drop()
            return None
        token = change_token(self.conn)
        if token != self.token:
            self._drop()
            seen_twice, self._last_seen = token == self._last_seen, token
            if not seen_twice or not self._load(token):
                return None
        with _lock:
            key = id(self)
            if key in _loaded:
                _loaded.move_to_end(key)
        if len(query) != 4 * self.dimensions:
            return None  # let SQLite report the mismatch
        return self._scan(query, number, low, high, skip_id)

    def _load(self, token: tuple[int, int]) -> bool:
        """Read every vector of the collection in id order; False if it cannot be cached."""
        # count(*) reads only the primary-key index; the first row gives the dimension
        (rows,) = self.conn.execute(
            "select count(*) from embeddings where collection_id = ?", (self.collection_id,)
        ).fetchone()
        first = self.conn.execute(
            "select length(embedding) from embeddings where collection_id = ? limit 1",
            (self.collection_id,),
        ).fetchone()
        shortest = first[0] if first else None
        if not rows or not shortest or shortest % 4:
            return False  # empty, or NULL vectors: SQLite handles those
        nbytes = rows * shortest
        if nbytes + 8 * rows > _budget_bytes:
            return False
        _evict(nbytes + 8 * rows)
        matrix = bytearray(nbytes)
        ids = self._read(matrix, rows, shortest)
        if ids is None or change_token(self.conn) != token:
            return False
        if not all(type(id_) is str for id_ in ids):
            return False  # ids must compare in Python as in SQLite
        from . import _native

        norms = _native.ffi.new("double[]", rows)
        _native.lib.embsqlite_norms(_native.ffi.from_buffer(matrix), rows, shortest // 4, norms)
        self.matrix, self.norms, self.ids = matrix, norms, ids
        self.dimensions, self.token = shortest // 4, token
        with _lock:
            _loaded[id(self)] = weakref.ref(self)
        return True

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

    def _scan(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str],
        skip_id: Optional[str],
    ) -> Optional[list[tuple[str, float]]]:
        from . import _native

        ffi, lib = _native.ffi, _native.lib
        lo = 0 if low is None else bisect.bisect_left(self.ids, low)
        hi = len(self.ids) if high is None else bisect.bisect_left(self.ids, high)
        skip = -1
        if skip_id is not None:
            at = bisect.bisect_left(self.ids, skip_id)
            if at < len(self.ids) and self.ids[at] == skip_id:
                skip = at
        k = min(number, max(hi - lo, 0))
        out_rows = ffi.new("long long[]", max(k, 1))
        out_scores = ffi.new("double[]", max(k, 1))
        found = lib.embsqlite_topk(
            ffi.from_buffer(self.matrix), self.norms, len(self.ids), self.dimensions, query,
            lo, hi, skip, k, out_rows, out_scores,
        )
        if found < 0:
            return None  # non-finite data: SQLite raises the proper error
        return [(self.ids[out_rows[i]], out_scores[i]) for i in range(found)]

    def __del__(self) -> None:
        with _lock:
            _loaded.pop(id(self), None)
