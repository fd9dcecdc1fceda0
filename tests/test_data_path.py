"""The path of a search and of a batch: which statements a search runs, how the cache
reads a collection, and the batch steps (plan, embed, write) usable without a Collection."""
from __future__ import annotations

import sqlite3
from unittest import mock

import pytest
from conftest import VectorModel

import embsqlite
from embsqlite import cache, ingest, vectorfile
from embsqlite.collection import Collection, summary_sql
from embsqlite.datasette_plugin import search_sql
from embsqlite.ranking import ranking_sql


@pytest.fixture(autouse=True)
def budget():
    """The SQL and cache paths; the vector file's is in tests/test_vectorfile.py."""
    cache.configure(max_mb=64)
    vectorfile.configure(enabled=False)
    yield
    cache.configure(max_mb=64)
    vectorfile.configure(enabled=True)


def make(tmp_path, rows=50, name="c"):
    collection = Collection(name, tmp_path / "a.db", model=VectorModel())
    collection.embed_multi(((f"id{i:03d}", f"{i % 7},{i % 5},1") for i in range(rows)), store=True)
    return collection


def statements(collection, search):
    """The top-level statements `search()` runs on the collection's connection."""
    trace: list[str] = []
    collection.conn.set_trace_callback(trace.append)
    try:
        search()
    finally:
        collection.conn.set_trace_callback(None)
    return [" ".join(s.split()).lower() for s in trace if not s.startswith("--")]


# The path of a search


@pytest.mark.parametrize("cached", [False, True])
def test_an_unchanged_database_costs_a_search_the_token_and_one_statement(tmp_path, cached):
    """No dimension query, no count of collections: those facts are kept with the change
    token; what runs is the token's check and one statement (the ranking, or the cached
    rows' content)."""
    collection = make(tmp_path)
    cache.configure(max_mb=64 if cached else 0)
    for _ in range(3):  # the second search loads the cache when it is on
        collection.similar_by_vector([1, 2, 1], 5)
    run = statements(collection, lambda: collection.similar_by_vector([1, 2, 1], 5))
    assert not [s for s in run if "length(embedding)" in s or "from collections" in s], run
    work = [s for s in run if "embeddings" in s]
    assert len(work) == 1, run
    assert ("cosine_similarity" in work[0]) is not cached
    assert bool(collection._cache.token) is cached


def test_facts_are_read_again_when_the_database_changes(tmp_path):
    """A write moves the token: the next search reads the facts once, in one statement,
    and sees a second collection (no more NOT INDEXED) and the stored dimension."""
    collection = make(tmp_path)
    cache.configure(enabled=False)
    first = statements(collection, lambda: collection.similar_by_vector([1, 2, 1], 5))
    assert "embeddings not indexed" in first[-1]
    Collection("other", collection.conn, model=VectorModel()).embed("x", "1,1,1")
    after = statements(collection, lambda: collection.similar_by_vector([1, 2, 1], 5))
    facts = [s for s in after if "length(embedding)" in s]
    assert len(facts) == 1 and "from collections" in facts[0], after
    assert "embeddings not indexed" not in after[-1]
    with pytest.raises(ValueError, match="the query vector have 2 dimensions but collection"):
        collection.similar_by_vector([1, 2], 5)


def test_inside_a_transaction_the_facts_are_read_for_each_search(tmp_path):
    """A rollback undoes rows without moving the token: facts read inside a transaction
    are not kept."""
    collection = make(tmp_path, rows=0)
    conn = collection.conn
    conn.execute("begin")
    collection.embed("a", "1,0,0")
    assert [e.id for e in collection.similar_by_vector([1, 0, 0])] == ["a"]
    conn.execute("rollback")
    assert collection.similar_by_vector([1, 0, 0, 0]) == []  # no stored dimension now
    collection.embed("b", "0,1,0,0")
    assert [e.id for e in collection.similar_by_vector([0, 1, 0, 0])] == ["b"]


def test_the_cache_reads_ids_and_vectors_in_one_statement(tmp_path):
    """One statement returns both, inside one read transaction (BEGIN ... COMMIT)."""
    collection = make(tmp_path)
    collection.similar_by_vector([1, 2, 1], 5)
    run = statements(collection, lambda: collection.similar_by_vector([1, 2, 1], 5))
    reads = [s for s in run if "from embeddings" in s and "order by id" in s]
    assert len(reads) == 1, run  # the ids with the vectors (copied into the matrix in C)
    assert reads[0].startswith("select id, embsqlite_sink("), reads[0]
    assert run.index("begin") < run.index(reads[0]) < run.index("commit")
    assert collection._cache.loads == 1 and collection._cache.token is not None


WIDE_IDS = ["\u4e2d" * 20, "\u00e9t\u00e9", "a", "\U0001f600x", "z\x00y", "\ud7ff" * 3]
ASCII_IDS = ["a", "b\x00c", "\x00", "d" * 30, "e\x00"]  # 0 bytes inside ASCII ids


@pytest.mark.parametrize("ids", [WIDE_IDS, ASCII_IDS, ["x", "y"]])
@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16le", "UTF-16be"])
def test_the_cache_loads_ids_of_every_width_in_every_encoding(tmp_path, encoding, ids):
    """Ids of every width, some holding a 0, in every text encoding: the load must fit
    its budget and give the same answer as SQL."""
    conn = sqlite3.connect(tmp_path / "u.db")
    conn.execute(f"pragma encoding = '{encoding}'")
    collection = Collection("c", conn, model=VectorModel())
    collection.embed_multi((id_, f"{n},1,{n % 3}") for n, id_ in enumerate(ids))
    cache.configure(enabled=False)
    expected = [(e.id, e.score) for e in collection.similar_by_vector([1, 1, 1], 10)]
    cache.configure(max_mb=64)
    for _ in range(3):
        got = [(e.id, e.score) for e in collection.similar_by_vector([1, 1, 1], 10)]
    assert collection._cache._state is not None and sorted(collection._cache._state.ids) == sorted(ids)
    assert got == expected


def test_datasette_and_collection_rank_with_the_same_statement(tmp_path):
    """Datasette's readable search is the ranking statement with readable arguments."""
    sql, params = search_sql("m", "ab")
    assert sql == ranking_sql(
        "embedding_from_text('m', :q)", "(select id from collections where name = :collection)",
        ":n", ":prefix", ":prefix_end",
    )
    assert params == {"prefix": "ab", "prefix_end": "ac"}


def test_one_collections_summary_for_the_cli_and_datasette(tmp_path):
    """`cap` bounds the count (Datasette); -1 counts all (the CLI); a name that is not
    text is left out only where asked."""
    collection = make(tmp_path, rows=5)
    conn = collection.conn
    conn.execute("insert into collections (name, model) values (x'07', 'm')")
    assert conn.execute(summary_sql(), {"cap": -1}).fetchall() == [
        ("c", VectorModel.model_id, 5), (b"\x07", "m", 0)
    ]
    assert conn.execute(summary_sql(text_names_only=True), {"cap": 3}).fetchall() == [
        ("c", VectorModel.model_id, 3)
    ]


def test_open_or_create_uses_the_default_model_only_for_a_new_collection(tmp_path):
    embsqlite.set_default_embedding_model("hashing")
    made = Collection.open_or_create("new", tmp_path / "a.db")
    assert made.model_id == embsqlite.get_embedding_model("hashing").model_id
    Collection("mine", made.conn, model=VectorModel())
    assert Collection.open_or_create("mine", made.conn).model_id == VectorModel.model_id
    with pytest.raises(ValueError, match="was made with model"):
        Collection.open_or_create("mine", made.conn, model_id="hashing")


# The path of a batch


def test_progress_is_called_for_each_batch_once_its_group_committed(tmp_path):
    collection = make(tmp_path, rows=0)
    other = sqlite3.connect(collection.conn.execute("pragma database_list").fetchone()[2])
    seen = []

    def progress(count):
        seen.append((count, other.execute("select count(*) from embeddings").fetchone()[0]))

    collection.embed_multi_with_metadata(
        ((f"i{n}", f"{n},1,1", None) for n in range(7)), batch_size=3, progress=progress
    )
    assert seen == [(3, 7), (3, 7), (1, 7)]  # one group: committed, then reported
    seen.clear()
    with mock.patch.object(ingest, "GROUP_ROWS", 3):  # a group per batch
        collection.embed_multi_with_metadata(
            ((f"j{n}", f"{n},2,1", None) for n in range(7)), batch_size=3, progress=progress
        )
    assert seen == [(3, 10), (3, 13), (1, 14)]


def test_a_batch_is_planned_embedded_and_written_without_a_collection(tmp_path):
    """plan_batch sends only new content to the model; write_plan writes one
    transaction, checking the dimension inside it; the vectors come from anywhere."""
    collection = make(tmp_path, rows=3)
    conn, model = collection.conn, VectorModel()
    batch = [ingest.check_item(item, n) for n, item in enumerate(
        [("id000", "0,0,1", None), ("copy", "1,1,1", None), ("new", "5,5,5", {"k": 1}),
         ("new2", "5,5,5", None)], 1)]
    plan = ingest.plan_batch(conn, collection.id, batch)
    assert plan.unchanged == {"id000"}
    assert list(plan.to_embed.values()) == ["5,5,5"]  # once, for both ids
    checked = []
    with pytest.raises(ValueError, match="write_plan: 0 vectors for 1 items"):
        ingest.write_plan(conn, collection.id, plan, [], False, checked.append)
    fresh = ingest.embed_values(model, list(plan.to_embed.values()))
    ingest.write_plan(conn, collection.id, plan, fresh, True, checked.append)
    assert checked == [3] and collection.count() == 6
    assert collection.conn.execute(
        "select content, metadata from embeddings where id = 'new'").fetchone() == ("5,5,5", '{"k": 1}')
    assert embsqlite.decode(conn.execute(
        "select embedding from embeddings where id = 'copy'").fetchone()[0]) == (1.0, 1.0, 1.0)


def test_a_dimension_check_that_fails_writes_nothing(tmp_path):
    collection = make(tmp_path, rows=0)
    batch = [ingest.check_item(("a", "1,2", None), 1)]

    def refuse(dimensions):
        raise ValueError(f"no {dimensions}")

    with pytest.raises(ValueError, match="no 2"):
        ingest.write_batch(collection.conn, collection.id, VectorModel, batch, False, refuse)
    assert collection.count() == 0 and not collection.conn.in_transaction
