"""Collections: named sets of embeddings in llm's SQLite schema, searched inside SQLite.

A search is one SQL statement, ``ORDER BY cosine_similarity(embedding, :query) DESC, id
LIMIT :number``, run by the C function; Python sees only the top rows. Repeated searches
of an unchanged collection are answered by the vector cache (cache.py) with the same
results. Ingestion (ingest.py) hashes content first and sends the model only what the
collection has never stored.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Union

from . import cache, dbfile, ingest, schema, sql, vectors
from .model import EmbeddingModel, UnknownModelError
from .registry import get_embedding_model

Value = Union[str, bytes]
_MAX_CODE_POINT = sys.maxunicode


@dataclass
class Entry:
    """One search result: `score` is the cosine similarity, higher is more similar."""

    id: str
    score: float
    content: Optional[str] = None
    metadata: Optional[dict] = None


def _connection(db: Any) -> tuple[Any, bool]:
    """The DB-API connection behind `db`, and whether we opened it ourselves."""
    if db is None:
        return dbfile.connect(":memory:"), True
    if isinstance(db, (str, os.PathLike)):
        return dbfile.connect(db), True
    conn = getattr(db, "conn", db)  # sqlite_utils.Database wraps its connection
    if not hasattr(conn, "execute"):
        raise TypeError(
            "db must be a sqlite_utils.Database, a sqlite3 connection, a path or None, "
            f"not {type(db).__name__}"
        )
    return conn, False


def prefix_range(prefix: str) -> tuple[str, Optional[str]]:
    """The ids starting with `prefix` are exactly those in [low, high) in code point
    (= SQLite BINARY on UTF-8) order; `high` is None when no upper bound exists."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CODE_POINT:
            successor = last + 1
            if 0xD800 <= successor <= 0xDFFF:  # surrogates cannot occur in stored text
                successor = 0xE000
            return prefix, "".join(chars) + chr(successor)
    return prefix, None


def _one_thread_at_a_time(method):
    """Run `method` holding the collection's lock. A connection opened with
    check_same_thread=False may be shared by threads; they then take turns, so one
    thread's COMMIT can never end another thread's batch half-way."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Collection:
    """A named collection of embeddings made by one model, in llm's database schema.

    A Collection is used by the thread that opened it; from another thread, stdlib
    connections raise sqlite3.ProgrammingError. A connection opened with
    check_same_thread=False can be shared: each batch and each search holds a lock.
    """

    class DoesNotExist(Exception):
        """The collection, or an id asked for, is not in the database."""

    def __init__(
        self,
        name: str,
        db: Any = None,
        *,
        model: Optional[EmbeddingModel] = None,
        model_id: Optional[str] = None,
        create: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a collection name is a non-empty string, not {name!r}")
        self.name = name
        self._lock = threading.RLock()
        self._db = db if hasattr(db, "conn") else None
        self.conn, self._owns_connection = _connection(db)
        sql.register(self.conn)
        schema.prepare_connection(self.conn, owned=self._owns_connection)
        self._model = model
        row = self._row() if schema.has_schema(self.conn) else None
        if row is None and not create:
            raise self.DoesNotExist(f"Collection {name!r} does not exist")
        schema.ensure_schema(self.conn)
        row = row or self._row()
        if row is None:
            if model is None and model_id is None:
                raise ValueError(
                    f"creating collection {name!r} needs model= or model_id="
                )
            chosen = self._resolve(model, model_id, None)
            assert chosen is not None
            with schema.transaction(self.conn):
                self.conn.execute(
                    "insert into collections (name, model) values (?, ?) "
                    "on conflict (name) do nothing",
                    (name, chosen.model_id),
                )
            row = self._row()
            model, model_id = chosen, None
        self.id, self.model_id = row
        self._model = self._resolve(model, model_id, self.model_id)
        self._cache = cache.VectorCache(self.conn, self.id)

    def _row(self) -> Optional[tuple[int, str]]:
        row = self.conn.execute(
            "select id, model from collections where name = ?", (self.name,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _resolve(
        self, model: Optional[EmbeddingModel], model_id: Optional[str], stored: Optional[str]
    ) -> Optional[EmbeddingModel]:
        """The model given, else the one `model_id` names (None: load `stored` lazily),
        refusing a `model_id` that names another model than `model`, or either differing
        from the model the collection was made with (`stored`)."""
        if model is None and model_id is not None and model_id == stored:
            return None
        named = None
        if model_id is not None and (model is None or model_id != model.model_id):
            try:
                named = get_embedding_model(model_id)
            except UnknownModelError:
                if stored is None:
                    raise
                raise ValueError(
                    f"collection {self.name!r} was made with model {stored!r}, "
                    f"not {model_id!r}"
                ) from None
            if model is not None and named.model_id != model.model_id:
                raise ValueError(
                    f"model_id {model_id!r} names {named.model_id!r}, not {model.model_id!r}"
                )
        chosen = model if model is not None else named
        if stored is not None and chosen is not None and chosen.model_id != stored:
            raise ValueError(
                f"collection {self.name!r} was made with model {stored!r}, "
                f"not {chosen.model_id!r}: vectors of different models cannot be compared"
            )
        return chosen

    @property
    def db(self) -> Any:
        """The database as a `sqlite_utils.Database` (the one passed in, if any)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    @classmethod
    def exists(cls, db: Any, name: str) -> bool:
        """Whether the collection `name` is in `db` (False when the tables are absent)."""
        if isinstance(db, (str, os.PathLike)) and not os.path.exists(db):
            return False
        conn, owned = _connection(db)
        try:
            if not schema.has_schema(conn):
                return False
            row = conn.execute("select 1 from collections where name = ?", (name,)).fetchone()
            return row is not None
        finally:
            if owned:
                conn.close()

    def model(self) -> EmbeddingModel:
        """The collection's embedding model, looked up by `model_id` on first use."""
        if self._model is None:
            self._model = get_embedding_model(self.model_id)
        return self._model

    @_one_thread_at_a_time
    def count(self) -> int:
        """Number of items in the collection."""
        return self.conn.execute(
            "select count(*) from embeddings where collection_id = ?", (self.id,)
        ).fetchone()[0]

    @_one_thread_at_a_time
    def delete(self) -> None:
        """Delete the collection and all its embeddings, in one transaction."""
        with schema.transaction(self.conn):
            self.conn.execute("delete from embeddings where collection_id = ?", (self.id,))
            self.conn.execute("delete from collections where id = ?", (self.id,))

    @_one_thread_at_a_time
    def dimensions(self) -> Optional[int]:
        """Dimension of the stored vectors (None while the collection is empty)."""
        row = self.conn.execute(
            "select length(embedding) from embeddings where collection_id = ? "
            "and embedding is not null limit 1",
            (self.id,),
        ).fetchone()
        return None if row is None else row[0] // 4

    content_hash = staticmethod(schema.content_hash)

    # Writing

    def embed(
        self, id: Any, value: Value, metadata: Optional[dict] = None, store: bool = False
    ) -> None:
        """Embed one `str` or `bytes` under `id` (deduplicated like `embed_multi`)."""
        self.embed_multi_with_metadata([(id, value, metadata)], store=store, batch_size=1)

    def embed_multi(
        self, entries: Iterable[Sequence[Any]], store: bool = False, batch_size: int = 100,
        dask: Any = None,
    ) -> None:
        """Embed `(id, value)` pairs from any iterable, one transaction per batch."""
        self._check_source(entries)
        self.embed_multi_with_metadata(
            (ingest.check_pair(entry) + (None,) for entry in entries),
            store=store,
            batch_size=batch_size,
            dask=dask,
        )

    def embed_multi_with_metadata(
        self, entries: Iterable[Sequence[Any]], store: bool = False, batch_size: int = 100,
        dask: Any = None,
    ) -> None:
        """Embed `(id, value, metadata)` triples from any iterable, in constant memory.

        Each batch is one transaction: on an error, earlier batches stay committed and
        nothing of the failing batch is written. Content already stored in this collection
        (same MD5) is never sent to the model again. With `dask` (a distributed.Client, a
        scheduler address, or a number of local worker processes) the model runs on that
        cluster and batches commit as their vectors arrive (see cluster.py).
        """
        ingest.check_count("batch_size", batch_size, minimum=1)
        self._check_source(entries)
        if dask is not None:
            from . import cluster

            cluster.embed(self, entries, store, batch_size, dask)
            return
        for batch in ingest.checked_batches(entries, batch_size):
            with self._lock:  # see _one_thread_at_a_time
                ingest.write_batch(self, batch, store)

    def _check_source(self, entries: Any) -> None:
        """Refuse a cursor on this collection's own connection: it would also see the rows
        each batch writes, and never end when they match its query."""
        if getattr(entries, "connection", None) is self.conn:
            raise ValueError(
                "the entries are a cursor on the collection's own connection, which would "
                "also read the rows being written; pass cursor.fetchall(), or query "
                "through another connection"
            )

    def _check_dimensions(self, dimensions: int, what: str) -> None:
        stored = self.dimensions()
        if stored is not None and stored != dimensions:
            raise ValueError(
                f"{what} have {dimensions} dimensions but collection {self.name!r} "
                f"holds {stored}-dimension vectors"
            )

    # Searching

    def similar(self, value: Value, number: int = 10, prefix: Optional[str] = None) -> list[Entry]:
        """The `number` items most similar to `value` (embedded with the collection's model)."""
        ingest.check_search(number, prefix)
        if isinstance(value, str):
            ingest.check_text("the query", value)
        return self.similar_by_vector(self.model().embed(value), number, prefix=prefix)

    @_one_thread_at_a_time
    def similar_by_id(
        self, id: Any, number: int = 10, prefix: Optional[str] = None
    ) -> list[Entry]:
        """The `number` items most similar to the stored item `id`, excluding it."""
        ingest.check_search(number, prefix)
        ingest.check_text("the id", str(id))
        row = self.conn.execute(
            "select embedding from embeddings where collection_id = ? and id = ?",
            (self.id, str(id)),
        ).fetchone()
        if row is None:
            raise self.DoesNotExist(f"id {str(id)!r} is not in collection {self.name!r}")
        if not isinstance(row[0], bytes) or not row[0] or len(row[0]) % 4:
            raise ValueError(f"id {str(id)!r} has no valid stored embedding")
        return self._rank(row[0], number, str(id), prefix)

    def similar_by_vector(
        self,
        vector: Sequence[float],
        number: int = 10,
        skip_id: Optional[Any] = None,
        prefix: Optional[str] = None,
    ) -> list[Entry]:
        """The `number` items most similar to `vector`, best first, ties broken by id."""
        ingest.check_search(number, prefix)
        blob = vectors.encode(vector)
        if not blob:
            raise ValueError("the query vector is empty")
        self._check_dimensions(len(blob) // 4, "the query vector")
        return self._rank(blob, number, None if skip_id is None else str(skip_id), prefix)

    @_one_thread_at_a_time
    def _rank(
        self, query: bytes, number: int, skip_id: Optional[str], prefix: Optional[str]
    ) -> list[Entry]:
        """The top `number` rows: from the vector cache when the database is unchanged
        since the previous search, else one SQL statement where the C cosine_similarity
        orders the rows and LIMIT keeps the top. Both give the same ids and scores."""
        low = high = None
        if prefix:
            if not isinstance(prefix, str):
                raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
            low, high = prefix_range(prefix)
        if number == 0:
            return []
        cached = self._cache.search(query, number, low, high, skip_id)
        if cached is not None:
            return self._entries(cached)
        where, params = "collection_id = ? and embedding is not null", [self.id]
        if low is not None:
            where += " and id >= ?" + ("" if high is None else " and id < ?")
            params += [low] if high is None else [low, high]
        if skip_id is not None:
            where += " and id != ?"
            params.append(skip_id)
        # The only collection in the file: reading the table in order beats walking the
        # primary-key index and fetching each row (~7% at 100,000 rows).
        table = "embeddings"
        if low is None and self.conn.execute("select count(*) from collections").fetchone()[0] == 1:
            table = "embeddings not indexed"
        rows = self.conn.execute(
            "select e.id, r.score, e.content, e.metadata from ("
            f" select id, cosine_similarity(embedding, ?) as score from {table}"
            f" where {where} order by score desc, id limit ?"
            ") as r join embeddings as e on e.collection_id = ? and e.id = r.id"
            " order by r.score desc, r.id",
            [query, *params, number, self.id],
        ).fetchall()
        return [
            Entry(id_, score, content, None if meta is None else json.loads(meta))
            for id_, score, content, meta in rows
        ]

    def _entries(self, ranked: list[tuple[str, float]]) -> list[Entry]:
        """Entries for (id, score) pairs, with their stored content and metadata."""
        stored = {
            id_: (content, meta)
            for id_, content, meta in ingest.rows_by_id(
                self.conn, self.id, "content, metadata", [id_ for id_, _ in ranked]
            )
        }
        entries = []
        for id_, score in ranked:
            content, meta = stored.get(id_, (None, None))
            entries.append(Entry(id_, score, content, None if meta is None else json.loads(meta)))
        return entries

    def close(self) -> None:
        """Close the connection if this collection opened it (a path or None)."""
        if self._owns_connection:
            self.conn.close()

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} model={self.model_id!r} id={self.id}>"
