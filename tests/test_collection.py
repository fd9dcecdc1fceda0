"""Collection: creating and opening, embedding with deduplication, search and llm's storage
layout, on real SQLite files with the compiled extension."""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import sys
import time

import numpy as np
import pytest
import sqlite_utils
from conftest import CountingModel
from hypothesis import given, settings
from hypothesis import strategies as st

import embsqlite
from embsqlite import Collection, Entry, connection, ingest, schema
from embsqlite.collection import prefix_range


def make(tmp_path, model, name="docs", **kwargs):
    return Collection(name, str(tmp_path / "c.db"), model=model, **kwargs)


def rows(collection):
    """Every stored row of the collection, as dicts keyed by id."""
    cursor = collection.conn.execute(
        "select id, embedding, content, content_blob, content_hash, metadata, updated "
        "from embeddings where collection_id = ? order by id",
        (collection.id,),
    )
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


class Recorder:
    """A connection proxy recording each (sql, params) the collection executes."""

    def __init__(self, conn):
        self._conn = conn
        self.statements: list[tuple[str, object]] = []

    def execute(self, sql, params=()):
        self.statements.append((sql, params))
        return self._conn.execute(sql, params)

    def executemany(self, sql, seq):
        seq = list(seq)
        self.statements.append((sql, seq))
        return self._conn.executemany(sql, seq)

    def __getattr__(self, name):
        return getattr(self._conn, name)


# Constructor, model rules, members


@pytest.mark.parametrize("kind", ["memory", "path", "pathlib", "sqlite3", "sqlite_utils"])
def test_every_kind_of_db_works_and_ranks_in_c(tmp_path, counting_model, kind):
    path = tmp_path / "kinds.db"
    db = {
        "memory": None,
        "path": str(path),
        "pathlib": path,
        "sqlite3": sqlite3.connect(path),
        "sqlite_utils": sqlite_utils.Database(path),
    }[kind]
    collection = Collection("docs", db, model=counting_model)
    collection.embed_multi([("a", "red apple"), ("b", "green apple"), ("c", "blue sky")])
    assert embsqlite.loading.uses_c(collection.conn)
    assert [e.id for e in collection.similar("apple", number=2)] == ["a", "b"]
    assert collection.count() == 3
    if kind == "sqlite_utils":
        assert collection.db is db
    else:
        assert isinstance(collection.db, sqlite_utils.Database)
        assert collection.db.conn is collection.conn


def test_apsw_connection(counting_model):
    import apsw  # a test extra: no skip, the test needs it
    conn = apsw.Connection(":memory:")
    collection = Collection("docs", conn, model=counting_model)
    collection.embed_multi([("a", "red apple"), ("b", "blue sky")], store=True)
    collection.embed("a", "red apple", metadata={"k": 1})
    assert embsqlite.loading.uses_c(conn)
    best = collection.similar("apple", number=1)[0]
    assert (best.id, best.content, best.metadata) == ("a", "red apple", {"k": 1})


def test_creating_needs_a_model(tmp_path):
    with pytest.raises(ValueError, match="model"):
        Collection("docs", str(tmp_path / "c.db"))


def test_create_false_on_missing_collection_writes_nothing(tmp_path):
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    with pytest.raises(Collection.DoesNotExist):
        Collection("docs", conn, create=False)
    assert conn.execute("select count(*) from sqlite_master").fetchone()[0] == 0
    Collection("other", conn, model_id="hashing")
    with pytest.raises(Collection.DoesNotExist):
        Collection("docs", conn, create=False)


def test_alias_is_stored_as_the_real_id_and_model_id_is_set_on_every_path(tmp_path):
    path = str(tmp_path / "c.db")
    created = Collection("docs", path, model_id="hash")  # an alias of "hashing"
    assert created.model_id == "hashing"
    assert created.conn.execute("select model from collections").fetchone()[0] == "hashing"
    assert Collection("docs", path).model_id == "hashing"
    assert Collection("docs", path, model_id="hash").model_id == "hashing"
    assert Collection("docs", path, create=False).model().model_id == "hashing"
    model = CountingModel("counting-x")
    assert Collection("mine", path, model=model).model() is model


def test_opening_with_a_different_model_is_refused(tmp_path, counting_model):
    path = str(tmp_path / "c.db")
    Collection("docs", path, model=counting_model).embed("a", "text")
    with pytest.raises(ValueError, match="counting.*hashing|hashing.*counting"):
        Collection("docs", path, model_id="hashing")
    with pytest.raises(ValueError, match="counting"):
        Collection("docs", path, model=CountingModel("other-model"))
    with pytest.raises(ValueError, match="no-such-model"):
        Collection("docs", path, model_id="no-such-model")
    with pytest.raises(ValueError):
        Collection("new", path, model=counting_model, model_id="hashing")
    assert Collection("docs", path, model=counting_model).count() == 1


def test_exists(tmp_path, counting_model):
    missing = tmp_path / "missing.db"
    assert Collection.exists(str(missing), "docs") is False
    assert not missing.exists()  # asking does not create a file
    empty = sqlite3.connect(tmp_path / "empty.db")
    assert Collection.exists(empty, "docs") is False
    path = str(tmp_path / "c.db")
    Collection("docs", path, model=counting_model)
    assert Collection.exists(path, "docs") is True
    assert Collection.exists(sqlite_utils.Database(path), "docs") is True
    assert Collection.exists(path, "nope") is False


def test_members_and_delete_in_one_transaction(tmp_path, counting_model):
    path = str(tmp_path / "c.db")
    keep = Collection("keep", path, model=counting_model)
    keep.embed("k", "kept text")
    doomed = Collection("doomed", path, model=counting_model)
    doomed.embed_multi([(str(i), f"text {i}") for i in range(5)])
    assert (doomed.name, doomed.model_id, doomed.count()) == ("doomed", "counting", 5)
    assert isinstance(doomed.id, int) and doomed.id != keep.id
    assert doomed.model() is counting_model
    trace: list[str] = []
    doomed.conn.set_trace_callback(trace.append)
    doomed.delete()
    doomed.conn.set_trace_callback(None)
    # the SELECT checks that the name still maps to this collection's id and model
    # (the change-token triggers run inside each DELETE; the trace repeats its text); the
    # PRAGMA after the commit finds the database file, beside which an index file is removed
    assert [s.split()[0].upper() for n, s in enumerate(trace) if not n or s != trace[n - 1]] == [
        "BEGIN", "SELECT", "DELETE", "DELETE", "COMMIT", "PRAGMA"]
    assert not Collection.exists(path, "doomed")
    assert doomed.conn.execute(
        "select count(*) from embeddings where collection_id = ?", (doomed.id,)
    ).fetchone()[0] == 0
    assert keep.count() == 1


# Storage of one item


def test_embed_stores_columns_as_specified(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    before = int(time.time())
    collection.embed(42, "some text", metadata={"a": [1, "x"]}, store=True)
    collection.embed("bin", b"\x00\x01binary", store=True)
    collection.embed("plain", "not stored")
    after = int(time.time())
    stored = rows(collection)
    assert set(stored) == {"42", "bin", "plain"}
    text = stored["42"]
    assert text["content"] == "some text" and text["content_blob"] is None
    assert text["content_hash"] == hashlib.md5(b"some text").digest()
    assert json.loads(text["metadata"]) == {"a": [1, "x"]}
    assert before <= text["updated"] <= after
    assert embsqlite.decode(text["embedding"]) == pytest.approx(
        counting_model.inner.embed("some text"), abs=1e-7
    )
    assert stored["bin"]["content"] is None
    assert stored["bin"]["content_blob"] == b"\x00\x01binary"
    assert stored["bin"]["content_hash"] == hashlib.md5(b"\x00\x01binary").digest()
    assert stored["plain"]["content"] is None and stored["plain"]["metadata"] is None


# Deduplication, identical in embed and embed_multi


def _write(collection, how, items, store=False):
    if how == "embed":
        for id_, value, meta in items:
            collection.embed(id_, value, metadata=meta, store=store)
    else:
        collection.embed_multi_with_metadata(items, store=store)


@pytest.mark.parametrize("how", ["embed", "embed_multi"])
def test_same_id_same_content_is_not_re_embedded_but_updates_metadata_and_store(
    tmp_path, counting_model, how
):
    collection = make(tmp_path, counting_model)
    _write(collection, how, [("a", "hello world", {"v": 1})])
    first = rows(collection)["a"]
    counting_model.batches.clear()
    _write(collection, how, [("a", "hello world", None)])
    assert counting_model.batches == []
    assert rows(collection)["a"] == first  # nothing passed: nothing changes
    _write(collection, how, [("a", "hello world", {"v": 2})], store=True)
    assert counting_model.batches == []
    now = rows(collection)["a"]
    assert now["embedding"] == first["embedding"]
    assert json.loads(now["metadata"]) == {"v": 2}
    assert now["content"] == "hello world"


@pytest.mark.parametrize("how", ["embed", "embed_multi"])
def test_new_id_with_known_content_copies_the_vector(tmp_path, counting_model, how):
    collection = make(tmp_path, counting_model)
    _write(collection, how, [("a", "shared words", None)])
    counting_model.batches.clear()
    _write(collection, how, [("b", "shared words", {"n": 2})], store=True)
    assert counting_model.batches == []
    stored = rows(collection)
    assert stored["b"]["embedding"] == stored["a"]["embedding"]
    assert stored["b"]["content"] == "shared words"
    assert json.loads(stored["b"]["metadata"]) == {"n": 2}
    assert collection.count() == 2


@pytest.mark.parametrize("how", ["embed", "embed_multi"])
def test_same_id_new_content_is_re_embedded_and_replaced(tmp_path, counting_model, how):
    collection = make(tmp_path, counting_model)
    _write(collection, how, [("a", "old words", {"old": True})], store=True)
    counting_model.batches.clear()
    _write(collection, how, [("a", "new words", None)])
    assert counting_model.items == ["new words"]
    row = rows(collection)["a"]
    assert row["content_hash"] == hashlib.md5(b"new words").digest()
    assert embsqlite.decode(row["embedding"]) == pytest.approx(
        counting_model.inner.embed("new words"), abs=1e-7
    )
    assert row["content"] is None and row["metadata"] is None
    assert collection.count() == 1


def test_a_batch_embeds_each_new_content_once(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed("old", "known text")
    counting_model.batches.clear()
    collection.embed_multi(
        [("x", "fresh text"), ("y", "fresh text"), ("z", "known text"), ("w", "other")]
    )
    assert counting_model.batches == [["fresh text", "other"]]
    stored = rows(collection)
    assert stored["x"]["embedding"] == stored["y"]["embedding"]
    assert stored["z"]["embedding"] == stored["old"]["embedding"]
    # str and bytes with the same bytes share a hash, as in llm
    counting_model.batches.clear()
    collection.embed("bytes", b"known text")
    assert counting_model.batches == []


def test_the_last_occurrence_of_an_id_in_a_batch_wins(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed_multi([("a", "first"), ("a", "second")], store=True)
    assert rows(collection)["a"]["content"] == "second"
    assert collection.count() == 1


def test_one_hash_query_per_batch_using_the_hash_index_and_one_transaction_per_group(
    tmp_path, counting_model, monkeypatch
):

    monkeypatch.setattr(ingest, "WRITE_ROWS", 1_000)  # the opt-in mode: batches written together
    conn = embsqlite.connect(tmp_path / "c.db")
    recorder = Recorder(conn)
    collection = Collection("docs", recorder, model=counting_model)
    collection.embed_multi(((str(i), f"item {i}") for i in range(10)), batch_size=4)
    trace: list[str] = []
    conn.set_trace_callback(trace.append)
    recorder.statements.clear()
    collection.embed_multi(((str(i), f"item {i}") for i in range(5, 25)), batch_size=4)
    conn.set_trace_callback(None)
    hash_queries = [s for s in recorder.statements if "content_hash in" in s[0]]
    # the group's first batch: the plan before the model call, read again inside the
    # write transaction; the other four are planned inside it, once each
    assert len(hash_queries) == 6
    assert [s for s in trace if s.upper().startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    # a savepoint per batch planned inside the group, one for the rows written together
    assert [s for s in trace if s.upper().startswith("SAVEPOINT")] == (
        ["SAVEPOINT embsqlite_batch"] * 4 + ["SAVEPOINT embsqlite_rows"])
    assert [s for s in trace if s.upper() == "COMMIT"] == ["COMMIT"]
    inserts = [s for s in recorder.statements if s[0].startswith("insert or replace")]
    # the group's batches that insert (the first holds only stored items) in one statement
    assert [sql for sql, _ in inserts] == [ingest.BULK_IDS_SQL]
    assert counting_model.items[-15:] == [f"item {i}" for i in range(10, 25)]
    sql, params = hash_queries[0]
    plan = " ".join(str(r[-1]) for r in conn.execute("explain query plan " + sql, params))
    assert "idx_embeddings_content_hash" in plan, plan


# Batches and transactions


def test_an_error_keeps_earlier_batches_and_none_of_the_failing_one(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)

    def entries():
        for i in range(25):
            if i == 23:
                raise RuntimeError("source failed")
            yield str(i), f"text number {i}"

    with pytest.raises(RuntimeError, match="source failed"):
        collection.embed_multi(entries(), batch_size=10)
    assert sorted(map(int, rows(collection))) == list(range(20))


def test_a_model_error_writes_nothing_of_its_batch(tmp_path):
    class Failing(CountingModel):
        def embed_batch(self, items):
            items = list(items)
            if any("boom" in item for item in items):
                raise RuntimeError("model failed")
            return super().embed_batch(items)

    collection = make(tmp_path, Failing())
    with pytest.raises(RuntimeError, match="model failed"):
        collection.embed_multi(
            [("1", "a"), ("2", "b"), ("3", "c boom"), ("4", "d")], batch_size=2
        )
    assert sorted(rows(collection)) == ["1", "2"]


INGEST_SCRIPT = """
import resource, sys
import embsqlite
n = int(sys.argv[1])
collection = embsqlite.Collection("big", sys.argv[2], model_id="hashing")
# distinct texts from a bounded vocabulary, so the model's own token cache stays bounded
items = ((f"id{i}", f"w{i % 1000} v{(i // 1000) % 1000} topic{i % 7}") for i in range(n))
collection.embed_multi(items)
print(collection.count(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_200000_items_from_a_generator_in_constant_memory(tmp_path):
    import subprocess

    def run(n):
        out = subprocess.run(
            [sys.executable, "-c", INGEST_SCRIPT, str(n), str(tmp_path / f"{n}.db")],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert int(out[0]) == n
        return int(out[1])  # peak RSS in KiB

    # from 200,000 items on, the write cache (64 MiB) and the pending statement's journal
    # are full: 200,000 more items held in memory would take well over 20 MB
    small, large = run(200_000), run(400_000)
    assert large < small + 8_000, (small, large)


# Bad input: a clear exception and nothing written


class BadModel(CountingModel):
    def __init__(self, mode):
        super().__init__("bad-" + mode)
        self.mode = mode

    def embed_batch(self, items):
        items = list(items)
        vectors = list(super().embed_batch(items))
        if self.mode == "fewer":
            return iter(vectors[:-1])
        if self.mode == "more":
            return iter(vectors + vectors[:1])
        if self.mode == "varying":
            return iter(v if i % 2 else v + [0.5] for i, v in enumerate(vectors))
        if self.mode == "nan":
            return iter([[math.nan] + v[1:] for v in vectors])
        if self.mode == "inf":
            return iter([[math.inf] + v[1:] for v in vectors])
        if self.mode == "wider":
            return iter(v + [0.0] for v in vectors)
        raise AssertionError(self.mode)


@pytest.mark.parametrize(
    "entry, error, message",
    [
        (("x", "text", ["not", "a dict"]), TypeError, "metadata must be a dict"),
        (("x", "text", {"set": {1, 2}}), ValueError, "not JSON-serialisable"),
        (("x", "text", {"nan": math.nan}), ValueError, "not JSON-serialisable"),
        ((None, "text", None), TypeError, "id cannot be None"),
        (("", "text", None), ValueError, "id cannot be empty"),
        (("x", 12, None), TypeError, "str or bytes"),
        (("x", None, None), TypeError, "str or bytes"),
        (("x", "text"), ValueError, "triple"),
    ],
)
def test_bad_items_raise_and_write_nothing(tmp_path, counting_model, entry, error, message):
    collection = make(tmp_path, counting_model)
    with pytest.raises(error, match=message):
        collection.embed_multi_with_metadata([("ok", "fine text", None), entry])
    assert collection.count() == 0
    assert counting_model.batches == []


@pytest.mark.parametrize(
    "mode, error, message",
    [
        ("fewer", RuntimeError, "returned 1 vectors for 2"),
        ("more", RuntimeError, "returned 3 vectors for 2"),
        ("varying", ValueError, "differing"),
        ("nan", ValueError, "NaN"),
        ("inf", ValueError, "infinity"),
    ],
)
def test_misbehaving_models_raise_and_write_nothing(tmp_path, mode, error, message):
    collection = make(tmp_path, BadModel(mode))
    with pytest.raises(error, match=message):
        collection.embed_multi([("a", "one text"), ("b", "two text")])
    assert collection.count() == 0


def test_a_vector_of_another_dimension_is_refused_naming_both(tmp_path):
    path = str(tmp_path / "c.db")
    Collection("docs", path, model=CountingModel("bad-wider")).embed("a", "first text")
    wider = Collection("docs", path, model=BadModel("wider"))
    with pytest.raises(ValueError, match="65 dimensions.*64-dimension"):
        wider.embed_multi([("b", "second text"), ("c", "third text")])
    assert sorted(rows(wider)) == ["a"]
    with pytest.raises(ValueError, match="3 dimensions.*64-dimension"):
        wider.similar_by_vector([1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "number, error", [(-1, ValueError), (2.0, TypeError), ("3", TypeError), (True, TypeError)]
)
def test_number_must_be_a_non_negative_int(tmp_path, counting_model, number, error):
    collection = make(tmp_path, counting_model)
    collection.embed("a", "text")
    for search in (
        lambda: collection.similar("text", number=number),
        lambda: collection.similar_by_id("a", number=number),
        lambda: collection.similar_by_vector([1.0] * 64, number=number),
    ):
        with pytest.raises(error, match="number"):
            search()
    with pytest.raises(ValueError, match="batch_size"):
        collection.embed_multi([("b", "x")], batch_size=0)


def test_nan_query_vector_is_refused(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed("a", "text")
    with pytest.raises(ValueError, match="NaN"):
        collection.similar_by_vector([math.nan] + [0.0] * 63)


# Search


def _random_collection(tmp_path, rng, n=300, dims=16, name="vecs"):
    class Fixed(embsqlite.EmbeddingModel):
        model_id = f"fixed-{dims}"

        def embed_batch(self, items):
            for item in items:
                yield vectors_by_text[item]

    vectors_by_text = {}
    entries = []
    for i in range(n):
        vector = [rng.gauss(0, 1) for _ in range(dims)]
        text = f"v{i}"
        vectors_by_text[text] = vector
        entries.append((f"id{i:04d}", text))
    collection = Collection(name, str(tmp_path / "v.db"), model=Fixed())
    collection.embed_multi(entries, store=True)
    matrix = np.array(
        [embsqlite.decode(embsqlite.encode(vectors_by_text[t])) for _, t in entries],
        dtype=np.float64,
    )
    return collection, [i for i, _ in entries], matrix


def _reference(ids, matrix, query, number, keep=lambda i: True):
    q = np.array(embsqlite.decode(embsqlite.encode(query)), dtype=np.float64)
    scores = matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q))
    ranked = sorted(
        ((-float(s), i) for i, s in zip(ids, scores) if keep(i)), key=lambda t: (t[0], t[1])
    )
    return [(i, -s) for s, i in ranked[:number]]


def test_similar_by_vector_matches_a_numpy_reference(tmp_path, rng):
    collection, ids, matrix = _random_collection(tmp_path, rng)
    for _ in range(5):
        query = [rng.gauss(0, 1) for _ in range(16)]
        got = collection.similar_by_vector(query, number=7)
        want = _reference(ids, matrix, query, 7)
        assert [e.id for e in got] == [i for i, _ in want]
        assert [e.score for e in got] == pytest.approx([s for _, s in want], abs=1e-12)
        assert all(isinstance(e, Entry) and e.content == f"v{int(e.id[2:])}" for e in got)


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(
        st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=4, max_size=4),
        min_size=1,
        max_size=30,
    ),
    query=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=4, max_size=4),
    number=st.integers(0, 12),
)
def test_similar_by_vector_property(data, query, number):
    model = CountingModel("property-4", 4)
    collection = Collection("p", None, model=model)
    ids = [f"{i:03d}" for i in range(len(data))]
    collection.conn.executemany(
        "insert into embeddings (collection_id, id, embedding) values (?, ?, ?)",
        [(collection.id, i, embsqlite.encode(v)) for i, v in zip(ids, data)],
    )
    matrix = np.array(data, dtype=np.float64)
    q = np.array(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(norms == 0, 0.0, matrix @ q / np.where(norms == 0, 1, norms))
    got = collection.similar_by_vector(query, number=number)
    assert len(got) == min(number, len(data))
    assert [e.score for e in got] == pytest.approx(
        [float(scores[ids.index(e.id)]) for e in got], abs=1e-9
    )
    best_first = sorted(scores, reverse=True)[: len(got)]
    assert [e.score for e in got] == pytest.approx(best_first, abs=1e-9)
    for a, b in zip(got, got[1:]):
        assert a.score > b.score or a.id < b.id or math.isclose(a.score, b.score, abs_tol=1e-12)


def test_ties_are_broken_by_id(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed_multi([("c", "same words"), ("a", "same words"), ("b", "same words")])
    collection.embed("z", "unrelated")
    got = collection.similar("same words", number=3)
    assert [e.id for e in got] == ["a", "b", "c"]
    assert [e.id for e in collection.similar_by_id("b", number=5)][:2] == ["a", "c"]


def test_similar_by_id_and_skip_id(tmp_path, rng):
    collection, ids, matrix = _random_collection(tmp_path, rng, n=50)
    got = collection.similar_by_id("id0007", number=5)
    query = matrix[7].tolist()
    want = _reference(ids, matrix, query, 5, keep=lambda i: i != "id0007")
    assert [e.id for e in got] == [i for i, _ in want]
    skipped = collection.similar_by_vector(query, number=5, skip_id="id0007")
    assert [e.id for e in skipped] == [i for i, _ in want]
    assert collection.similar_by_vector(query, number=1)[0].id == "id0007"
    with pytest.raises(Collection.DoesNotExist):
        collection.similar_by_id("no-such-id")


def test_entries_carry_content_and_metadata(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed("a", "apple pie", metadata={"kind": "food"}, store=True)
    collection.embed("b", "apple tree")
    got = {e.id: e for e in collection.similar("apple")}
    assert got["a"].content == "apple pie" and got["a"].metadata == {"kind": "food"}
    assert got["b"].content is None and got["b"].metadata is None


def test_zero_query_vector_scores_zero(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed_multi([("a", "one"), ("b", "two")])
    got = collection.similar_by_vector([0.0] * 64)
    assert [(e.id, e.score) for e in got] == [("a", 0.0), ("b", 0.0)]


def test_number_zero_and_empty_collection(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    assert collection.similar("anything") == []
    collection.embed("a", "text")
    assert collection.similar("text", number=0) == []


def test_search_sql_binds_number_and_prefix_and_uses_the_primary_key(tmp_path, counting_model, sql_and_cache_only):
    conn = embsqlite.connect(tmp_path / "c.db")
    recorder = Recorder(conn)
    collection = Collection("docs", recorder, model=counting_model)
    collection.embed_multi([(f"doc{i}", f"text {i}") for i in range(20)])
    recorder.statements.clear()
    collection.similar("text 3", number=7, prefix="doc1")
    (sql, params), = [s for s in recorder.statements if "cosine_similarity" in s[0]]
    assert "limit ?" in sql.lower() and 7 in params and "7" not in sql
    assert "like" not in sql.lower() and "doc1" not in sql
    plan = " ".join(str(r[-1]) for r in conn.execute("explain query plan " + sql, params))
    assert "sqlite_autoindex_embeddings_1 (collection_id=? AND id>? AND id<?)" in plan, plan


# Prefix: literal, case-sensitive, a range on the primary key

TRICKY_IDS = [
    "a%b", "a%c", "axb", "a_b", "a_c", "azb", "A_b", "a", "ab", "a\U0010ffff",
    "a\U0010ffffz", "a\U0010ffff\U0010ffff", "b", "\U0010ffff", "\U0010ffffq", "\ud7ffx",
    "\ue000", "\ud7ff", "caf\u00e9", "cafe", "caf\u00e9s", "x\x00y", "x", "xy",
    "\U0001f600a", "\U0001f600", "\U0001f601",
]


@pytest.mark.parametrize(
    "prefix",
    ["a%", "a_", "A", "a", "a\U0010ffff", "\U0010ffff", "\ud7ff", "caf\u00e9", "x\x00",
     "\U0001f600", "zzz", "", None],
)
def test_prefix_is_literal_and_case_sensitive(tmp_path, counting_model, prefix):
    collection = make(tmp_path, counting_model)
    collection.embed_multi((i, f"word{n}") for n, i in enumerate(TRICKY_IDS))
    query = counting_model.inner.embed("word1")
    got = {e.id for e in collection.similar_by_vector(query, number=100, prefix=prefix)}
    assert got == {i for i in TRICKY_IDS if i.startswith(prefix or "")}
    by_id = {e.id for e in collection.similar_by_id("b", number=100, prefix=prefix)}
    assert by_id == {i for i in TRICKY_IDS if i.startswith(prefix or "") and i != "b"}


def _utf8_key(text: str) -> bytes:
    return text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=4),
    ids=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=6), max_size=30),
)
def test_prefix_range_matches_startswith_in_sqlite_order(prefix, ids):
    low, high = prefix_range(prefix)
    candidates = ids + [prefix + i for i in ids] + [prefix[:-1] + chr(sys.maxunicode)]
    for candidate in candidates:
        key = _utf8_key(candidate)
        inside = key >= _utf8_key(low) and (high is None or key < _utf8_key(high))
        assert inside == candidate.startswith(prefix), (prefix, candidate, high)


def test_prefix_range_edges():
    assert prefix_range("ab") == ("ab", "ac")
    assert prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert prefix_range("\U0010ffff\U0010ffff") == ("\U0010ffff\U0010ffff", None)
    assert prefix_range("\ud7ff") == ("\ud7ff", "\ue000")


# No Python function per row


@pytest.mark.parametrize("kind", ["stdlib", "pysqlite3_sqlite_utils", "fallback"])
def test_ranking_calls_no_python_per_row(tmp_path, kind, python_calls, monkeypatch):
    """The SQL ranking statement (vector files off: a build through a cursor reads rows
    in Python once, by design)."""
    import warnings

    monkeypatch.setattr(embsqlite.vectorfile, "_enabled", False)

    path = tmp_path / f"{kind}.db"
    if kind == "stdlib":
        db = sqlite3.connect(path)
    else:
        db = sqlite_utils.Database(path)
        if kind == "fallback":  # the control: the Python fallback must be caught
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                embsqlite.fallback.register(db.conn)
    model = CountingModel("per-row", 8)
    collection = Collection("docs", db, model=model)
    collection.embed_multi((str(i), f"word{i} common") for i in range(2000))
    query = model.inner.embed("common")
    calls, _ = python_calls(lambda: collection.similar_by_vector(query, number=5))
    if kind == "fallback":
        assert not embsqlite.loading.uses_c(collection.conn)
        assert calls >= 2000
    else:
        assert embsqlite.loading.uses_c(collection.conn)
        assert calls < 100, calls


# Storage: WAL, busy timeout, schema


def test_new_file_database_uses_wal_and_a_busy_timeout(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    assert collection.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert collection.conn.execute("pragma busy_timeout").fetchone()[0] > 0
    # a connection embsqlite opened: no fsync per batch, fewer checkpoints
    assert collection.conn.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL
    assert collection.conn.execute("pragma wal_autocheckpoint").fetchone()[0] == (
        connection.WAL_AUTOCHECKPOINT_BYTES // connection.NEW_FILE_PAGE_SIZE
    )
    other = sqlite3.connect(tmp_path / "c.db")
    assert other.execute("pragma journal_mode").fetchone()[0] == "wal"  # persistent
    # an existing rollback-journal database is left in its mode
    legacy = sqlite3.connect(tmp_path / "legacy.db")
    legacy.execute("create table t (x)")
    legacy.commit()
    Collection("docs", legacy, model=counting_model)
    assert legacy.execute("pragma journal_mode").fetchone()[0] == "delete"


def test_a_new_file_gets_large_pages_and_an_existing_file_keeps_its_own(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed_multi([("a", "one"), ("b", "two")])
    collection.close()
    other = sqlite3.connect(tmp_path / "c.db")  # any SQLite client reads the file
    assert other.execute("pragma page_size").fetchone()[0] == connection.NEW_FILE_PAGE_SIZE
    assert other.execute("select count(*) from embeddings").fetchone()[0] == 2
    other.close()
    made = sqlite3.connect(tmp_path / "made.db")  # a WAL file someone else made: 4 KiB pages
    made.execute("pragma journal_mode = wal")
    made.execute("create table t (x)")
    made.commit()
    made.close()
    collection = Collection("docs", str(tmp_path / "made.db"), model=counting_model)
    assert collection.conn.execute("pragma page_size").fetchone()[0] == 4096
    # its WAL is checkpointed after as many bytes as a new file's
    assert collection.conn.execute("pragma wal_autocheckpoint").fetchone()[0] == (
        connection.WAL_AUTOCHECKPOINT_BYTES // 4096
    )


def test_schema_is_exactly_the_schema_module(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    found = dict(
        collection.conn.execute("select name, sql from sqlite_master where sql is not null")
    )
    assert found == {
        "_sqlite_migrations": schema.MIGRATIONS_TABLE_SQL,
        "idx__sqlite_migrations_migration_set_name": schema.MIGRATIONS_INDEX_SQL,
        "collections": schema.COLLECTIONS_SQL,
        "idx_collections_name": schema.COLLECTIONS_INDEX_SQL,
        "embeddings": schema.EMBEDDINGS_SQL,
        "idx_embeddings_content_hash": schema.EMBEDDINGS_INDEX_SQL,
    }
    assert schema.applied_migrations(collection.conn) == list(schema.MIGRATION_NAMES)
    # opening again writes nothing
    conn = sqlite3.connect(tmp_path / "c.db")
    Collection("docs", conn)
    assert conn.total_changes == 0 and not conn.in_transaction


def test_a_write_inside_the_callers_transaction_uses_a_savepoint(tmp_path, counting_model):
    conn = sqlite3.connect(tmp_path / "c.db")
    collection = Collection("docs", conn, model=counting_model)
    conn.execute("create table mine (x)")
    conn.execute("insert into mine values (1)")
    assert conn.in_transaction
    collection.embed("a", "text")
    assert conn.in_transaction  # still the caller's to commit
    conn.rollback()
    assert collection.count() == 0


# Databases that cannot be used


def test_a_file_that_is_not_sqlite_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just some text\n" * 200)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        Collection("docs", str(path), model_id="hashing")
    assert path.read_bytes() == b"this is not a database, just some text\n" * 200


def test_a_read_only_database_searches_but_refuses_writes(tmp_path, counting_model):
    path = tmp_path / "c.db"
    make(tmp_path, counting_model).embed_multi([("a", "red apple"), ("b", "blue sky")])
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    collection = Collection("docs", readonly, model=counting_model)
    assert collection.similar("apple", number=1)[0].id == "a"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        collection.embed("c", "green grass")
    assert collection.count() == 2


def test_an_id_without_a_valid_stored_embedding(tmp_path, counting_model):
    collection = make(tmp_path, counting_model)
    collection.embed("a", "text")
    collection.conn.execute(
        "insert into embeddings (collection_id, id, embedding) values (?, 'broken', NULL)",
        (collection.id,),
    )
    with pytest.raises(ValueError, match="no valid stored embedding"):
        collection.similar_by_id("broken")
    got = collection.similar("text")  # a row with no vector cannot be ranked: left out
    assert [e.id for e in got] == ["a"]


def test_by_default_a_refused_insert_stops_the_run_before_later_batches_are_embedded(
    tmp_path, counting_model
):
    """Batches are not kept pending unless EMBSQLITE_WRITE_ROWS asks for it: an insert that
    SQLite refuses (another application's trigger) ends the run before the model embeds a
    later batch (with a paid model, money)."""

    assert ingest.WRITE_ROWS == 1
    collection = Collection("docs", tmp_path / "a.db", model=counting_model)
    collection.embed("seed", "seed")
    collection.conn.execute(
        "create trigger refuse before insert on embeddings when new.id = 'i25'"
        " begin select raise(abort, 'refused by another application'); end")
    collection.conn.commit()
    counting_model.batches.clear()
    with pytest.raises(Exception, match="refused by another application"):
        collection.embed_multi(((f"i{i}", f"text {i}") for i in range(900)), batch_size=10)
    assert len(counting_model.items) == 30  # the batch of i25 and the two before it
    assert collection.conn.execute("select count(*) from embeddings where id like 'i%'").fetchone()[0] == 20


def test_by_default_the_runs_connection_sees_each_batch_and_its_own_writes_stay(tmp_path, counting_model):
    """The caller's input may read or write the collection on the run's connection between
    batches: it sees every batch written so far, and its write is not overwritten by an
    older item of the run."""
    collection = Collection("docs", tmp_path / "a.db", model=counting_model)
    seen = []

    def items():
        for i in range(90):
            if i == 50:
                seen.append(collection.conn.execute("select count(*) from embeddings").fetchone()[0])
                collection.conn.execute("update embeddings set content = 'corrected' where id = 'i0'")
            yield (f"i{i}", f"text {i}")

    collection.embed_multi(items(), batch_size=10, store=True)
    assert seen == [50]
    assert collection.conn.execute("select content from embeddings where id = 'i0'").fetchone()[0] == "corrected"
