"""Compatibility with the real `llm` package (0.36): its databases open in embsqlite and
ours open in llm, both ways, with the same ids, scores, content and metadata."""
from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3

import llm  # the real llm 0.36, a test extra (`pip install -e .[test]`); never skipped
import pytest
import sqlite_utils
from llm.embeddings_migrations import embeddings_migrations

import embsqlite
from embsqlite import Collection, schema
from embsqlite.hashing import HashingModel
from conftest import CountingModel

WRITES = ("CREATE", "ALTER", "INSERT", "UPDATE", "DELETE", "DROP", "REPLACE", "BEGIN")


class LlmHashing(llm.EmbeddingModel):
    """embsqlite's hashing model, packaged as an llm embedding model with the same id."""

    model_id = "hashing"
    supports_binary = True

    def __init__(self):
        self.inner = HashingModel()

    def embed_batch(self, items, key=None):
        return self.inner.embed_batch(list(items))


TEXTS = [
    "the quick brown fox", "a lazy dog sleeps", "foxes and dogs", "stock market news",
    "brown bread recipe", "quick sort algorithm", "dogs chase foxes", "market of foxes",
    "sleeping in the sun", "the brown dog", "news about bread", "sorting algorithms compared",
]


def sample_entries():
    return [
        (f"doc-{i:02d}", text, {"n": i, "tags": ["x", str(i)]} if i % 3 else None)
        for i, text in enumerate(TEXTS)
    ]


def schema_of(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select type, name, tbl_name, sql from sqlite_master order by type, name"
        ).fetchall()
    finally:
        conn.close()


def as_tuples(entries):
    return [(e.id, e.score, e.content, e.metadata) for e in entries]


def assert_same_results(ours, theirs):
    assert [e.id for e in ours] == [e.id for e in theirs]
    assert [e.score for e in ours] == pytest.approx([e.score for e in theirs], rel=1e-12, abs=1e-13)
    assert [(e.content, e.metadata) for e in ours] == [(e.content, e.metadata) for e in theirs]


def random_queries(count=5, dims=256, seed=7):
    """Float32-exact query vectors: embsqlite ranks in float32 (as vectors are stored),
    llm in double, so only float32-exact queries can give the very same scores."""
    rng = random.Random(seed)
    return [
        embsqlite.decode(embsqlite.encode([rng.gauss(0, 1) for _ in range(dims)]))
        for _ in range(count)
    ]


def full_ranking(entries):
    """A tie-independent view of a complete ranking: sorted by (score, id)."""
    return sorted((-round(e.score, 9), e.id, e.content, str(e.metadata)) for e in entries)


def test_llm_database_opens_and_searches_the_same_in_embsqlite(tmp_path):
    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed_multi_with_metadata(sample_entries(), store=True)
    theirs.embed("binary", b"\x89PNG fox bytes", store=True)
    ours = Collection("docs", str(path))
    assert ours.model_id == "hashing" and ours.id == theirs.id
    assert ours.count() == theirs.count() == len(TEXTS) + 1
    for query in random_queries():
        assert_same_results(ours.similar_by_vector(query, number=6), theirs.similar_by_vector(query, number=6))
    everything = ours.count()
    assert full_ranking(ours.similar("brown fox", number=everything)) == full_ranking(
        theirs.similar("brown fox", number=everything)
    )
    assert full_ranking(ours.similar_by_id("doc-02", number=everything)) == full_ranking(
        theirs.similar_by_id("doc-02", number=everything)
    )
    stored = dict(ours.conn.execute("select id, content_blob from embeddings where id = 'binary'"))
    assert stored == {"binary": b"\x89PNG fox bytes"}


def test_embsqlite_recognises_llm_content_hashes(tmp_path):
    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed_multi([("a", "shared text"), ("b", "other text")])
    model = CountingModel("hashing", 256)
    ours = Collection("docs", str(path), model=model)
    ours.embed_multi([("a", "shared text"), ("c", "shared text"), ("d", "brand new")])
    assert model.items == ["brand new"]
    vectors = dict(ours.conn.execute("select id, embedding from embeddings"))
    assert vectors["c"] == vectors["a"]


def test_embsqlite_database_opens_in_llm_with_no_migration_and_searches_the_same(tmp_path):
    path = tmp_path / "ours.db"
    ours = Collection("docs", str(path), model_id="hashing")
    ours.embed_multi_with_metadata(sample_entries(), store=True)
    assert ours.conn.execute("pragma journal_mode").fetchone()[0] == "wal"

    reference = tmp_path / "reference.db"
    llm.Collection("docs", sqlite_utils.Database(reference), model=LlmHashing())
    assert schema_of(path) == schema_of(reference)

    db = sqlite_utils.Database(path)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    assert embeddings_migrations.pending(db) == []
    theirs = llm.Collection("docs", db, model=LlmHashing())
    results = [theirs.similar_by_vector(q, number=5) for q in random_queries()]
    db.conn.set_trace_callback(None)
    assert statements, "the trace saw llm's queries"
    assert [s for s in statements if s.lstrip().upper().startswith(WRITES)] == []
    assert db.conn.total_changes == 0
    assert theirs.id == ours.id and theirs.model_id == "hashing" and theirs.count() == ours.count()
    for query, theirs_result in zip(random_queries(), results):
        assert_same_results(ours.similar_by_vector(query, number=5), theirs_result)

    # llm accepts new rows; embsqlite sees them and ranks them the same
    theirs.embed_multi_with_metadata(
        [("llm-1", "foxes in the market", {"from": "llm"}), ("llm-2", "bread and dogs", None)],
        store=True,
    )
    assert ours.count() == len(TEXTS) + 2
    for query in random_queries(seed=11):
        assert_same_results(ours.similar_by_vector(query, number=8), theirs.similar_by_vector(query, number=8))
    assert [e.id for e in ours.similar_by_vector(embsqlite.decode(embsqlite.encode(
        HashingModel().embed("foxes in the market"))), number=1)] == ["llm-1"]
    assert sqlite3.connect(path).execute("pragma integrity_check").fetchone()[0] == "ok"


def _old_llm_database(path, stop_before, old_migrations_table=False):
    """A database as an older llm left it: llm's own migrations up to `stop_before`,
    then rows written with the columns that existed at that stage."""
    db = sqlite_utils.Database(path)
    embeddings_migrations.apply(db, stop_before=stop_before)
    db["collections"].insert({"name": "docs", "model": "hashing"})
    db["collections"].insert({"name": "other", "model": "hashing"})
    columns = set(db["embeddings"].columns_dict)
    model = HashingModel()
    for i, text in enumerate(TEXTS):
        row = {
            "collection_id": 1 + i % 2,
            "id": f"doc-{i:02d}",
            "embedding": embsqlite.encode(model.embed(text)),
            "content": text if i % 4 else None,
            "metadata": '{"n": %d}' % i if i % 3 else None,
        }
        if "updated" in columns:
            row["updated"] = 1_600_000_000 + i
        if "content_hash" in columns:  # llm then hashed the text (or the id: anything unique)
            row["content_hash"] = hashlib.md5((text if row["content"] else row["id"]).encode()).digest()
        db["embeddings"].insert(row)
    if old_migrations_table:  # sqlite-migrate's table, keyed by (migration_set, name)
        names = [r["name"] for r in db.query("select name from _sqlite_migrations order by id")]
        db["_sqlite_migrations"].drop()
        db["_sqlite_migrations"].create(
            {"migration_set": str, "name": str, "applied_at": str}, pk=("migration_set", "name")
        )
        db["_sqlite_migrations"].insert_all(
            {"migration_set": "llm.embeddings", "name": n, "applied_at": "2023-09-01"} for n in names
        )
    db.close()


def _rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select collection_id, id, embedding, content, content_blob, content_hash, "
            "metadata, updated from embeddings order by collection_id, id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "stop_before, old_table",
    [
        ("m002_foreign_key", False),
        ("m003_add_updated", False),
        ("m004_store_content_hash", False),
        ("m004_store_content_hash", True),
        ("m005_add_content_blob", False),
    ],
)
def test_an_older_llm_database_is_upgraded_the_way_llm_does(tmp_path, stop_before, old_table):
    original = tmp_path / "old.db"
    _old_llm_database(original, stop_before, old_table)
    ours_path, llms_path = tmp_path / "ours.db", tmp_path / "llms.db"
    shutil.copy(original, ours_path)
    shutil.copy(original, llms_path)

    ours = Collection("docs", str(ours_path))
    theirs = llm.Collection("docs", sqlite_utils.Database(llms_path), model=LlmHashing())

    assert schema_of(ours_path) == schema_of(llms_path)
    names = "select name from _sqlite_migrations where migration_set = 'llm.embeddings' order by id"
    assert [r[0] for r in sqlite3.connect(ours_path).execute(names)] == [
        r[0] for r in sqlite3.connect(llms_path).execute(names)
    ] == list(schema.MIGRATION_NAMES)

    mine, reference = _rows(ours_path), _rows(llms_path)
    assert len(mine) == len(reference) == len(TEXTS)
    for a, b in zip(mine, reference):
        assert a[:5] == b[:5] and a[6] == b[6]  # everything but the hash and time
        assert len(a[5]) == len(b[5]) == 16
        if a[3] is not None:  # content: MD5 of it; no content: a random digest
            assert a[5] == b[5] == hashlib.md5(a[3].encode()).digest()
        assert a[7] is not None and b[7] is not None
        if stop_before in ("m002_foreign_key", "m003_add_updated"):
            assert abs(a[7] - b[7]) < 60  # both filled in with the time of the upgrade
        else:
            assert a[7] == b[7] == 1_600_000_000 + int(a[1][4:])  # kept

    # the upgraded database searches the same, and llm finds nothing to migrate in it
    for query in random_queries():
        assert_same_results(ours.similar_by_vector(query, number=4), theirs.similar_by_vector(query, number=4))
    db = sqlite_utils.Database(ours_path)
    assert embeddings_migrations.pending(db) == []
    llm.Collection("docs", db, model=LlmHashing())
    assert db.conn.total_changes == 0
    assert sqlite3.connect(ours_path).execute("pragma integrity_check").fetchone()[0] == "ok"
    assert sqlite3.connect(ours_path).execute("pragma foreign_key_check").fetchall() == []
