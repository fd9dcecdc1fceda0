"""Writing items into a collection: input checks, deduplication by content hash, and one
transaction per batch.

`write_batch` hashes the batch first, asks which hashes the collection already holds (one
query through idx_embeddings_content_hash), sends the model only content never stored,
copies stored vectors to new ids with known content, and writes the batch with
`executemany` in one transaction, so a failing batch leaves nothing behind.
"""
from __future__ import annotations

import itertools
import json
import time
from typing import Any, Iterable, Iterator, Optional, Union

from . import schema, vectors

Value = Union[str, bytes]
IN_CHUNK = 500  # bound parameters per IN (...) list; below every SQLite's limit


def write_batch(
    collection: Any,
    batch: list[tuple[str, Value, Optional[str]]],
    store: bool,
    embedded: Optional[dict[bytes, bytes]] = None,
) -> None:
    """Write one checked batch of (id, value, metadata JSON) into `collection`.

    Per id (the last occurrence in the batch wins): content this collection never stored
    is embedded (once per distinct content) and inserted; content stored under another id
    has that vector copied; the same id with the same content keeps its row, and only
    metadata (when given) and the stored content (when `store`) are updated. Vectors in
    `embedded` ({content hash: blob}, made elsewhere: on a cluster) are used as if stored.
    """
    items = {id_: (value, meta, schema.content_hash(value)) for id_, value, meta in batch}
    given = embedded or {}
    digests = {h for _, _, h in items.values()}
    known = {**given, **_stored_vectors(collection, digests - given.keys())}
    known_ids = [id_ for id_, (_, _, digest) in items.items() if digest in known]
    unchanged = _unchanged_ids(collection, known_ids, items)
    to_embed: dict[bytes, Value] = {}
    for value, _, digest in items.values():
        if digest not in known:
            to_embed.setdefault(digest, value)
    fresh = embed_values(collection.model(), list(to_embed.values())) if to_embed else []
    lengths = {len(blob) // 4 for blob in fresh + [given[h] for h in digests if h in given]}
    blobs = {**known, **dict(zip(to_embed, fresh))}
    now = int(time.time())
    inserts, updates = [], []
    for id_, (value, meta, digest) in items.items():
        text = value if store and isinstance(value, str) else None
        blob = value if store and isinstance(value, bytes) else None
        if id_ not in unchanged:
            inserts.append((collection.id, id_, blobs[digest], text, blob, digest, meta, now))
        elif meta is not None or store:
            updates.append((meta is not None, meta, store, text, blob, now, collection.id, id_))
    with schema.transaction(collection.conn):
        for dimensions in sorted(lengths):
            collection._check_dimensions(dimensions, "the model's vectors")
        if len(lengths) > 1:
            raise ValueError(f"the model's vectors have differing dimensions {sorted(lengths)}")
        collection.conn.executemany(
            "insert or replace into embeddings (collection_id, id, embedding, content, "
            "content_blob, content_hash, metadata, updated) values (?, ?, ?, ?, ?, ?, ?, ?)",
            inserts,
        )
        collection.conn.executemany(
            "update embeddings set metadata = case when ?1 then ?2 else metadata end, "
            "content = case when ?3 then ?4 else content end, "
            "content_blob = case when ?3 then ?5 else content_blob end, updated = ?6 "
            "where collection_id = ?7 and id = ?8",
            updates,
        )


def content_to_embed(
    collection: Any, batch: list[tuple[str, Value, Optional[str]]]
) -> dict[bytes, tuple[int, Value]]:
    """{content hash: (index in `batch`, value)} for the distinct contents that
    `write_batch` would send the model (those `collection` never stored), found by the
    same query, so a cluster is sent only those."""
    latest = {id_: (index, value) for index, (id_, value, _) in enumerate(batch)}
    hashed = [(schema.content_hash(value), index, value) for index, value in latest.values()]
    stored = _stored_vectors(collection, {digest for digest, _, _ in hashed})
    wanted: dict[bytes, tuple[int, Value]] = {}
    for digest, index, value in hashed:
        if digest not in stored:
            wanted.setdefault(digest, (index, value))
    return wanted


def _stored_vectors(collection: Any, digests: set[bytes]) -> dict[bytes, bytes]:
    """{content hash: a stored vector} for the hashes this collection already holds,
    found through idx_embeddings_content_hash (one query per batch of up to 500)."""
    found: dict[bytes, bytes] = {}
    digests_list = list(digests)
    for start in range(0, len(digests_list), IN_CHUNK):
        chunk = digests_list[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = collection.conn.execute(
            f"select content_hash, embedding from embeddings indexed by "
            f"{schema.CONTENT_HASH_INDEX} where content_hash in ({marks}) "
            "and collection_id = ? and embedding is not null group by content_hash",
            (*chunk, collection.id),
        ).fetchall()
        found.update((bytes(digest), bytes(blob)) for digest, blob in rows)
    return found


def rows_by_id(conn: Any, collection_id: int, columns: str, ids: list[str]) -> list[tuple]:
    """`select id, <columns>` for those of `ids` stored in the collection, IN_CHUNK at a time."""
    rows: list[tuple] = []
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        rows += conn.execute(
            f"select id, {columns} from embeddings where collection_id = ? "
            f"and id in ({', '.join('?' * len(chunk))})",
            (collection_id, *chunk),
        ).fetchall()
    return rows


def _unchanged_ids(collection: Any, ids: list[str], items: dict) -> set[str]:
    """Those of `ids` already stored in this collection with the same content hash."""
    return {
        id_
        for id_, digest in rows_by_id(collection.conn, collection.id, "content_hash", ids)
        if digest is not None and bytes(digest) == items[id_][2]
    }


def embed_values(model: Any, values: list[Value]) -> list[bytes]:
    """Embed `values` with `model` and encode them, checking count and dimensions (also
    run by cluster workers)."""
    if not values:
        return []
    vectors_ = list(model.embed_multi(values))
    if len(vectors_) != len(values):
        raise RuntimeError(
            f"model {model.model_id!r} returned {len(vectors_)} vectors for {len(values)} items"
        )
    blobs = [vectors.encode(vector) for vector in vectors_]
    lengths = {len(blob) // 4 for blob in blobs}
    if len(lengths) > 1 or 0 in lengths:
        raise ValueError(
            f"model {model.model_id!r} returned vectors of differing or zero dimensions "
            f"{sorted(lengths)} in one batch"
        )
    return blobs


# The largest count SQLite can bind (LIMIT takes a signed 64-bit integer): one rule for
# every count, whether a search is answered by SQL or by the vector cache.
MAX_COUNT = 2**63 - 1
# Metadata deeper than this is refused: Python's json parser, which reads it back for every
# search result, recurses once per level, and SQLite's JSON functions stop at 1000.
MAX_METADATA_DEPTH = 100


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
        check_text("the prefix", prefix)


def check_pair(entry: Any) -> tuple[Any, Any]:
    """An (id, value) pair of embed_multi, as a tuple."""
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        raise ValueError(f"embed_multi takes (id, value) pairs, not {entry!r:.80}")
    return tuple(entry)  # type: ignore[return-value]


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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UnstorableTextError(what, error) from None


def checked_batches(entries: Iterable[Any], batch_size: int) -> Iterator[list[tuple[str, Value, Optional[str]]]]:
    """Lists of up to `batch_size` checked (id, value, metadata JSON) items, read lazily;
    an item's position in the errors counts from 1 over all of `entries`."""
    numbered = enumerate(entries, 1)
    while True:
        batch = [check_item(entry, position) for position, entry in itertools.islice(numbered, batch_size)]
        if not batch:
            return
        yield batch


def check_item(entry: Any, position: Optional[int] = None) -> tuple[str, Value, Optional[str]]:
    """Check one (id, value, metadata) triple, the `position`-th of the input (from 1);
    returns (str id, value, metadata JSON). Everything that could fail later is checked
    here, before any model sees the batch."""
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
