"""The per-process vector cache: same answers as SQLite, invalidated by any write."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import embsqlite
from embsqlite import cache


class VectorModel(embsqlite.EmbeddingModel):
    """Embeds 'x,y,z' text as that vector, so tests choose their vectors."""

    model_id = "test-literal-vectors"

    def embed_batch(self, items):
        for item in items:
            yield [float(v) for v in item.split(",")]


@pytest.fixture(autouse=True)
def default_budget():
    cache.configure(max_mb=64)
    yield
    cache.configure(max_mb=64)


def filled(path, rows=200, dim=8, name="c", seed=0):
    gen = np.random.default_rng(seed)
    collection = embsqlite.Collection(name, path, model=VectorModel())
    data = gen.standard_normal((rows, dim)).astype(np.float32)
    collection.embed_multi(
        ((f"{'ab'[i % 2]}{i:04d}", ",".join(map(str, row))) for i, row in enumerate(data)),
        store=True,
    )
    return collection, data


def sql_answer(collection, query, number=10, skip_id=None, prefix=None):
    """What the SQL path returns, with the cache switched off."""
    budget = cache.budget_bytes()
    cache.configure(enabled=False)
    try:
        return collection.similar_by_vector(query, number, skip_id=skip_id, prefix=prefix)
    finally:
        cache.configure(max_mb=budget / 2**20)


def test_second_search_loads_the_cache_and_answers_identically(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[3].tolist()
    first = collection.similar_by_vector(query)
    assert collection._cache.token is None  # first search ran in SQLite
    second = collection.similar_by_vector(query)
    # matrix and norms, plus the ids list and its strings
    assert collection._cache.token is not None
    assert 200 * (8 * 4 + 8) < collection._cache.nbytes < 200 * (8 * 4 + 8 + 100)
    assert second == first  # ids, scores (exactly), content and metadata
    for kwargs in ({"prefix": "a"}, {"prefix": "b00"}, {"skip_id": "b0003"}, {"number": 1000},
                   {"prefix": "zz"}, {"prefix": "a", "skip_id": "a0002", "number": 3}):
        collection.similar_by_vector(query)  # reloads after sql_answer() dropped it
        got = collection.similar_by_vector(query, **kwargs)
        assert collection._cache.token is not None
        assert got == sql_answer(collection, query, **kwargs), kwargs
    collection.similar_by_vector(query)
    by_id = collection.similar_by_id("a0010")
    assert collection._cache.token is not None
    assert by_id == sql_answer(collection, data[10].tolist(), skip_id="a0010")


def test_write_through_the_collection_invalidates(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[0].tolist()
    collection.similar_by_vector(query)
    collection.similar_by_vector(query)
    assert collection._cache.token is not None
    collection.embed("new", ",".join(map(str, data[0])))  # a copy of the best match
    got = collection.similar_by_vector(query, 3)
    assert "new" in [e.id for e in got]
    assert got == sql_answer(collection, query, 3)


def test_write_through_another_connection_invalidates(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[0].tolist()
    collection.similar_by_vector(query)
    collection.similar_by_vector(query)
    other = embsqlite.connect(tmp_path / "a.db")
    with other:
        other.execute("delete from embeddings where id = 'a0000'")
    other.close()
    got = collection.similar_by_vector(query, 3)
    assert "a0000" not in [e.id for e in got]
    assert got == sql_answer(collection, query, 3)


def test_write_by_another_process_invalidates(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[5].tolist()
    collection.similar_by_vector(query)
    before = collection.similar_by_vector(query, 1)
    assert before[0].id == "b0005" and collection._cache.token is not None
    script = (
        "import sys, embsqlite\n"
        "c = embsqlite.Collection('c', sys.argv[1])\n"
        "c.conn.execute('update embeddings set embedding = ? where id = ?',"
        " (embsqlite.encode([-v for v in map(float, sys.argv[2].split(','))]), 'b0005'))\n"
        "c.conn.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db"),
                    ",".join(map(str, data[5]))], check=True)
    after = collection.similar_by_vector(query, 1)
    assert after[0].id != "b0005"
    assert after == sql_answer(collection, query, 1)


def test_off_switch_and_budget(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    cache.configure(enabled=False)
    for _ in range(3):
        collection.similar_by_vector(data[0].tolist())
    assert collection._cache.token is None
    cache.configure(max_mb=(200 * (8 * 4 + 8) - 1) / 2**20)  # one byte too small
    for _ in range(3):
        collection.similar_by_vector(data[0].tolist())
    assert collection._cache.token is None
    cache.configure(max_mb=1)
    for _ in range(2):
        collection.similar_by_vector(data[0].tolist())
    assert collection._cache.nbytes == cache.loaded_bytes() > 200 * (8 * 4 + 8)


def test_least_recently_used_cache_is_evicted(tmp_path):
    one, data = filled(tmp_path / "a.db", name="one")
    two, _ = filled(tmp_path / "a.db", name="two")
    for _ in range(2):
        one.similar_by_vector(data[0].tolist())
    size = one._cache.nbytes
    cache.configure(max_mb=size * 1.5 / 2**20)  # room for one collection
    for _ in range(2):
        one.similar_by_vector(data[0].tolist())
    assert one._cache.token is not None
    for _ in range(2):
        two.similar_by_vector(data[0].tolist())
    assert two._cache.token is not None and one._cache.token is None
    assert cache.loaded_bytes() <= cache.budget_bytes()


def test_collections_the_cache_cannot_hold_fall_back_to_sql(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    collection.conn.execute("update embeddings set embedding = null where id = 'a0000'")
    collection.conn.commit()
    query = data[1].tolist()
    for _ in range(3):
        got = collection.similar_by_vector(query, 300)
    assert collection._cache.token is None
    assert len(got) == 199 and "a0000" not in [e.id for e in got]  # no vector: not ranked


def test_cached_search_makes_no_python_call_per_row(tmp_path, python_calls):
    collection, data = filled(tmp_path / "a.db", rows=5000)
    query = data[0].tolist()
    collection.similar_by_vector(query)
    collection.similar_by_vector(query)
    calls, _ = python_calls(lambda: collection.similar_by_vector(query))
    assert collection._cache.token is not None
    assert calls < 200  # a fixed amount of Python per search, none per row (5,000 rows)


def test_mixed_dimensions_are_never_cached(tmp_path):
    """Rows of 2, 3 and 1 values average 2, the first row's: each row must be checked."""
    collection = embsqlite.Collection("m", tmp_path / "m.db", model=VectorModel())
    collection.embed_multi([("a", "1,0"), ("b", "0,1"), ("c", "1,1")])
    conn = collection.conn
    conn.execute("update embeddings set embedding = ? where id = 'b'", (embsqlite.encode([1, 0, 0]),))
    conn.execute("update embeddings set embedding = ? where id = 'c'", (embsqlite.encode([1]),))
    conn.commit()
    for _ in range(3):
        with pytest.raises(Exception, match="different dimensions"):
            collection.similar_by_vector([1.0, 0.0])
    assert collection._cache.token is None


@pytest.mark.parametrize("kind", ["pysqlite3", "apsw"])
def test_cache_on_other_connection_kinds(tmp_path, kind):
    if kind == "apsw":
        import apsw

        conn = apsw.Connection(str(tmp_path / "k.db"))
    else:
        import pysqlite3.dbapi2

        conn = pysqlite3.dbapi2.connect(str(tmp_path / "k.db"))
    collection = embsqlite.Collection("k", conn, model=VectorModel())
    data = np.random.default_rng(4).standard_normal((50, 4)).astype(np.float32)
    collection.embed_multi((str(i), ",".join(map(str, row))) for i, row in enumerate(data))
    first = collection.similar_by_vector(data[7].tolist(), 5)
    cached = collection.similar_by_vector(data[7].tolist(), 5)
    assert collection._cache.token is not None
    assert cached == first and first[0].id == "7"


def test_c_and_python_readers_load_the_same_matrix(tmp_path, monkeypatch):
    """Stdlib connections load through C (embsqlite_read_matrix); others through the
    cursor. Both must give the same ids, bytes and answers."""
    from embsqlite import sql

    collection, data = filled(tmp_path / "a.db", rows=300, dim=16)
    query = data[9].tolist()
    assert sql.native_handle(collection.conn) is not None
    for _ in range(2):
        by_c = collection.similar_by_vector(query, 7)
    c_ids, c_matrix = list(collection._cache._state.ids), bytes(collection._cache._state.matrix)
    collection._cache._drop()
    monkeypatch.setattr(sql, "native_handle", lambda conn: None)
    for _ in range(2):
        by_python = collection.similar_by_vector(query, 7)
    assert collection._cache.token is not None
    assert by_python == by_c
    assert collection._cache._state.ids == c_ids and bytes(collection._cache._state.matrix) == c_matrix
    assert c_ids == sorted(c_ids) and c_matrix == b"".join(
        row[0] for row in collection.conn.execute("select embedding from embeddings order by id")
    )


def test_nothing_is_cached_inside_a_transaction_so_a_rollback_is_seen(tmp_path):
    """total_changes() never goes back down: a cache loaded inside a transaction would
    keep rows that a rollback removed. So inside one, searches run in SQLite."""
    collection, data = filled(tmp_path / "a.db")
    query = data[0].tolist()
    conn = collection.conn
    conn.execute(
        "insert into embeddings (collection_id, id, embedding) values (?, 'ghost', ?)",
        (collection.id, embsqlite.encode(data[0])),
    )
    assert conn.in_transaction
    for _ in range(3):
        assert [e.id for e in collection.similar_by_vector(query, 2)] == ["a0000", "ghost"]
    assert collection._cache.token is None
    conn.rollback()
    for _ in range(3):
        got = collection.similar_by_vector(query, 2)
    assert "ghost" not in [e.id for e in got] and collection._cache.token is not None


def test_ids_sorted_differently_by_sqlite_are_bisected_in_its_order(tmp_path):
    """In a UTF-16 database SQLite's BINARY order is not code point order: the cache keeps
    SQLite's order and bisects it with the same rule (embsqlite/idorder.py)."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "u16.db")
    conn.execute("pragma encoding = 'UTF-16le'")
    collection = embsqlite.Collection("u", conn, model=VectorModel())
    collection.embed_multi([("a", "1,0"), ("ab", "1,1"), ("\u0100", "0,1"), ("\xff", "1,0")])
    results = [collection.similar_by_vector([1.0, 0.0], 5, prefix=p) for p in ("a", "\xff") * 3]
    assert collection._cache.token is not None
    assert [sorted(e.id for e in got) for got in results] == [["a", "ab"], ["\xff"]] * 3
    assert [e.id for e in collection.similar_by_vector([0.0, 1.0], 5)] == ["\u0100", "ab", "a", "\xff"]


def test_an_id_python_cannot_decode_does_not_break_cached_searches(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=20)
    collection.conn.execute(
        "insert into embeddings (collection_id, id, embedding) values (?, cast(x'ff61' as text), ?)",
        (collection.id, embsqlite.encode([-v for v in data[0]])),
    )
    collection.conn.commit()
    query = data[0].tolist()
    for _ in range(3):
        got = collection.similar_by_vector(query, 3)
    assert got[0].id == "a0000" and collection._cache.token is None


def test_a_prefix_sqlite_cannot_bind_is_its_error_not_an_empty_result(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=20)
    for _ in range(2):
        collection.similar_by_vector(data[0].tolist())
    assert collection._cache.token is not None
    with pytest.raises(UnicodeEncodeError):
        collection.similar_by_vector(data[0].tolist(), prefix="a\ud800")


def test_threads_evicting_each_other_get_right_answers(tmp_path):
    """Two threads, each with its own collection, and room for one cache: each load
    evicts the other's while it may be scanning (the C scan runs without the GIL)."""
    import threading

    wants = {}
    for name in ("one", "two"):
        collection, data = filled(tmp_path / f"{name}.db", rows=3000, dim=16, name=name)
        wants[name] = (data[7].tolist(), sql_answer(collection, data[7].tolist(), 5))
        for _ in range(2):
            collection.similar_by_vector(data[7].tolist())
        size = collection._cache.nbytes
        collection.close()
    cache.configure(max_mb=size * 1.5 / 2**20)
    errors, served = [], []

    def worker(name):
        try:
            collection = embsqlite.Collection(name, tmp_path / f"{name}.db")
            query, want = wants[name]
            for _ in range(150):
                assert collection.similar_by_vector(query, 5) == want
                served.append(collection._cache.token is not None)
        except Exception as error:  # reported below, with the thread's name
            errors.append((name, repr(error)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(served) == 300
    assert sum(served) > 30  # the caches really were loaded, and evicted each other
    assert cache.loaded_bytes() <= cache.budget_bytes()
