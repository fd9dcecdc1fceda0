"""Writing items into a collection: input checks, the content hash, deduplication, and
one transaction per batch.

A batch is written in two steps, so that the embedding in between can run anywhere:
`plan_batch` hashes the batch and asks which hashes the collection already holds (one
query through idx_embeddings_content_hash) and which ids keep their content; the model
embeds only `Plan.to_embed`, content never stored (`embed_values`); `write_plan` then
writes the whole batch with `executemany` in one transaction, so a failing batch leaves
nothing behind. `write_batch` does the three in order.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from . import rows, schema, settings, vectors
from .model import EmbeddingModel, Value
from .transaction import in_transaction, savepoint, transaction

# One checked item: (id, value, metadata as JSON text).
CheckedItem = tuple[str, Value, Optional[str]]


def content_hash(value: Value) -> bytes:
    """The 16-byte MD5 digest llm stores: of the UTF-8 text, or of the bytes."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return hashlib.md5(value).digest()


@dataclass
class Plan:
    """What writing one batch needs, read from the collection before any model runs."""

    items: dict[str, tuple[Value, Optional[str], bytes]]  # id: (value, metadata, hash)
    known: dict[bytes, bytes]  # content hash: a vector the collection already stores
    unchanged: set[str]  # ids stored with this very content: their vector stays
    to_embed: dict[bytes, Value]  # content hash: content never stored, to embed once


# Times a batch is planned again when other connections changed its rows during the model
# call, before it gives up with StaleBatchError.
PLAN_ATTEMPTS = 3


class StaleBatchError(RuntimeError):
    """Other connections kept changing a batch's rows while it was being embedded."""


class PlanChanged(Exception):
    """Inside the write transaction, the plan no longer matches the database: another
    connection changed the batch's rows during the model call. Nothing was written."""


def plan_batch(conn: Any, collection_id: int, batch: list[CheckedItem]) -> Plan:
    """Plan one checked batch (the last occurrence of an id wins): per id, whether its
    vector is kept, copied from stored content with the same hash, or to be embedded."""
    md5 = hashlib.md5
    items = {
        id_: (value, meta, md5(value.encode("utf-8") if isinstance(value, str) else value).digest())
        for id_, value, meta in batch
    }
    known, unchanged = _stored_state(conn, collection_id, items)
    to_embed: dict[bytes, Value] = {}
    for value, _, digest in items.values():
        if digest not in known:
            to_embed.setdefault(digest, value)
    return Plan(items, known, unchanged, to_embed)


def _stored_state(
    conn: Any, collection_id: int, items: dict[str, tuple[Value, Optional[str], bytes]]
) -> tuple[dict[bytes, bytes], set[str]]:
    """(stored vectors of the items' content hashes, ids stored with the same content)."""
    known = _stored_vectors(conn, collection_id, {h for _, _, h in items.values()})
    known_ids = [id_ for id_, (_, _, digest) in items.items() if digest in known]
    unchanged = {
        id_
        for id_, digest in rows.by_id(conn, collection_id, "content_hash", known_ids)
        if digest is not None and bytes(digest) == items[id_][2]
    }
    return known, unchanged


def write_plan(
    conn: Any,
    collection_id: int,
    plan: Plan,
    fresh: list[bytes],
    store: bool,
    check_dimensions: Callable[[int], None],
    check_collection: Optional[Callable[[], None]] = None,
) -> None:
    """Write a planned batch in one transaction: `fresh` holds the encoded vectors of
    `plan.to_embed`, in its order. New content is inserted (or replaces the id's row); an
    unchanged id gets only its metadata (when given) and stored content (when `store`)
    updated. Inside the transaction (BEGIN IMMEDIATE: no other writer until COMMIT)
    `check_collection()` checks the collection is still the one planned for, the plan is
    read again (PlanChanged if another connection changed it during the model call) and
    `check_dimensions(n)` raises if n-dimension vectors do not fit the collection."""
    _check_fresh(plan, fresh)
    with transaction(conn):
        _check_plan(conn, collection_id, plan, check_collection)
        write_rows(conn, collection_id, plan, fresh, store, check_dimensions)


def _check_fresh(plan: Plan, fresh: list[bytes]) -> None:
    if len(fresh) != len(plan.to_embed):
        raise ValueError(f"write_plan: {len(fresh)} vectors for {len(plan.to_embed)} items to embed")


def _check_plan(
    conn: Any, collection_id: int, plan: Plan, check_collection: Optional[Callable[[], None]]
) -> None:
    """Inside the write transaction: the collection is still the one planned for, and the
    plan still matches the database (else PlanChanged)."""
    if check_collection is not None:
        check_collection()
    if _stored_state(conn, collection_id, plan.items) != (plan.known, plan.unchanged):
        raise PlanChanged


def write_rows(
    conn: Any,
    collection_id: int,
    plan: Plan,
    fresh: list[bytes],
    store: bool,
    check_dimensions: Callable[[int], None],
    bulk: Optional[bool] = None,
    pending: Optional[PendingInserts] = None,
) -> None:
    """The writes of a planned batch, inside the caller's transaction (which must hold
    the write lock since the plan was made or checked); `bulk`: whether the connection
    runs BULK_INSERT_SQL (None: ask it). With `pending`, a batch that only inserts hands
    its rows to it, to be written later with those of other batches (the caller makes sure
    the batch shares nothing with them: `PendingInserts.overlaps`, `dimensions`)."""
    _check_fresh(plan, fresh)
    lengths = {len(blob) // 4 for blob in fresh}
    if len(lengths) > 1:  # vectors made in several places (a cluster) must agree
        raise ValueError(f"the model's vectors have differing dimensions {sorted(lengths)}")
    if fresh:
        check_dimensions(len(fresh[0]) // 4)
    blobs = {**plan.known, **dict(zip(plan.to_embed, fresh))}
    now = int(time.time())
    inserts, updates = [], []
    for id_, (value, meta, digest) in plan.items.items():
        if id_ not in plan.unchanged:
            inserts.append((id_, value if store else None, meta, digest, blobs[digest]))
        elif meta is not None or store:
            text = value if store and isinstance(value, str) else None
            blob = value if store and isinstance(value, bytes) else None
            updates.append((meta is not None, meta, store, text, blob, now, collection_id, id_))
    if pending is not None and not updates:
        pending.add(inserts)
        return
    if pending is not None:  # (overlaps: a batch that updates rows finds none pending)
        if pending.rows:
            raise RuntimeError("write_rows: a batch that updates rows would pass pending inserts")
        pending.clear()
    if inserts:
        if bulk is None:
            bulk = bulk_insert_supported(conn)
        _insert(conn, collection_id, inserts, store, now, bulk)
    if updates:
        conn.executemany(
            "update embeddings set metadata = case when ?1 then ?2 else metadata end, "
            "content = case when ?3 then ?4 else content end, "
            "content_blob = case when ?3 then ?5 else content_blob end, updated = ?6 "
            "where collection_id = ?7 and id = ?8",
            updates,
        )


# One row to insert: (id, value if stored else None, metadata JSON, content hash, embedding).
InsertRow = tuple[str, Optional[Value], Optional[str], bytes, bytes]

# Inside a group, the inserts of consecutive batches are written by one statement once
# they hold this many rows or bytes (vectors, stored content, metadata), or before the group
# commits. A statement copies into its journal (in memory: temp_store) each page of the
# file it changes, once: the random content_hash index gives about one leaf per row until
# the statement has touched them all, so longer statements copy fewer pages per row (at
# 1,000,000 rows, 16 KiB pages: 5,000 rows per statement ~20% more rows per CPU second
# than 2,000, 10,000 ~8% more again). The journal, at most WRITE_ROWS pages, is the
# memory this costs. The bytes bound keeps memory flat with large content or metadata
# (content that is not stored is not kept).
# The default, 1, writes each batch as it comes (one statement per batch). Larger values
# are opt-in (EMBSQLITE_WRITE_ROWS) because a batch's rows are then unwritten while later
# batches are embedded: an insert SQLite refuses (another application's trigger) is seen
# only when they are written, after the model embedded the batches between; reads on the
# run's own connection do not see them; and a write made on that connection between
# batches (by the caller's input) can be overwritten by an older item of the run.
WRITE_ROWS = int(settings.env_number("EMBSQLITE_WRITE_ROWS", 1, minimum=1, integer=True))
WRITE_BYTES = 16 * 2**20


def _footprint(value: Union[str, bytes]) -> int:
    """An upper bound on the bytes a pending text or blob takes (a str of n characters
    takes up to 4n, in memory as in UTF-8), for the bound on pending rows."""
    return len(value) if isinstance(value, bytes) else 4 * len(value)


class PendingInserts:
    """The planned inserts of the last batches of an open group, not yet written, kept
    per batch (in order) so that a failing write leaves the batches before the failing
    one written, as one statement per batch would. A batch is planned against the
    database only while it shares no id and no content hash with them (`overlaps`)."""

    def __init__(self, collection_id: int, store: bool, bulk: bool) -> None:
        self.collection_id, self.store, self.bulk = collection_id, store, bulk
        self.batches: list[list[InsertRow]] = []
        self.ids: set[str] = set()
        self.hashes: set[bytes] = set()
        self.rows = self.bytes = 0
        self.dimensions: Optional[int] = None  # of the pending vectors
        self.unwritten = 0  # after a failed flush: how many of its batches were not written

    def add(self, rows: list[InsertRow]) -> None:
        """Keep one batch's inserts (possibly none: the batch still counts as one)."""
        self.batches.append(rows)
        if not rows:
            return
        ids, values, metas, digests, embeddings = zip(*rows)
        self.ids.update(ids)
        self.hashes.update(digests)
        self.bytes += (sum(map(len, embeddings)) + sum(map(_footprint, ids))
                       + sum(_footprint(v) for v in values if v is not None))
        if any(meta is not None for meta in metas):
            self.bytes += sum(_footprint(meta) for meta in metas if meta is not None)
        self.dimensions = len(embeddings[0]) // 4
        self.rows += len(rows)

    def full(self) -> bool:
        return self.rows >= WRITE_ROWS or self.bytes >= WRITE_BYTES

    def overlaps(self, plan: Plan) -> bool:
        """Whether `plan`, made against the database while rows are pending, may differ
        from one made after they are written: it shares an id or a content hash with them,
        or found stored content (a row that a pending insert may replace)."""
        if not self.rows:
            return False
        return bool(plan.known) or any(
            id_ in self.ids or digest in self.hashes
            for id_, (_, _, digest) in plan.items.items()
        )

    def flush(self, conn: Any) -> None:
        """Write the pending rows in one statement, in a savepoint. If it fails, the
        batches are written one statement each until the failing one, whose error is
        raised with `unwritten` set (an interrupt writes none of them)."""
        batches = self.batches
        self.clear()
        rows = [row for part in batches for row in part]
        if not rows:
            return
        now = int(time.time())
        try:
            self._write(conn, rows, now)
            return
        except Exception:
            if len(batches) == 1 or not in_transaction(conn):
                self.unwritten = len(batches)
                raise
        except BaseException:
            self.unwritten = len(batches)
            raise
        for done, part in enumerate(batches):  # one statement was refused: find the batch
            try:
                self._write(conn, part, now)
            except BaseException:
                self.unwritten = len(batches) - done
                raise

    def drop_after(self, count: int) -> None:
        """Forget the batches handed over after the first `count` (those of a batch
        rolled back after it handed its rows over)."""
        if len(self.batches) > count:
            kept = self.batches[:count]
            self.clear()
            for rows in kept:
                self.add(rows)

    def clear(self) -> None:
        """Forget the pending rows."""
        self.batches, self.ids, self.hashes = [], set(), set()
        self.rows = self.bytes = 0
        self.dimensions = None

    def _write(self, conn: Any, rows: list[InsertRow], now: int) -> None:
        """Insert `rows` in a savepoint, rolled back on any error."""
        if not rows:
            return
        with savepoint(conn, "embsqlite_rows"):
            _insert(conn, self.collection_id, rows, self.store, now, self.bulk)


INSERT_SQL = (
    "insert or replace into embeddings (collection_id, id, embedding, content, "
    "content_blob, content_hash, metadata, updated) values (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same rows from one statement: ?6 is a JSON array of [id, content, metadata,
# embedding start, length, content_blob start, length] per row, ?2 the embeddings and ?3
# the stored blobs concatenated (substr gives NULL for an empty one, stored as x''), ?4
# the 16-byte content hashes in row order. SQLite reads
# them in C, where executemany would bind eight values per row from Python.
BULK_INSERT_SQL = (
    "insert or replace into embeddings (collection_id, id, embedding, content, "
    "content_blob, content_hash, metadata, updated) "
    "select ?1, r.value ->> 0, substr(?2, r.value ->> 3, r.value ->> 4), r.value ->> 1, "
    "iif(r.value ->> 6 = 0, x'', substr(?3, r.value ->> 5, r.value ->> 6)), "
    "substr(?4, 16 * r.key + 1, 16), "
    "r.value ->> 2, ?5 from json_each(?6) r"
)
# The common case, rows without metadata or stored content whose vectors have one
# length ?3: ?6 is a JSON array of the ids alone (no JSON built per row in Python, none
# read back per row by SQLite), the other parameters as in BULK_INSERT_SQL.
BULK_IDS_SQL = (
    "insert or replace into embeddings (collection_id, id, embedding, content, "
    "content_blob, content_hash, metadata, updated) "
    "select ?1, r.value, substr(?2, ?3 * r.key + 1, ?3), NULL, NULL, "
    "substr(?4, 16 * r.key + 1, 16), NULL, ?5 from json_each(?6) r"
)
BULK_SQLITE = (3, 38, 0)  # the ->> operator


def bulk_insert_supported(conn: Any) -> bool:
    """Whether `conn`'s SQLite runs BULK_INSERT_SQL (3.38 or later, JSON built in)."""
    try:
        version = conn.execute("select sqlite_version()").fetchone()[0]
        return tuple(int(part) for part in version.split(".")[:3]) >= BULK_SQLITE
    except Exception:  # a connection type we do not know: the per-row statement
        return False


def _insert(
    conn: Any, collection_id: int, rows: list[InsertRow],
    store: bool, now: int, bulk: bool,
) -> None:
    """Insert (id, value, metadata, hash, embedding) rows: one BULK_IDS_SQL or
    BULK_INSERT_SQL statement, or executemany where SQLite is older, a text holds NUL
    (SQLite's JSON ends a string there) or a stored vector copied is empty."""
    if bulk and not store and all(row[2] is None for row in rows):
        ids, _, _, digests, vectors_ = zip(*rows)
        size = len(vectors_[0])
        if size and all(len(vector) == size for vector in vectors_):
            ids_json = json.dumps(ids, ensure_ascii=False)
            if "\\u0000" not in ids_json:
                conn.execute(BULK_IDS_SQL, (
                    collection_id, b"".join(vectors_), size, b"".join(digests), now, ids_json,
                ))
                return
    if bulk:
        spec: list[list[Any]] = []
        embeddings: list[bytes] = []
        stored: list[bytes] = []
        at = stored_at = 1
        for id_, value, meta, _digest, embedding in rows:
            text = value if store and isinstance(value, str) else None
            if store and isinstance(value, bytes):
                spec.append([id_, text, meta, at, len(embedding), stored_at, len(value)])
                stored.append(value)
                stored_at += len(value)
            else:
                spec.append([id_, text, meta, at, len(embedding), None, None])
            embeddings.append(embedding)
            at += len(embedding)
        document = json.dumps(spec, ensure_ascii=False)
        if "\\u0000" not in document and all(embeddings):  # substr gives NULL for x''
            conn.execute(BULK_INSERT_SQL, (
                collection_id, b"".join(embeddings), b"".join(stored),
                b"".join(row[3] for row in rows), now, document,
            ))
            return
    conn.executemany(INSERT_SQL, [
        (collection_id, id_, embedding, value if store and isinstance(value, str) else None,
         value if store and isinstance(value, bytes) else None, digest, meta, now)
        for id_, value, meta, digest, embedding in rows
    ])


def write_batch(
    conn: Any,
    collection_id: int,
    model: Callable[[], EmbeddingModel],
    batch: list[CheckedItem],
    store: bool,
    check_dimensions: Callable[[int], None],
    check_collection: Optional[Callable[[], None]] = None,
    embedded: Optional[dict[bytes, bytes]] = None,
) -> None:
    """Plan, embed (with `model()`, asked for only when something needs embedding) and
    write one checked batch of the collection `collection_id` on `conn`. Vectors in
    `embedded` ({content hash: blob}, made elsewhere: on a cluster) are used before the
    model is asked. If another connection changed the batch's rows during the model call,
    the batch is planned again (vectors already made are reused), PLAN_ATTEMPTS times at
    most; no model call ever runs inside the write transaction."""
    embedded = dict(embedded or {})  # the batch's vectors by content hash, made so far
    for _attempt in range(PLAN_ATTEMPTS):
        plan = plan_batch(conn, collection_id, batch)
        missing = {d: v for d, v in plan.to_embed.items() if d not in embedded}
        if missing:
            embedded.update(zip(missing, embed_values(model(), list(missing.values()))))
        fresh = [embedded[digest] for digest in plan.to_embed]
        try:
            write_plan(conn, collection_id, plan, fresh, store, check_dimensions, check_collection)
            return
        except PlanChanged:
            continue
    raise StaleBatchError(
        f"collection id {collection_id}: other connections kept changing the rows of a "
        f"batch while it was embedded ({PLAN_ATTEMPTS} attempts); nothing of it was written"
    )


# Batches written one after another share a transaction (a group) until it has been open
# this long or holds this many rows: COMMIT, with the pages the random content_hash index
# dirties, is paid once per group instead of once per batch (at 300,000 rows, groups of
# 40,000 rows instead of 10,000 write 12% fewer pages). A kill leaves whole groups.
GROUP_SECONDS = settings.env_number("EMBSQLITE_GROUP_SECONDS", 1.0)
GROUP_ROWS = int(settings.env_number("EMBSQLITE_GROUP_ROWS", 50_000, minimum=1, integer=True))
# The writing connection's page cache while a run writes (KiB), restored afterwards: the
# content_hash index's leaves stay in memory instead of being read back for each group.
WRITE_CACHE_KIB = int(settings.env_number("EMBSQLITE_WRITE_CACHE_MB", 64, integer=True) * 1024)


# Every page a batch changes is first copied to the savepoint journal, which SQLite keeps
# in a temporary file past 64 KiB unless temp_store is MEMORY: as many writes again as
# the WAL gets (measured: 305,000 pwrite calls for 100,000 rows instead of 108,000).
TEMP_STORE_MEMORY = 2


def _tune(conn: Any, pragma: str) -> bool:
    """Run a tuning pragma; False when SQLite refuses it (another thread sharing the
    connection opened a transaction since we looked): tuning is only ever a speed-up."""
    try:
        conn.execute(pragma)
    except Exception as error:
        if "temporary storage" not in str(error):
            raise
        return False
    return True


def _main_is_file(conn: Any) -> bool:
    """Whether the main database is a file (an in-memory one journals in memory already)."""
    for row in conn.execute("pragma database_list").fetchall():
        if row[1] == "main":
            return bool(row[2])
    return False


def _temp_objects(conn: Any) -> bool:
    """Whether the connection holds temporary tables, indexes, views or triggers."""
    return bool(conn.execute("select count(*) from temp.sqlite_master").fetchone()[0])


class GroupWriter:
    """Writes the checked batches of one run into a collection, several batches per
    transaction (a group), committed when GROUP_SECONDS have passed since its BEGIN or
    GROUP_ROWS rows are pending, when the run ends and before a model call that would
    keep the write lock past the time bound (the last call's duration is the estimate),
    so a slow model runs outside any transaction as with one batch per transaction.

    The first batch of a group is planned and embedded outside the transaction and its
    plan checked again inside BEGIN IMMEDIATE (`write_plan`'s rules, PlanChanged,
    StaleBatchError); later batches are planned inside the open transaction, where no
    other connection can write, each in a savepoint: a failing batch is rolled back alone
    and the batches before it are committed. `on_commit(n)` is called for each batch of a
    group, in order, once the group has committed. Inside a transaction of the caller's,
    each batch is a savepoint of it (`write_batch`) and the caller commits.
    Use as a context manager: leaving it commits what was written, also on an error."""

    def __init__(
        self,
        conn: Any,
        collection_id: int,
        model: Callable[[], EmbeddingModel],
        store: bool,
        check_dimensions: Callable[[int], None],
        check_collection: Optional[Callable[[], None]] = None,
        on_commit: Optional[Callable[[int], Any]] = None,
        seconds: Optional[float] = None,
        max_rows: Optional[int] = None,
    ) -> None:
        self.conn, self.collection_id, self.model, self.store = conn, collection_id, model, store
        self.check_dimensions, self.check_collection = check_dimensions, check_collection
        self.on_commit = on_commit
        self.seconds = GROUP_SECONDS if seconds is None else seconds
        self.max_rows = GROUP_ROWS if max_rows is None else max_rows
        self._open = False  # a group transaction of ours is open
        self._began = 0.0  # monotonic time of its BEGIN
        self._pending: list[int] = []  # sizes of the batches written in it
        self._model_seconds = 0.0  # the last model call's duration
        self._read_seconds = 0.0  # the last read of a batch from the input
        self._bulk = bulk_insert_supported(conn)
        self._inserts = PendingInserts(collection_id, store, self._bulk)  # batches' rows not yet written
        self._cache_size: Optional[int] = None  # the connection's own, to restore
        self._temp_store: Optional[int] = None

    def __enter__(self) -> GroupWriter:
        """Tune the connection for the run: a bigger page cache, and the savepoints'
        journal in memory (`temp_store`, for a file database while no temporary table
        exists: changing it drops them); both are restored on exit."""
        conn = self.conn
        size = conn.execute("pragma cache_size").fetchone()[0]
        current_kib = -size if size < 0 else size * conn.execute("pragma page_size").fetchone()[0] // 1024
        if current_kib < WRITE_CACHE_KIB:
            self._cache_size = size
            conn.execute(f"pragma cache_size = {-WRITE_CACHE_KIB}")
        store = conn.execute("pragma temp_store").fetchone()[0]
        if (store != TEMP_STORE_MEMORY and not in_transaction(conn) and _main_is_file(conn)
                and not _temp_objects(conn)):
            if _tune(conn, f"pragma temp_store = {TEMP_STORE_MEMORY}"):
                self._temp_store = store
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            if self._open:
                self.commit()
        finally:
            if self._cache_size is not None:
                self.conn.execute(f"pragma cache_size = {self._cache_size}")
            if (self._temp_store is not None and not in_transaction(self.conn)
                    and not _temp_objects(self.conn)):
                _tune(self.conn, f"pragma temp_store = {self._temp_store}")

    def write_all(self, batches: Iterator[list[CheckedItem]]) -> None:
        """Write every batch of `batches`. The next batch is read with the group open only
        while reading is quick: once a read took a tenth of the group's time or more (an
        input that waits: a pipe, a network source), or would take the group past its time,
        the group commits first, so other writers do not wait on our input. (The first wait
        of an input that was quick until then is not foreseen: the group stays open.)"""
        while True:
            age = time.monotonic() - self._began
            if self._open and (self._read_seconds >= self.seconds / 10
                               or age + self._read_seconds >= self.seconds):
                self.commit()
            start = time.monotonic()
            batch = next(batches, None)
            self._read_seconds = time.monotonic() - start
            if batch is None:
                return
            self.write(batch)

    def write(self, batch: list[CheckedItem]) -> None:
        """Write one checked batch; commit the group if it is due."""
        if not self._open and in_transaction(self.conn):  # the caller's transaction
            write_batch(self.conn, self.collection_id, self.model, batch, self.store,
                        self.check_dimensions, self.check_collection)
            if self.on_commit is not None:
                self.on_commit(len(batch))
            return
        if self._open:
            self._write_in_group(batch)
        else:
            self._begin_group(batch, None)
        self._pending.append(len(batch))
        if sum(self._pending) >= self.max_rows or time.monotonic() - self._began >= self.seconds:
            self.commit()
        elif self._inserts.full():
            self._flush()

    def _flush(self) -> None:
        """Write the pending inserts; on an error, the batches not written are not
        reported as committed."""
        try:
            self._inserts.flush(self.conn)
        except BaseException:
            if self._inserts.unwritten:
                del self._pending[-self._inserts.unwritten:]
            raise

    def commit(self) -> None:
        """Commit the open group and report its batches (the group stays marked open
        until COMMIT returns, so a SIGTERM turned exception in between still commits it
        on exit)."""
        if not in_transaction(self.conn):  # SQLite rolled it back itself (an I/O error)
            self._open, self._pending = False, []
            self._inserts.clear()
            return
        try:
            self._flush()
        except BaseException:
            if in_transaction(self.conn):
                self._commit_written()  # the batches before the failing one
            else:  # SQLite rolled the transaction back itself
                self._open, self._pending = False, []
            raise
        self._commit_written()

    def _commit_written(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            if in_transaction(self.conn):
                self.conn.execute("ROLLBACK")
            self._open, self._pending = False, []
            raise
        self._open = False
        pending, self._pending = self._pending, []
        if self.on_commit is not None:
            for count in pending:
                self.on_commit(count)

    def _embed(self, plan: Plan, embedded: dict[bytes, bytes]) -> list[bytes]:
        missing = {d: v for d, v in plan.to_embed.items() if d not in embedded}
        if missing:
            start = time.monotonic()
            embedded.update(zip(missing, embed_values(self.model(), list(missing.values()))))
            self._model_seconds = time.monotonic() - start
        return [embedded[digest] for digest in plan.to_embed]

    def _begin_group(self, batch: list[CheckedItem], plan: Optional[Plan]) -> None:
        """Plan and embed outside any transaction, then BEGIN IMMEDIATE, check the plan
        (planning again when it changed) and write; the transaction stays open."""
        embedded: dict[bytes, bytes] = {}
        for _attempt in range(PLAN_ATTEMPTS):
            plan = plan or plan_batch(self.conn, self.collection_id, batch)
            fresh = self._embed(plan, embedded)
            self._began = time.monotonic()
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                _check_plan(self.conn, self.collection_id, plan, self.check_collection)
                write_rows(self.conn, self.collection_id, plan, fresh, self.store,
                           self.check_dimensions, self._bulk, self._inserts)
            except BaseException as error:
                self._inserts.clear()
                if in_transaction(self.conn):
                    self.conn.execute("ROLLBACK")
                if isinstance(error, PlanChanged):
                    plan = None
                    continue
                raise
            self._open = True
            return
        raise _stale(self.collection_id)

    def _write_in_group(self, batch: list[CheckedItem]) -> None:
        """Plan, embed and write inside the open group, in a savepoint. A batch whose plan
        or vectors depend on pending inserts (`PendingInserts.overlaps`, other dimensions)
        has them written first, outside its savepoint, and is planned again."""
        conn = self.conn
        embedded: dict[bytes, bytes] = {}
        held = len(self._inserts.batches)
        while True:
            conn.execute("SAVEPOINT embsqlite_batch")
            in_savepoint = True
            try:
                plan = plan_batch(conn, self.collection_id, batch)
                if self._inserts.overlaps(plan):
                    conn.execute("RELEASE SAVEPOINT embsqlite_batch")  # nothing written yet
                    in_savepoint = False
                    self._flush()
                    continue
                late = time.monotonic() - self._began + self._model_seconds > self.seconds
                if plan.to_embed and late:
                    conn.execute("RELEASE SAVEPOINT embsqlite_batch")  # nothing written yet
                    in_savepoint = False
                    self.commit()  # the model runs outside the write lock
                    self._begin_group(batch, plan)
                    return
                fresh = self._embed(plan, embedded)
                if fresh and self._inserts.dimensions not in (None, len(fresh[0]) // 4):
                    conn.execute("RELEASE SAVEPOINT embsqlite_batch")  # nothing written yet
                    in_savepoint = False
                    self._flush()  # so the dimension check sees the pending vectors
                    continue
                held = len(self._inserts.batches)
                write_rows(conn, self.collection_id, plan, fresh, self.store,
                           self.check_dimensions, self._bulk, self._inserts)
            except BaseException:
                self._inserts.drop_after(held)  # an interrupt after the batch was handed over
                if in_savepoint and self._open and in_transaction(conn):
                    conn.execute("ROLLBACK TO SAVEPOINT embsqlite_batch")
                    conn.execute("RELEASE SAVEPOINT embsqlite_batch")
                raise
            conn.execute("RELEASE SAVEPOINT embsqlite_batch")
            return


def _stale(collection_id: int) -> StaleBatchError:
    return StaleBatchError(
        f"collection id {collection_id}: other connections kept changing the rows of a "
        f"batch while it was embedded ({PLAN_ATTEMPTS} attempts); nothing of it was written"
    )


def content_to_embed(
    conn: Any, collection_id: int, batch: list[CheckedItem]
) -> dict[bytes, tuple[int, Value]]:
    """{content hash: (index in `batch`, value)} for the distinct contents that
    `write_batch` would send the model (those the collection never stored), found by the
    same query, so a cluster is sent only those."""
    latest = {id_: (index, value) for index, (id_, value, _) in enumerate(batch)}
    hashed = [(content_hash(value), index, value) for index, value in latest.values()]
    stored = _stored_vectors(conn, collection_id, {digest for digest, _, _ in hashed})
    wanted: dict[bytes, tuple[int, Value]] = {}
    for digest, index, value in hashed:
        if digest not in stored:
            wanted.setdefault(digest, (index, value))
    return wanted


def _stored_vectors(conn: Any, collection_id: int, digests: set[bytes]) -> dict[bytes, bytes]:
    """{content hash: a stored vector} for the hashes this collection already holds,
    found through idx_embeddings_content_hash (one query per chunk of hashes)."""
    found: dict[bytes, bytes] = {}
    for chunk, marks in rows.chunks(list(digests)):
        found.update(
            (bytes(digest), bytes(blob))
            for digest, blob in conn.execute(
                f"select content_hash, embedding from embeddings indexed by "
                f"{schema.CONTENT_HASH_INDEX} where content_hash in ({marks}) "
                "and collection_id = ? and embedding is not null group by content_hash",
                (*chunk, collection_id),
            ).fetchall()
        )
    return found


def embed_values(model: Any, values: list[Value]) -> list[bytes]:
    """Embed `values` with `model` and encode them, checking count and dimensions (also
    run by cluster workers)."""
    if not values:
        return []
    encoded = getattr(model, "embed_multi_encoded", None)
    if encoded is not None:
        blobs = list(encoded(values))
    else:  # a duck-typed model with only embed_multi
        blobs = [vectors.encode(vector) for vector in model.embed_multi(values)]
    if len(blobs) != len(values):
        raise RuntimeError(
            f"model {model.model_id!r} returned {len(blobs)} vectors for {len(values)} items"
        )
    lengths = {len(blob) // 4 for blob in blobs}
    if len(lengths) > 1 or 0 in lengths:
        raise ValueError(
            f"model {model.model_id!r} returned vectors of differing or zero dimensions "
            f"{sorted(lengths)} in one batch"
        )
    return blobs


# Metadata deeper than this is refused: Python's json parser, which reads it back for every
# search result, recurses once per level, and SQLite's JSON functions stop at 1000.
MAX_METADATA_DEPTH = 100


class UnstorableTextError(UnicodeEncodeError):
    """Text SQLite cannot store (not encodable as UTF-8), named by what it is; still a
    UnicodeEncodeError (and ValueError), as SQLite's own binding error was."""

    def __init__(self, what: str, error: UnicodeEncodeError) -> None:
        super().__init__(error.encoding, error.object, error.start, error.end, error.reason)
        self.what = what

    def __str__(self) -> str:
        return f"{self.what} cannot be stored as UTF-8: {self.reason} at character {self.start}"


def check_text(what: str, text: str) -> None:
    """`text` must be encodable as UTF-8 (no lone surrogate), as SQLite stores it."""
    if text.isascii():  # a flag CPython keeps: no encoding needed to know
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnstorableTextError(what, error) from None


def checked_batches(entries: Iterable[Any], batch_size: int) -> Iterator[list[CheckedItem]]:
    """Lists of up to `batch_size` checked (id, value, metadata JSON) items, read lazily;
    an item's position in the errors counts from 1 over all of `entries`."""
    numbered = enumerate(entries, 1)
    while True:
        batch = [check_item(entry, position) for position, entry in itertools.islice(numbered, batch_size)]
        if not batch:
            return
        yield batch


def check_item(entry: Any, position: Optional[int] = None) -> CheckedItem:
    """Check one (id, value, metadata) triple, the `position`-th of the input (from 1);
    returns (str id, value, metadata JSON). Everything that could fail later is checked
    here, before any model sees the batch."""
    if type(entry) is tuple and len(entry) == 3:  # the common case, checked cheaply
        id_, value, metadata = entry
        if (metadata is None and type(id_) is str and type(value) is str and id_
                and id_.isascii() and value.isascii()):
            return entry  # type: ignore[return-value]
    where = "item" if position is None else f"item {position}"
    if not isinstance(entry, (tuple, list)) or len(entry) != 3:
        raise ValueError(f"{where}: expected an (id, value, metadata) triple, not {entry!r:.80}")
    id_, value, metadata = entry
    if id_ is None:
        raise TypeError(f"{where}: the id cannot be None")
    id_ = id_ if isinstance(id_, str) else str(id_)
    if not id_:
        raise ValueError(f"{where}: the id cannot be empty")
    check_text(f"{where}: the id {id_!r:.80}", id_)
    where = f"{where} (id {id_!r:.80})"
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, (str, bytes)):
        raise TypeError(f"{where}: the value must be str or bytes, not {type(value).__name__}")
    if isinstance(value, str):
        check_text(f"{where}: the value", value)
    if metadata is None:
        return id_, value, None
    if not isinstance(metadata, dict):
        raise TypeError(f"{where}: metadata must be a dict, not {type(metadata).__name__}")
    return id_, value, metadata_json(metadata, where)


def metadata_json(metadata: dict, where: str) -> str:
    """The JSON text stored for `metadata`, refusing what would not read back the same:
    nesting deeper than MAX_METADATA_DEPTH, keys that become the same JSON key (1 and
    "1"), NaN or infinity, and values JSON has no form for."""
    _check_depth(metadata, where)
    try:
        text = json.dumps(metadata, allow_nan=False)
        # JSON's \u escapes would store a lone surrogate that no reader can print
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnstorableTextError(f"{where}: metadata", error) from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: metadata is not JSON-serialisable: {error}") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            twice = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(
                f"{where}: metadata keys collide as JSON text {twice!r:.80} "
                "(e.g. 1 and \"1\"): one value would be lost"
            )
        return dict(pairs)

    json.loads(text, object_pairs_hook=no_duplicates)
    return text


def _check_depth(metadata: dict, where: str) -> None:
    """Walk the containers without recursion; a cycle shows as too deep."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(
                f"{where}: metadata is nested more than {MAX_METADATA_DEPTH} levels deep"
            )
        children = value.values() if isinstance(value, dict) else value
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, (dict, list, tuple))
        )
