"""The per-process vector cache: same answers as SQLite, invalidated by any write."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import VectorModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embsqlite
from embsqlite import cache, vectorfile


@pytest.fixture(autouse=True)
def default_budget():
    """The in-memory cache alone: vector files (tests/test_vectorfile.py) are off."""
    cache.configure(max_mb=64)
    vectorfile.configure(enabled=False)
    yield
    cache.configure(max_mb=64)
    vectorfile.configure(enabled=True)


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


def sql_answer_raw(collection, query, number=10):
    """[(id, score bits)] ranked by SQL on the collection's own connection, without
    touching the cache's state."""
    rows = collection.conn.execute(
        "select id, cosine_similarity(embedding, ?) as score from embeddings"
        " where collection_id = ? and embedding is not null order by score desc, id limit ?",
        (embsqlite.encode(query), collection.id, number),
    ).fetchall()
    return [(id_, score.hex()) for id_, score in rows]


def answer(collection, query, number=10):
    """similar_by_vector as [(id, score bits)], comparable with sql_answer_raw."""
    return [(e.id, e.score.hex()) for e in collection.similar_by_vector(query, number)]


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


def test_a_cache_is_evicted_for_a_collection_searched_twice_as_often(tmp_path):
    """With room for one collection, `two` takes the budget from `one` only once it has
    been searched at least twice as often among the recent searches; the budget holds."""
    one, data = filled(tmp_path / "a.db", name="one")
    two, _ = filled(tmp_path / "a.db", name="two")
    for _ in range(2):
        one.similar_by_vector(data[0].tolist())
    size = one._cache.nbytes
    cache.configure(max_mb=size * 1.5 / 2**20)  # room for one collection
    for _ in range(2):
        one.similar_by_vector(data[0].tolist())
    assert one._cache.token is not None
    searches = 0
    while two._cache.token is None and searches < cache._RECENT:
        assert answer(two, data[0].tolist()) == sql_answer_raw(two, data[0].tolist())
        searches += 1
    # one was searched 4 times: two needs 8 of the recent searches
    assert searches == 8 and one._cache.token is None and two._cache.loads == 1
    assert cache.loaded_bytes() <= cache.budget_bytes()


def full_reads(conn):
    """A list that grows by one each time `conn` runs a statement reading a whole
    collection in id order (the cache's load, in C or Python), seen by SQLite's trace."""
    import re

    reads = []
    whole = re.compile(r"embedding\)?\s+from\s+embeddings\s.*order\s+by\s+id\s*$", re.I | re.S)
    conn.set_trace_callback(lambda sql: reads.append(sql) if whole.search(sql) else None)
    return reads


@pytest.mark.parametrize("nulls", [["a0000"], ["a0000", "b0199", "b0101"]])
def test_null_vectors_do_not_prevent_caching(tmp_path, nulls):
    """Rows with a NULL embedding are simply not in the matrix: the collection is loaded
    once and served from the cache, with SQL's answers."""
    collection, data = filled(tmp_path / "a.db")
    collection.conn.executemany(
        "update embeddings set embedding = null where id = ?", [(i,) for i in nulls]
    )
    collection.conn.commit()
    reads = full_reads(collection.conn)
    query = data[1].tolist()
    for number in (3, 300, 300, 5, 300):
        got = answer(collection, query, number)
        assert got == sql_answer_raw(collection, query, number)
    assert collection._cache.token is not None and len(reads) == 1
    assert len(got) == 200 - len(nulls) and not set(nulls) & {i for i, _ in got}
    assert len(collection._cache._state.ids) == 200 - len(nulls)
    assert len(collection._cache._state.matrix) == (200 - len(nulls)) * 8 * 4
    skip = collection.similar_by_id("b0001", 300, prefix="b")
    assert [e.id for e in skip] == [i for i, _ in sql_answer_raw(collection, data[1].tolist(), 300)
                                    if i.startswith("b") and i != "b0001"]
    assert collection._cache.loads == 1


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


@pytest.mark.parametrize("kind", ["pysqlite3", "apsw"])
def test_schema_changes_invalidate_on_other_connection_kinds(tmp_path, kind):
    """Their token has the schema cookies too (and apsw's the file data version)."""
    if kind == "apsw":
        import apsw

        conn = apsw.Connection(str(tmp_path / "k.db"))
    else:
        import pysqlite3.dbapi2

        conn = pysqlite3.dbapi2.connect(str(tmp_path / "k.db"), isolation_level=None)
    collection = embsqlite.Collection("k", conn, model=VectorModel())
    data = np.random.default_rng(4).standard_normal((50, 4)).astype(np.float32)
    collection.embed_multi((f"{i:02d}", ",".join(map(str, row))) for i, row in enumerate(data))
    query = data[7].tolist()
    assert loaded(collection, query)[0][0] == "07"
    conn.execute("create table rebuilt as select * from embeddings where id != '07'")
    conn.execute("alter table embeddings rename to retired")
    conn.execute("alter table rebuilt rename to embeddings")
    for _ in range(3):
        got = answer(collection, query)
        assert got == sql_answer_raw(collection, query) and got[0][0] != "07"
    if kind == "apsw":  # incremental blob I/O moves the file data version
        rowid = list(conn.execute("select rowid from embeddings where id = ?", (got[0][0],)))[0][0]
        with conn.blob_open("main", "embeddings", "embedding", rowid, True) as blob:
            blob.write(embsqlite.encode([-v for v in data[7]]))
        for _ in range(3):
            assert answer(collection, query) == sql_answer_raw(collection, query)
        assert answer(collection, query)[0][0] != got[0][0]


def test_c_and_python_readers_load_the_same_matrix(tmp_path):
    """Stdlib connections load through C (embsqlite_sink); others (pysqlite3, through
    sqlite-utils) through the cursor. Both must give the same ids, bytes and answers."""
    import sqlite_utils

    collection, data = filled(tmp_path / "a.db", rows=300, dim=16)
    collection.conn.execute("update embeddings set embedding = null where id in ('a0002', 'b0299')")
    collection.conn.commit()
    query = data[9].tolist()
    assert collection.conn.execute("select 1 from pragma_function_list where name = 'embsqlite_sink'").fetchone()
    for _ in range(2):
        by_c = collection.similar_by_vector(query, 7)
    c_ids, c_matrix = list(collection._cache._state.ids), bytes(collection._cache._state.matrix)
    other = embsqlite.Collection("c", sqlite_utils.Database(tmp_path / "a.db"), model=VectorModel())
    assert not other.conn.execute(
        "select 1 from pragma_function_list where name = 'embsqlite_sink'").fetchone()
    for _ in range(2):
        by_python = other.similar_by_vector(query, 7)
    assert other._cache.token is not None
    assert by_python == by_c
    assert other._cache._state.ids == c_ids and bytes(other._cache._state.matrix) == c_matrix
    assert c_ids == sorted(c_ids) and len(c_ids) == 298 and c_matrix == b"".join(
        row[0] for row in collection.conn.execute(
            "select embedding from embeddings where embedding is not null order by id")
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


# Every route by which the collection's rows can change must reach the change token.


def loaded(collection, query):
    """Search until the cache serves `query`; the cache's answer."""
    for _ in range(2):
        got = answer(collection, query)
    assert collection._cache.token is not None
    return got


def rebuild_sql(conn, name):
    """The CREATE statement of one of the collection's tables, to re-create it."""
    return conn.execute("select sql from sqlite_master where name = ?", (name,)).fetchone()[0]


def drop_and_recreate_empty(collection):
    conn = collection.conn
    create = rebuild_sql(conn, "embeddings")
    conn.execute("drop table embeddings")
    conn.execute(create)
    conn.commit()


def rename_swap(collection):
    """A rebuilt table (by CREATE TABLE AS: no row counts in total_changes) renamed into place."""
    conn = collection.conn
    conn.execute("create table rebuilt as select * from embeddings where id like 'b%'")
    conn.execute("alter table embeddings rename to old_embeddings")
    conn.execute("alter table rebuilt rename to embeddings")
    conn.commit()


def create_as_select_after_drop(collection):
    conn = collection.conn
    conn.execute("create table keep as select * from embeddings where id < 'a0100'")
    conn.execute("drop table embeddings")
    conn.execute("create table embeddings as select * from keep")
    conn.commit()


def temp_table_shadows(collection):
    """A temp table of the same name hides the collection's table from every query."""
    collection.conn.execute(
        "create temp table embeddings as select * from main.embeddings where id like 'a%'"
    )


def attached_alias_ddl(collection, path):
    conn = collection.conn
    conn.execute("attach database ? as alias", (str(path),))
    conn.execute("create table alias.rebuilt as select * from alias.embeddings where id > 'b'")
    conn.execute("drop table alias.embeddings")
    conn.execute("alter table alias.rebuilt rename to embeddings")
    conn.commit()
    conn.execute("detach database alias")


def blob_write(collection):
    """Incremental blob I/O: negate the best match in place (no change is counted)."""
    conn = collection.conn
    rowid, blob = conn.execute(
        "select rowid, embedding from embeddings where id = 'a0000'"
    ).fetchone()
    flipped = embsqlite.encode([-v for v in embsqlite.decode(blob)])
    with conn.blobopen("embeddings", "embedding", rowid) as handle:
        handle.write(flipped)
    conn.commit()


def backup_into(collection, path):
    """Another database copied over this connection's by the backup API."""
    import sqlite3

    other = sqlite3.connect(path.with_name("other.db"))
    collection.conn.backup(other)
    other.execute("delete from embeddings where id like 'a%'")
    other.commit()
    other.backup(collection.conn)
    other.close()


def vacuum(collection):
    collection.conn.execute("vacuum")


def savepoint_rolled_back_and_released(collection):
    conn = collection.conn
    conn.execute("savepoint s")
    conn.execute("delete from embeddings where id like 'a%'")
    conn.execute("rollback to s")
    conn.execute("update embeddings set embedding = null where id = 'a0000'")
    conn.execute("release s")


def shared_cache_writer(collection, path):
    """A second connection sharing this one's page cache (URI cache=shared)."""
    import sqlite3

    uri = f"file:{path}?cache=shared"
    first = sqlite3.connect(uri, uri=True)
    mine = embsqlite.Collection("c", first)
    loaded(mine, [1.0] * 8)
    second = sqlite3.connect(uri, uri=True)
    second.execute("delete from embeddings where id like 'a%'")
    second.commit()
    second.close()
    return mine


WRITE_ROUTES = {
    "drop and re-create empty": drop_and_recreate_empty,
    "rename a rebuilt table into place": rename_swap,
    "create table as select after a drop": create_as_select_after_drop,
    "temp table shadowing": temp_table_shadows,
    "incremental blob write": blob_write,
    "vacuum": vacuum,
    "savepoint rolled back, then a write released": savepoint_rolled_back_and_released,
}


@pytest.mark.parametrize("route", list(WRITE_ROUTES))
def test_every_write_route_on_the_own_connection_invalidates(tmp_path, route):
    collection, data = filled(tmp_path / "a.db", rows=300)
    query = data[0].tolist()
    before = loaded(collection, query)
    WRITE_ROUTES[route](collection)
    for _ in range(3):  # the first search after the write, then the cache's turns
        assert answer(collection, query) == sql_answer_raw(collection, query)
    assert answer(collection, query) != before or route == "vacuum"


@pytest.mark.parametrize("route", [attached_alias_ddl, backup_into])
def test_writes_through_an_alias_or_the_backup_api_invalidate(tmp_path, route):
    collection, data = filled(tmp_path / "a.db", rows=300)
    query = data[0].tolist()
    before = loaded(collection, query)
    route(collection, tmp_path / "a.db")
    for _ in range(3):
        assert answer(collection, query) == sql_answer_raw(collection, query)
    assert answer(collection, query) != before


def test_a_shared_cache_connection_writing_invalidates(tmp_path):
    filled(tmp_path / "a.db", rows=300)[0].close()
    mine = shared_cache_writer(None, tmp_path / "a.db")
    for _ in range(3):
        got = answer(mine, [1.0] * 8)
        assert got == sql_answer_raw(mine, [1.0] * 8)
    assert not [i for i, _ in got if i.startswith("a")]


def test_deserialize_into_the_connection_invalidates(tmp_path):
    import sqlite3

    collection = embsqlite.Collection("c", sqlite3.connect(":memory:"), model=VectorModel())
    collection.embed_multi([("a", "1,0"), ("b", "0,1")])
    image = collection.conn.serialize()
    collection.conn.execute("delete from embeddings where id = 'a'")
    collection.conn.commit()
    assert loaded(collection, [1.0, 0.0]) == sql_answer_raw(collection, [1.0, 0.0])
    collection.conn.deserialize(image)
    for _ in range(3):
        got = answer(collection, [1.0, 0.0])
        assert got == sql_answer_raw(collection, [1.0, 0.0]) and got[0][0] == "a"


# A collection that cannot be kept is searched in SQLite, never loaded and thrown away.


def test_vectors_that_fit_with_ids_that_do_not_are_never_loaded(tmp_path):
    """The size (vectors, norms and the ids' objects) is known before anything is read."""
    collection = embsqlite.Collection("c", tmp_path / "a.db", model=VectorModel())
    collection.embed_multi((f"{i:04d}" + "x" * 200, f"{i},1,2,3") for i in range(300))
    reads = full_reads(collection.conn)
    vectors = 300 * (4 * 4 + 8)
    cache.configure(max_mb=(vectors + 300 * 100) / 2**20)  # ids need over 200 bytes each
    for _ in range(6):
        assert answer(collection, [1.0, 0, 0, 0]) == sql_answer_raw(collection, [1.0, 0, 0, 0])
    assert reads == [] and collection._cache.loads == 0 and collection._cache.token is None
    cache.configure(max_mb=1)  # now it fits: loaded on the next search, once
    for _ in range(3):
        assert answer(collection, [1.0, 0, 0, 0]) == sql_answer_raw(collection, [1.0, 0, 0, 0])
    assert len(reads) == 1 and collection._cache.token is not None


@pytest.mark.parametrize("ids", [
    ["a", "b", "c"], ["\u00e9t\u00e9", "\u4e2d\u6587", "\U0001f600x", "z"], ["a\x00\u00e9", "b"],
])
def test_the_size_computed_before_loading_bounds_what_is_held(tmp_path, ids):
    collection = embsqlite.Collection("c", tmp_path / "a.db", model=VectorModel())
    collection.embed_multi((id_ * (1 + n), f"{n},1") for n, id_ in enumerate(ids * 30))
    loaded(collection, [1.0, 1.0])
    state = collection._cache._state
    needed = collection._cache._needed(state.token)
    rows = len(state.ids)
    if "\x00" in ids[0]:  # length() stops at the NUL: bounded by the bytes
        assert state.nbytes <= needed <= state.nbytes + 4 * sum(len(i.encode()) for i in state.ids)
    else:  # exact, but for the list's spare slots
        assert state.nbytes <= needed <= state.nbytes + rows + 200


@pytest.mark.parametrize("damage", ["mixed dimensions", "id not UTF-8"])
def test_a_collection_that_fails_to_load_is_not_read_again_until_it_changes(tmp_path, damage):
    collection, data = filled(tmp_path / "a.db", rows=50)
    if damage == "mixed dimensions":
        collection.conn.execute(
            "update embeddings set embedding = ? where id = 'b0049'", (embsqlite.encode([1, 2]),)
        )
    else:
        collection.conn.execute(
            "update embeddings set id = cast(x'62ff' as text) where id = 'b0049'"
        )
    collection.conn.commit()
    reads = full_reads(collection.conn)
    for _ in range(5):
        try:
            collection.similar_by_vector(data[0].tolist(), 3)
        except Exception as error:  # the SQL path reports the bad row, every time
            assert damage == "mixed dimensions" and "dimensions" in str(error)
    assert len(reads) == 1 and collection._cache.token is None
    collection.conn.execute("delete from embeddings where id > 'b0048'")
    collection.conn.commit()
    for _ in range(3):
        assert answer(collection, data[0].tolist()) == sql_answer_raw(collection, data[0].tolist())
    assert len(reads) == 2 and collection._cache.token is not None


def test_collections_over_budget_searched_in_turn_do_not_reload(tmp_path):
    """Two collections, room for one: searched alternately, one stays cached and the
    other is served by SQL; nothing is reloaded per search."""
    one, data = filled(tmp_path / "a.db", name="one", rows=400)
    two, _ = filled(tmp_path / "a.db", name="two", rows=400, seed=1)
    loaded(one, data[0].tolist())
    cache.configure(max_mb=one._cache.nbytes * 1.5 / 2**20)
    one.close()
    one = embsqlite.Collection("one", tmp_path / "a.db")
    two = embsqlite.Collection("two", tmp_path / "a.db")
    reads = [full_reads(one.conn), full_reads(two.conn)]
    for turn in range(40):
        collection = (one, two)[turn % 2]
        query = data[turn % 7].tolist()
        assert answer(collection, query) == sql_answer_raw(collection, query)
        assert cache.loaded_bytes() <= cache.budget_bytes()
    assert len(reads[0]) + len(reads[1]) == 1  # loaded once, kept
    assert (one._cache.token is None) != (two._cache.token is None)


@pytest.mark.parametrize("count, room", [(3, 1), (3, 2), (5, 2)])
def test_collections_searched_round_robin_are_each_loaded_at_most_once(tmp_path, count, room):
    collections = [filled(tmp_path / "a.db", name=f"c{n}", rows=300, seed=n)[0]
                   for n in range(count)]
    query = [0.5] * 8
    loaded(collections[0], query)
    cache.configure(max_mb=(room + 0.5) * collections[0]._cache.nbytes / 2**20)
    for collection in collections:
        collection._cache._drop()
    reads = [full_reads(c.conn) for c in collections]
    for turn in range(12 * count):
        collection = collections[turn % count]
        assert answer(collection, query) == sql_answer_raw(collection, query)
        assert cache.loaded_bytes() <= cache.budget_bytes()
    assert sum(map(len, reads)) == room
    assert sum(c._cache.token is not None for c in collections) == room


def test_a_collection_written_between_searches_is_never_loaded(tmp_path):
    """Each search sees a new token: loading would be wasted, so all run in SQLite."""
    collection, data = filled(tmp_path / "a.db")
    reads = full_reads(collection.conn)
    for n in range(6):
        collection.embed(f"new{n}", ",".join(map(str, data[n])))
        assert answer(collection, data[0].tolist()) == sql_answer_raw(collection, data[0].tolist())
    assert reads == [] and collection._cache.loads == 0


def test_a_collection_with_a_single_reader_still_caches_after_alternation(tmp_path):
    """After alternating, a collection that is then searched alone gets the budget."""
    one, data = filled(tmp_path / "a.db", name="one", rows=400)
    two, _ = filled(tmp_path / "a.db", name="two", rows=400, seed=1)
    loaded(one, data[0].tolist())
    cache.configure(max_mb=one._cache.nbytes * 1.5 / 2**20)
    for turn in range(10):
        answer((one, two)[turn % 2], data[0].tolist())
    kept, other = (one, two) if one._cache.token is not None else (two, one)
    for _ in range(cache._RECENT):
        assert answer(other, data[1].tolist()) == sql_answer_raw(other, data[1].tolist())
    assert other._cache.token is not None and kept._cache.token is None


PEAK_SCRIPT = r"""
import json, re, sys
import embsqlite
from embsqlite import cache

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

collection = embsqlite.Collection("c", sys.argv[1])
query = [1.0] + [0.0] * 383
collection.similar_by_vector(query)  # warm: SQL path, statements prepared
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
base = status("VmRSS")
for _ in range(4):
    collection.similar_by_vector(query)
print(json.dumps({"added": status("VmHWM") - base, "held": cache.loaded_bytes(),
                  "loads": getattr(collection._cache, "loads", -1)}))
"""


@pytest.mark.linux_only(reason="/proc/self/status and clear_refs")
@pytest.mark.parametrize("budget_mb, expect_loaded", [(64, True), (8.6, False)])
def test_peak_memory_stays_within_the_budget(tmp_path, budget_mb, expect_loaded):
    """In a fresh process: the peak RSS added by searches (VmHWM) never exceeds the
    budget, whether the collection fits or only its vectors do (ids of 200 characters)."""
    import json
    import os

    collection = embsqlite.Collection("c", tmp_path / "a.db", model=VectorModel())
    vector = ",".join(["0.5"] * 384)
    collection.embed_multi(((f"{i:05d}" + "i" * 200, vector) for i in range(5600)), batch_size=500)
    collection.close()
    # 5,600 x 384 float32 + norms: 8.65 MB (8.25 MiB); with the ids' strings over 10 MiB
    env = dict(os.environ, EMBSQLITE_CACHE_MB=str(budget_mb), EMBSQLITE_VECTOR_FILES="0")
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "a.db")],
                         env=env, check=True, capture_output=True, text=True).stdout
    peak = json.loads(out)
    assert peak["added"] <= budget_mb * 2**20, peak
    assert (peak["loads"], peak["held"] > 8 * 2**20) == ((1, True) if expect_loaded else (0, False))


# Random writes of every kind, interleaved with searches: each answer equals SQL's.

DIM = 4
WRITES = ["insert", "update", "delete", "null", "drop and re-create", "rename swap",
          "create as select", "second connection", "subprocess", "blob write", "rollback",
          "savepoint", "attached alias", "vacuum"]


def random_write(collection, path, kind, rng, serial):
    """One write of `kind` to the collection's rows, chosen by `rng`."""
    import sqlite3

    conn = collection.conn
    ids = [row[0] for row in conn.execute("select id from embeddings order by id")]
    some = ids[int(rng.integers(len(ids)))] if ids else "none"
    blob = embsqlite.encode(rng.standard_normal(DIM).astype(np.float32))
    if kind == "insert":
        conn.execute("insert into embeddings (collection_id, id, embedding) values (?, ?, ?)",
                     (collection.id, f"n{serial:03d}", blob))
    elif kind == "update":
        conn.execute("update embeddings set embedding = ? where id = ?", (blob, some))
    elif kind == "delete":
        conn.execute("delete from embeddings where id = ?", (some,))
    elif kind == "null":
        conn.execute("update embeddings set embedding = null where id = ?", (some,))
    elif kind == "drop and re-create":
        create = rebuild_sql(conn, "embeddings")
        conn.execute("create temp table saved as select * from embeddings where id > ?", (some,))
        conn.execute("drop table embeddings")
        conn.execute(create)
        conn.execute("insert into embeddings select * from saved")
        conn.execute("drop table temp.saved")
    elif kind == "rename swap":
        conn.execute("create table rebuilt as select * from embeddings where id != ?", (some,))
        conn.execute("alter table embeddings rename to retired")
        conn.execute("alter table rebuilt rename to embeddings")
        conn.execute("drop table retired")
    elif kind == "create as select":
        conn.execute("create table keep as select * from embeddings where id <= ?", (some,))
        conn.execute("drop table embeddings")
        conn.execute("create table embeddings as select * from keep")
        conn.execute("drop table keep")
    elif kind == "second connection":
        other = sqlite3.connect(path)
        other.execute("update embeddings set embedding = ? where id = ?", (blob, some))
        other.execute("delete from embeddings where id > ? and id < ?", (some, some + "1"))
        other.commit()
        other.close()
    elif kind == "subprocess":
        subprocess.run(["sqlite3", str(path),
                        f"update embeddings set embedding = x'{blob.hex()}' where id = '{some}';"
                        f" insert into embeddings (collection_id, id, embedding)"
                        f" values ({collection.id}, 's{serial:03d}', x'{blob.hex()}')"],
                       check=True, timeout=60)
    elif kind == "blob write":
        row = conn.execute("select rowid from embeddings where id = ? and embedding is not null",
                           (some,)).fetchone()
        if row:
            with conn.blobopen("embeddings", "embedding", row[0]) as handle:
                handle.write(blob)
    elif kind == "attached alias":  # the same file under a second name on this connection
        conn.commit()
        conn.execute("attach database ? as alias", (str(path),))
        conn.execute("update alias.embeddings set embedding = ? where id = ?", (blob, some))
        conn.commit()
        conn.execute("detach database alias")
    elif kind == "vacuum":
        conn.commit()
        conn.execute("vacuum")
    elif kind == "rollback":
        conn.commit()
        conn.execute("begin")
        conn.execute("delete from embeddings")
        conn.rollback()
    elif kind == "savepoint":
        conn.commit()
        conn.execute("savepoint s")
        conn.execute("update embeddings set embedding = ? where id = ?", (blob, some))
        conn.execute("release s")
    conn.commit()


def prefixed_sql_answer(collection, query, number, prefix):
    rows = collection.conn.execute(
        "select id, cosine_similarity(embedding, ?) as score from embeddings"
        " where collection_id = ? and embedding is not null and substr(id, 1, length(?)) = ?"
        " order by score desc, id limit ?",
        (embsqlite.encode(query), collection.id, prefix, prefix, number),
    ).fetchall()
    return [(id_, score.hex()) for id_, score in rows]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(WRITES + ["search"] * 6), st.integers(0, 2**32 - 1)),
        min_size=4, max_size=16,
    )
)
def test_random_writes_of_every_kind_never_leave_a_stale_answer(steps):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        collection, _ = filled(path, rows=24, dim=DIM)
        served = 0
        for serial, (kind, seed) in enumerate([("search", 0)] + steps):
            rng = np.random.default_rng(seed)
            if kind != "search":
                random_write(collection, path, kind, rng, serial)
            query = rng.standard_normal(DIM).astype(np.float32).tolist()
            number = int(rng.integers(1, 30))
            prefix = ["", "a", "b0", "n"][int(rng.integers(4))]
            for _ in range(3):  # the SQL path, then the cache's turns
                got = [(e.id, e.score.hex()) for e in collection.similar_by_vector(
                    query, number, prefix=prefix or None)]
                assert got == prefixed_sql_answer(collection, query, number, prefix), kind
                served += collection._cache.token is not None
        collection.close()
    assert served > 0


def test_a_second_deserialize_of_an_image_with_the_same_counters_is_never_stale(tmp_path):
    """Every deserialized image restarts SQLite's counters, so two images must never share
    a cache: a connection with a deserialized database is searched in SQLite."""
    import sqlite3

    def image(vector):
        conn = sqlite3.connect(":memory:")
        collection = embsqlite.Collection("c", conn, model=VectorModel())
        collection.embed_multi([(f"i{i}", f"1,{i},0.5") for i in range(20) if i != 5])
        collection.embed_multi([("i5", vector)])
        return conn.serialize()

    first, second = image("0,0,1"), image("1,5,0.5")
    for conn in (sqlite3.connect(":memory:"), sqlite3.connect(tmp_path / "file.db")):
        conn.deserialize(first)
        collection = embsqlite.Collection("c", conn)
        for _ in range(3):
            assert answer(collection, [0.0, 0.0, 1.0]) == sql_answer_raw(collection, [0.0, 0.0, 1.0])
        conn.deserialize(second)
        for _ in range(3):
            got = answer(collection, [0.0, 0.0, 1.0])
            assert got == sql_answer_raw(collection, [0.0, 0.0, 1.0]) and got[0][0] != "i5"


def test_a_table_in_an_attached_database_is_never_stale(tmp_path):
    """When the collection's tables resolve to an attached database, its commits by
    other connections move the change token too."""
    import sqlite3

    filled(tmp_path / "main.db", rows=50, dim=3)[0].close()
    other, _ = filled(tmp_path / "aux.db", rows=50, dim=3, seed=1)
    conn = sqlite3.connect(tmp_path / "main.db", isolation_level=None)
    collection = embsqlite.Collection("c", conn)
    conn.execute("attach ? as aux", (str(tmp_path / "aux.db"),))
    conn.execute("drop table main.embeddings")  # `embeddings` now names aux.embeddings
    query = [0.0, 0.0, 1.0]
    loaded(collection, query)
    other.conn.execute("update embeddings set embedding = ? where id = 'a0000'",
                       (embsqlite.encode(query),))
    other.conn.commit()
    for _ in range(3):
        got = answer(collection, query)
        assert got == sql_answer_raw(collection, query) and got[0][0] == "a0000"


def test_a_connection_reading_uncommitted_rows_of_a_shared_cache_is_never_stale(tmp_path):
    import sqlite3

    uri = f"file:{tmp_path / 'shared.db'}?cache=shared"
    mine = sqlite3.connect(uri, uri=True, isolation_level=None)
    other = sqlite3.connect(uri, uri=True, isolation_level=None)
    collection = embsqlite.Collection("c", mine, model=VectorModel())
    collection.embed_multi([(f"i{i}", f"1,{i},0.5") for i in range(20)])
    query = [0.0, 0.0, 1.0]
    loaded(collection, query)
    mine.execute("pragma read_uncommitted = 1")
    other.execute("begin")
    other.execute("update embeddings set embedding = ? where id = 'i7'", (embsqlite.encode(query),))
    try:
        for _ in range(3):
            got = answer(collection, query)
            assert got == sql_answer_raw(collection, query) and got[0][0] == "i7"
    finally:
        other.execute("rollback")
