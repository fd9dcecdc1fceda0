"""Collections: named sets of embeddings in llm's SQLite schema, searched inside SQLite.

A search is one SQL statement, ``ORDER BY cosine_similarity(embedding, :query) DESC, id
LIMIT :number``, run by the C function; Python sees only the top rows. Repeated searches
of an unchanged collection are answered by the vector cache (cache.py) with the same
results. Ingestion (ingest.py) hashes content first and sends the model only what the
collection has never stored.

Facts a search needs besides the ranking (the stored dimension, whether this is the file's
only collection, the text encoding) are read in one statement and kept with the cache's
change token, so an unchanged database costs a search the token and one statement.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

from . import cache, changes, dbfile, filters, idorder, index, ingest, loading, rows, schema, vectorfile, vectors
from .connection import prepare_connection
from .idorder import prefix_range
from .model import EmbeddingModel, UnknownModelError, Value
from .ranking import filter_sql, ranking_sql
from .registry import get_embedding_model
from .transaction import in_transaction, read_transaction, transaction

# The largest count SQLite can bind (LIMIT takes a signed 64-bit integer): one rule for
# every count, whether a search is answered by SQL or by the vector cache.
MAX_COUNT = 2**63 - 1

# Each collection with its model and number of items, by name; `:cap` (-1: none) bounds
# the count, so a listing costs the same whatever the size of the collections.
SUMMARY_SQL = """select c.name, c.model,
  (select count(*) from (select 1 from embeddings e
     where e.collection_id = c.id and e.id is not null limit :cap))
from collections c{where} order by c.name"""


def summary_sql(text_names_only: bool = False) -> str:
    """The collections summary (bind `cap`); `text_names_only` leaves out collections
    whose name is not text (Datasette builds links from names)."""
    return SUMMARY_SQL.format(where=" where typeof(c.name) = 'text'" if text_names_only else "")


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


def check_count(what: str, value: Any, minimum: int = 0) -> None:
    """`value` must be an int (not a bool) from `minimum` to MAX_COUNT."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, not {value}")
    if value > MAX_COUNT:
        raise ValueError(f"{what} must be at most {MAX_COUNT} (2**63 - 1), not {value}")


def check_search(number: Any, prefix: Any) -> None:
    """The arguments every search takes: a count, and a prefix that SQLite can store."""
    check_count("number", number)
    if isinstance(prefix, str):
        ingest.check_text("the prefix", prefix)


def _is_sql_error(error: Exception) -> bool:
    """An error SQLite raised for a statement (any driver: sqlite3, pysqlite3, apsw)."""
    return type(error).__name__ in ("OperationalError", "ProgrammingError", "SQLError", "BindingsError",
                                     "InterfaceError", "IntegrityError", "DataError")


def _filter_error(search_filter: filters.Filter, error: Exception) -> filters.FilterError:
    """SQLite's error while compiling or evaluating a filter, naming the filter."""
    return filters.FilterError(f"filter {filters.describe(search_filter.expression)}: {error}")


def check_pair(entry: Any) -> tuple[Any, Any]:
    """An (id, value) pair of embed_multi, as a tuple."""
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise ValueError(f"embed_multi takes (id, value) pairs, not {entry!r:.80}")
    return tuple(entry)  # type: ignore[return-value]


class _Facts(NamedTuple):
    """What a search needs to know of the collection, valid while `token` is current."""

    token: Optional[tuple[int, ...]]  # cache.change_token; None inside a transaction
    dimensions: Optional[int]  # of the stored vectors; None while there are none
    only_collection: bool  # the file holds no other collection
    encoding: str  # the database's text encoding (PRAGMA encoding)


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
        ingest.check_text(f"the collection name {name!r}", name)
        self.name = name
        self._lock = threading.RLock()
        self._db = db if hasattr(db, "conn") else None
        new_file = isinstance(db, (str, os.PathLike)) and not os.path.lexists(db)
        if new_file and not create:
            raise self.DoesNotExist(f"Collection {name!r} does not exist (no database at {db})")
        self.conn, self._owns_connection = _connection(db)
        existed: Optional[set[str]] = None
        try:
            existed = schema.llm_tables(self.conn)
            self._open(model, model_id, create)
        except BaseException:
            self._undo_open(db if new_file else None, existed)
            raise

    def _open(self, model: Optional[EmbeddingModel], model_id: Optional[str], create: bool) -> None:
        """Find (or create) the collection on self.conn; the rest of __init__."""
        name = self.name
        loading.register(self.conn)
        prepare_connection(self.conn, owned=self._owns_connection)
        self._model = model
        row = self._row() if schema.has_schema(self.conn) else None
        if row is None and not create:
            raise self.DoesNotExist(f"Collection {name!r} does not exist")
        chosen = None
        if row is None:  # the model is checked before any table is made
            if model is None and model_id is None:
                raise ValueError(
                    f"creating collection {name!r} needs model= or model_id="
                )
            chosen = self._resolve(model, model_id, None)
            assert chosen is not None
        self._upgrade_pending = False
        try:
            schema.ensure_schema(self.conn)
        except Exception as error:
            if row is None or not schema.is_read_only_error(error):
                raise
            # read-only media: an older llm schema is searched as it is; a write upgrades
            # it first, failing there with SQLite's read-only error
            self._upgrade_pending = True
        row = row or self._row()
        if row is None:
            assert chosen is not None
            with transaction(self.conn):
                self.conn.execute(
                    "insert into collections (name, model) values (?, ?) "
                    "on conflict (name) do nothing",
                    (name, chosen.model_id),
                )
            row = self._row()
            model, model_id = chosen, None
        assert row is not None  # found, or just inserted by this transaction
        self.id, self.model_id = row
        self._model = self._resolve(model, model_id, self.model_id)
        self._cache = cache.VectorCache(self.conn, self.id)
        self._vectors = vectorfile.VectorFile(self.conn, self.id, self.name)
        # the rows of the last filters searched through the vector file (_filter_rowids)
        self._filter_rows: OrderedDict[tuple[Any, ...], array] = OrderedDict()
        self._facts: Optional[_Facts] = None
        self._index_file: Optional[str] = None  # found on the first search (index.file_for)

    @classmethod
    def open_or_create(cls, name: str, db: Any, model_id: Optional[str] = None) -> Collection:
        """The collection `name`, created with `model_id` (else the default model) if it
        is missing; an existing one keeps its model, which `model_id` must then name."""
        if cls.exists(db, name):
            return cls(name, db, model_id=model_id)
        from .default_model import get_default_embedding_model

        return cls(name, db, model_id=model_id or get_default_embedding_model())


    def _undo_open(self, new_path: Any, existed: Optional[set[str]]) -> None:
        """After a failed __init__: drop llm tables it added (while no collection is
        stored), close a connection it opened, and delete a database file it created."""
        try:
            if existed is not None:
                schema.drop_created(self.conn, existed)
        except Exception:
            pass  # the original error is the one to report
        finally:
            if self._owns_connection:
                self.conn.close()
                if new_path is not None:
                    dbfile.remove(new_path)

    def _row(self) -> Optional[tuple[int, str]]:
        row = self.conn.execute(
            "select id, model from collections where name = ?", (self.name,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _check_still_named(self) -> None:
        """Raise DoesNotExist when the name no longer maps to this collection's id and
        model: another connection renamed or deleted it (and may have reused the id)."""
        if self._row() != (self.id, self.model_id):
            raise self._renamed()

    def _renamed(self) -> Collection.DoesNotExist:
        return self.DoesNotExist(
            f"collection {self.name!r} (id {self.id}, model {self.model_id!r}) was "
            "renamed or deleted by another connection; open it again"
        )

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
        with transaction(self.conn):
            self._check_still_named()
            self.conn.execute("delete from embeddings where collection_id = ?", (self.id,))
            self.conn.execute("delete from collections where id = ?", (self.id,))
        self._vectors.remove()
        with contextlib.suppress(OSError):  # stale already (the triggers saw the delete)
            index.remove(self.conn, self.id)

    @_one_thread_at_a_time
    def dimensions(self) -> Optional[int]:
        """Dimension of the stored vectors (None while the collection is empty)."""
        row = self.conn.execute(
            "select length(embedding) from embeddings where collection_id = ? "
            "and embedding is not null limit 1",
            (self.id,),
        ).fetchone()
        return None if row is None else row[0] // 4

    content_hash = staticmethod(ingest.content_hash)

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
            (check_pair(entry) + (None,) for entry in entries),
            store=store,
            batch_size=batch_size,
            dask=dask,
        )

    def embed_multi_with_metadata(
        self,
        entries: Iterable[Sequence[Any]],
        store: bool = False,
        batch_size: int = 100,
        progress: Optional[Callable[[int], Any]] = None,
        dask: Any = None,
    ) -> None:
        """Embed `(id, value, metadata)` triples from any iterable, in constant memory.

        Batches are written in time-bounded groups, one transaction each (about a second,
        or one batch per transaction with a slow model; see ingest.GroupWriter):
        on an error, earlier batches stay committed and nothing of the failing batch is
        written; a killed process leaves whole batches. Content already stored in this
        collection (same MD5) is never sent to the model again. `progress(n)` is called
        for each batch once it is committed, with the number of items it held (e.g. a
        progress bar's update).
        With `dask` (a distributed.Client, a scheduler address, or a number of local worker
        processes) the model runs on that cluster and batches commit as their vectors
        arrive (see cluster.py).
        """
        check_count("batch_size", batch_size, minimum=1)
        self._check_source(entries)
        if self._upgrade_pending:
            schema.ensure_schema(self.conn)
            self._upgrade_pending = False
        if dask is not None:
            from . import cluster

            cluster.embed(self, entries, store, batch_size, dask, on_commit=progress)
            return
        with self._lock:  # a connection shared by threads: their transactions never interleave
            with ingest.GroupWriter(
                self.conn, self.id, self.model, store, self._check_stored_dimensions,
                self._check_still_named, on_commit=progress,
            ) as writer:
                writer.write_all(ingest.checked_batches(entries, batch_size))
            vectorfile.track(self.conn)

    def _write_batch(
        self, batch: list[ingest.CheckedItem], store: bool,
        embedded: Optional[dict[bytes, bytes]] = None,
    ) -> None:
        """Write one checked batch (`embedded`: vectors made elsewhere, by content hash)."""
        with self._lock:  # see _one_thread_at_a_time
            ingest.write_batch(
                self.conn, self.id, self.model, batch, store,
                self._check_stored_dimensions, self._check_still_named, embedded,
            )
            vectorfile.track(self.conn)

    def _check_source(self, entries: Any) -> None:
        """Refuse a cursor on this collection's own connection: it would also see the rows
        each batch writes, and never end when they match its query."""
        if getattr(entries, "connection", None) is self.conn:
            raise ValueError(
                "the entries are a cursor on the collection's own connection, which would "
                "also read the rows being written; pass cursor.fetchall(), or query "
                "through another connection"
            )

    def _check_dimensions(self, dimensions: int, stored: Optional[int], what: str) -> None:
        """The one dimension check: vectors of `dimensions` must match the `stored` ones."""
        if stored is not None and stored != dimensions:
            raise ValueError(
                f"{what} have {dimensions} dimensions but collection {self.name!r} "
                f"holds {stored}-dimension vectors"
            )

    def _check_stored_dimensions(self, dimensions: int) -> None:
        """A batch's check, run inside its transaction against the vectors stored now."""
        self._check_dimensions(dimensions, self.dimensions(), "the model's vectors")

    def _read_facts(self) -> _Facts:
        """The search facts, re-read only when the change token moved (always inside a
        transaction, where the token cannot be trusted)."""
        token = None if in_transaction(self.conn) else cache.change_token(self.conn)
        facts = self._facts
        if facts is not None and token is not None and facts.token == token:
            return facts
        dimensions, others, encoding, named_id, named_model = self.conn.execute(
            "select (select length(embedding) from embeddings where collection_id = ?"
            " and embedding is not null limit 1),"
            " (select count(*) from (select 1 from collections where id != ? limit 1)),"
            " (select encoding from pragma_encoding),"
            " (select id from collections where name = ?),"
            " (select model from collections where name = ?)",
            (self.id, self.id, self.name, self.name),
        ).fetchone()
        if (named_id, named_model) != (self.id, self.model_id):
            raise self._renamed()
        facts = _Facts(token, None if dimensions is None else dimensions // 4, not others, encoding)
        self._facts = facts if token is not None else None
        return facts

    # Searching

    def similar(
        self, value: Value, number: int = 10, prefix: Optional[str] = None, *,
        where: Optional[str] = None, where_args: Any = None,
        metadata: Optional[Mapping[str, Any]] = None, exact: bool = False,
    ) -> list[Entry]:
        """The `number` items most similar to `value` (embedded with the collection's model);
        `where`/`where_args`/`metadata` filter the rows ranked and `exact=True` never uses
        an index (see `similar_by_vector`)."""
        check_search(number, prefix)
        search_filter = filters.build(where, where_args, metadata)
        if isinstance(value, str):
            ingest.check_text("the query", value)
        if search_filter is not None:
            self._check_filter(search_filter)  # before the model runs
        return self._similar_to(self.model().embed(value), number, None, prefix, search_filter, exact)

    @_one_thread_at_a_time
    def similar_by_id(
        self, id: Any, number: int = 10, prefix: Optional[str] = None, *,
        where: Optional[str] = None, where_args: Any = None,
        metadata: Optional[Mapping[str, Any]] = None, exact: bool = False,
    ) -> list[Entry]:
        """The `number` items most similar to the stored item `id`, excluding it; filters
        and `exact` as in `similar_by_vector`."""
        check_search(number, prefix)
        search_filter = filters.build(where, where_args, metadata)
        ingest.check_text("the id", str(id))
        row = self.conn.execute(
            "select embedding from embeddings where collection_id = ? and id = ?",
            (self.id, str(id)),
        ).fetchone()
        if row is None:
            raise self.DoesNotExist(f"id {str(id)!r} is not in collection {self.name!r}")
        if not isinstance(row[0], bytes) or not row[0] or len(row[0]) % 4:
            raise ValueError(f"id {str(id)!r} has no valid stored embedding")
        return self._rank(row[0], number, str(id), prefix, None, search_filter, exact)

    def similar_by_vector(
        self,
        vector: Sequence[float],
        number: int = 10,
        skip_id: Optional[Any] = None,
        prefix: Optional[str] = None,
        *,
        where: Optional[str] = None,
        where_args: Any = None,
        metadata: Optional[Mapping[str, Any]] = None,
        exact: bool = False,
    ) -> list[Entry]:
        """The `number` items most similar to `vector`, best first, ties broken by id.

        Only rows for which the SQL expression `where` is true are ranked (over the row's
        columns: id, content, content_blob, metadata, updated; `where_args` a sequence for
        `?`, a dict for `:name`, as sqlite-utils' rows_where), and whose metadata has each
        key of `metadata` equal to its value (filters.metadata_rule); both AND `prefix`.
        A collection with a current index answers from it unless `exact=True` or a prefix
        or filter is given (index.py)."""
        check_search(number, prefix)
        search_filter = filters.build(where, where_args, metadata)
        return self._similar_to(vector, number, skip_id, prefix, search_filter, exact)

    def _similar_to(
        self, vector: Sequence[float], number: int, skip_id: Optional[Any], prefix: Optional[str],
        search_filter: Optional[filters.Filter], exact: bool = False,
    ) -> list[Entry]:
        blob = vectors.encode(vector)
        if not blob:
            raise ValueError("the query vector is empty")
        skip = None if skip_id is None else str(skip_id)
        return self._rank(blob, number, skip, prefix, "the query vector", search_filter, exact)

    @_one_thread_at_a_time
    def _rank(
        self, query: bytes, number: int, skip_id: Optional[str], prefix: Optional[str],
        what: Optional[str], search_filter: Optional[filters.Filter] = None, exact: bool = False,
    ) -> list[Entry]:
        """The top `number` rows: from the vector cache when the database is unchanged
        since the previous search, else one SQL statement where the C cosine_similarity
        orders the rows and LIMIT keeps the top. Both give the same ids and scores.
        A query of another dimension than the stored vectors is refused, naming `what`;
        with `what` None (a stored item's own vector) SQLite names the mismatch."""
        facts = self._read_facts()
        if what is not None:
            self._check_dimensions(len(query) // 4, facts.dimensions, what)
        low = high = None
        if prefix:
            if not isinstance(prefix, str):
                raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
            if not idorder.searchable(prefix, facts.encoding):
                return []
            low, high = prefix_range(prefix, facts.encoding)
        if search_filter is not None:
            self._check_filter(search_filter)
        if number == 0:
            return []
        if not exact and low is None and search_filter is None:  # an index: candidates re-ranked by SQL
            indexed = self._indexed(query, number, skip_id)
            if indexed is not None:
                return indexed
        if facts.dimensions is not None and len(query) == 4 * facts.dimensions:
            mapped = self._search_file(query, number, low, high, skip_id, facts, search_filter)
            if mapped is not None:
                return [Entry(row.id, row.score, row.content,
                              None if row.metadata is None else json.loads(row.metadata))
                        for row in mapped]
            subset = None if search_filter is None else self._subset(search_filter, facts)
            cached = self._cache.search(query, number, low, high, skip_id, facts.token, subset)
            if cached is not None:
                return self._entries(cached)
        params: list[Any] = [query, self.id, number]
        bounds: list[Optional[str]] = []
        for value in (low, high, skip_id):
            if value is None:
                bounds.append(None)
            else:
                params.append(value)
                bounds.append(f"?{len(params)}")
        where = None
        if search_filter is not None:
            first = len(params) + 1
            where = search_filter.render(lambda i: f"?{first + i}")
            params += search_filter.values
        statement = ranking_sql(
            "?1", "?2", "?3", low=bounds[0], high=bounds[1], skip_id=bounds[2],
            not_indexed=low is None and facts.only_collection, where=where,
        )
        try:
            found = self.conn.execute(statement, params).fetchall()
        except Exception as error:
            if search_filter is not None and _is_sql_error(error):
                self._check_filter(search_filter, evaluate=True)  # the filter's fault: say so
            raise
        return [
            Entry(id_, score, content, None if meta is None else json.loads(meta))
            for id_, score, content, meta in found
        ]

    def _search_file(
        self, query: bytes, number: int, low: Optional[str], high: Optional[str], skip_id: Optional[str],
        facts: _Facts, search_filter: Optional[filters.Filter],
    ) -> Optional[list[vectorfile.Row]]:
        """The vector file's answer, or None. A filter's rows are chosen by SQL only once
        the file is known to answer, inside the read transaction it is checked in, and
        handed to its scan as rowids."""
        if search_filter is None:
            return self._vectors.search(query, number, low, high, skip_id, facts.token)
        return self._vectors.search(query, number, low, high, skip_id, facts.token,
                                    rowids=lambda: self._filter_rowids(search_filter, facts, low, high, skip_id))

    def _filter_rowids(
        self, search_filter: filters.Filter, facts: _Facts,
        low: Optional[str] = None, high: Optional[str] = None, skip_id: Optional[str] = None,
    ) -> array:
        """The ascending rowids of the rows in the prefix range, but `skip_id`, that the
        filter keeps (as the SQL path, the filter meets no other row), reused for the same
        filter and bounds while the change token (read before the search's read
        transaction began: a commit after that read moves every later token) is the same."""
        key = search_filter.reuse_key()
        if key is not None:
            key = (key, low, high, skip_id, facts.token)
            if key in self._filter_rows:
                self._filter_rows.move_to_end(key)
                return self._filter_rows[key]
        params: list[Any] = [self.id]
        bounds: list[Optional[str]] = []
        for value in (low, high, skip_id):
            if value is not None:
                params.append(value)
            bounds.append(None if value is None else f"?{len(params)}")
        first = len(params) + 1
        where = search_filter.render(lambda i: f"?{first + i}")
        statement = filter_sql("?1", where, "rowid", not_indexed=low is None and facts.only_collection,
                               low=bounds[0], high=bounds[1], skip_id=bounds[2]) + " order by rowid"
        try:
            rowids = array("q", (row[0] for row in self.conn.execute(statement, (*params, *search_filter.values))))
        except Exception as error:
            if not _is_sql_error(error):
                raise
            raise _filter_error(search_filter, error) from None
        if key is not None:
            self._filter_rows[key] = rowids
            while len(self._filter_rows) > cache.SUBSETS_KEPT:
                self._filter_rows.popitem(last=False)
        return rowids

    def _subset(self, search_filter: filters.Filter, facts: _Facts) -> cache.Subset:
        """The filter as the vector cache runs it: one statement that marks, by rowid,
        the rows the ranking statement would rank (the same conditions, `filter_sql`)."""
        where = search_filter.render(lambda i: f"?{i + 3}")
        statement = filter_sql("?2", where, "max(embsqlite_mark(?1, rowid))", not_indexed=facts.only_collection)
        return cache.Subset(statement, (self.id, *search_filter.values), search_filter.reuse_key())

    @_one_thread_at_a_time
    def _check_filter(self, search_filter: filters.Filter, evaluate: bool = False) -> None:
        """Compile the filter alone over this collection's rows (and with `evaluate`, run
        it over all of them): a ValueError naming the expression if SQLite refuses it."""
        statement = filter_sql("?1", search_filter.render(lambda i: f"?{i + 2}"), "count(*)")
        try:
            self.conn.execute(statement + ("" if evaluate else " limit 0"),
                              (self.id, *search_filter.values)).fetchall()
        except Exception as error:
            if not _is_sql_error(error):
                raise
            raise _filter_error(search_filter, error) from None
    def _indexed(self, query: bytes, number: int, skip_id: Optional[str]) -> Optional[list[Entry]]:
        """The top rows among the collection index's candidates, ranked by the ranking
        statement (exact scores), or None when no current index answers (index.py)."""
        if self._index_file is None:  # the main database's file cannot change: asked once
            self._index_file = index.file_for(self.conn, self.id) or ""
        if not self._index_file or not os.path.exists(self._index_file):
            return None  # no statement at all for a collection without an index
        pool = max(index.POOL, index.POOL_PER_RESULT * number) + (skip_id is not None)
        with read_transaction(self.conn):
            found = index.candidates(self.conn, self.id, query, pool)
            if found is None or len(found) < min(pool, number + (skip_id is not None)):
                return None
            params: list[Any] = [query, self.id, number, json.dumps(found)]
            if skip_id is not None:
                params.append(skip_id)
            statement = ranking_sql(
                "?1", "?2", "?3", rowids="?4", skip_id=None if skip_id is None else "?5"
            )
            ranked = self.conn.execute(statement, params).fetchall()
        if len(ranked) < number:  # candidates that are not rows of the collection (damage)
            return None
        return [Entry(id_, score, content, None if meta is None else json.loads(meta))
                for id_, score, content, meta in ranked]

    def build_index(
        self, *, probes: int = index.PROBES, progress: Optional[Callable[[int], None]] = None
    ) -> str:
        """Build (or rebuild) the approximate-search index of this collection beside its
        database file and return its path; searches use it until the collection changes
        (index.py). `probes`: IVF lists scanned per search; `progress` gets row counts."""
        with self._lock:
            path, _trailer = index.build(self.conn, self.id, probes=probes, progress=progress)
        return path

    def index_status(self) -> str:
        """`none`, `current`, `stale` or `invalid: <why>`: the state of this collection's index."""
        return index.status(self.conn, self.id)

    def _entries(self, ranked: list[tuple[str, float]]) -> list[Entry]:
        """Entries for (id, score) pairs, with their stored content and metadata."""
        stored = {
            id_: (content, meta)
            for id_, content, meta in rows.by_id(
                self.conn, self.id, "content, metadata", [id_ for id_, _ in ranked]
            )
        }
        entries = []
        for id_, score in ranked:
            content, meta = stored.get(id_, (None, None))
            entries.append(Entry(id_, score, content, None if meta is None else json.loads(meta)))
        return entries

    @_one_thread_at_a_time
    def build_vector_file(self) -> Optional[str]:
        """Keep change tokens in the database (a write, the first time: the table and
        triggers of changes.py) and write the collection's vector file beside it now, so
        searches in every process read it (vectorfile.py). Its path; None when there is
        nothing to write or no file can be kept (an in-memory database, a directory that
        cannot be written). Searches build the file themselves once the database keeps
        tokens, which every batch embsqlite writes installs."""
        changes.install(self.conn)
        return self._vectors.build()

    def close(self) -> None:
        """Close the connection if this collection opened it (a path or None)."""
        if self._owns_connection:
            self.conn.close()

    def __repr__(self) -> str:
        return f"<Collection {self.name!r} model={self.model_id!r} id={self.id}>"
