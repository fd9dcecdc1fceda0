"""prefix= searches in every text encoding SQLite has: the same ids as str.startswith,
from SQL and from the vector cache, through the primary-key index."""
from __future__ import annotations

import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embsqlite
from embsqlite import idorder

ENCODINGS = ["UTF-8", "UTF-16le", "UTF-16be"]
# Characters whose order differs between the encodings: UTF-16LE compares the low byte
# first (U+00FF after U+0100), UTF-16 puts U+10000.. before U+E000..; and the neighbours
# of the surrogate range, of byte boundaries and of the last code point.
TRICKY = [
    "a", "b", "\x01", "\x7f", "\x80", "\xff", "\u0100", "\u01ff", "\u0200", "\u02ff",
    "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uff00", "\ufffe", "\uffff", "\U00010000",
    "\U0001f600", "\U0001f6ff", "\U000103ff", "\U00010400", "\U0010fc00", "\U0010ffff",
]
PREFIXES = TRICKY + [
    "", "a\uffff", "\U0010ffff\U0010ffff", "\uffff\uffff", "\ud7ff\U0010ffff", "\u0100a",
    "\U0001f600\U0001f600", "\xff\xff", "ab",
]


def make_ids(seed: int, count: int = 400, alphabet: list[str] = TRICKY) -> list[str]:
    gen = random.Random(seed)
    ids = {"".join(gen.choice(alphabet) for _ in range(gen.randint(1, 4))) for _ in range(count)}
    return sorted(ids | set(alphabet))


# What Python can store in every encoding: SQLite's conversion from UTF-8 to UTF-16 turns
# U+FFFE and U+FFFF into U+FFFD.
STORABLE = [c for c in TRICKY if c not in "\ufffe\uffff"]


def connect(path, encoding: str) -> sqlite3.Connection:
    conn = embsqlite.connect(path)
    conn.execute(f"pragma encoding = '{encoding}'")
    return conn


def insert_ids(conn, ids) -> None:
    conn.execute("create table t (id text primary key)")
    conn.executemany("insert into t values (?)", [(i,) for i in ids])


def select_prefix(conn, prefix: str, encoding: str) -> set[str]:
    """The ids a Collection's search keeps for `prefix`, by the same rules."""
    if not idorder.searchable(prefix, encoding):
        return set()
    low, high = idorder.prefix_range(prefix, encoding)
    where, params = "id >= ?", [low]
    if high is not None:
        where, params = where + " and id < ?", params + [high]
    return {r[0] for r in conn.execute(f"select id from t where {where}", params)}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sort_key_is_sqlite_order(tmp_path, encoding):
    """The model of SQLite's order everything else rests on."""
    conn = connect(tmp_path / "order.db", encoding)
    assert idorder.database_encoding(conn) == encoding
    ids = make_ids(1, alphabet=STORABLE)
    insert_ids(conn, ids)
    in_sqlite = [r[0] for r in conn.execute("select id from t order by id")]
    assert in_sqlite == sorted(ids, key=idorder.sort_key(encoding))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_prefix_range_selects_exactly_startswith(tmp_path, encoding):
    conn = connect(tmp_path / "range.db", encoding)
    ids = make_ids(2, alphabet=STORABLE)
    insert_ids(conn, ids)
    assert {r[0] for r in conn.execute("select id from t")} == set(ids)  # stored unchanged
    for prefix in PREFIXES + make_ids(3, 60):
        assert select_prefix(conn, prefix, encoding) == {i for i in ids if i.startswith(prefix)}, (
            prefix, idorder.prefix_range(prefix, encoding))


def test_utf16_orders_are_not_code_point_order():
    """The cases that made code point bounds wrong: '\\u0100' matched '\\u0200x' in
    UTF-16LE and '\\xff' matched nothing."""
    assert idorder.prefix_range("\u0100", "UTF-16le") == ("\u0100", "\u0200")  # 00 01 < 00 02
    assert idorder.prefix_range("\xff", "UTF-16le") == ("\xff", "\u01ff")
    assert idorder.prefix_range("\ud7ff", "UTF-16be") == ("\ud7ff", "\U00010000")
    assert idorder.prefix_range("\U0010ffff", "UTF-16be") == ("\U0010ffff", "\ue000")
    assert idorder.prefix_range("\uffff", "UTF-16le") == ("\uffff", None)
    assert idorder.prefix_range("a\U0010ffff", "UTF-8") == ("a\U0010ffff", "b")


def collection_with(tmp_path, encoding: str, ids: list[str]) -> embsqlite.Collection:
    conn = connect(tmp_path / f"{encoding}.db", encoding)
    docs = embsqlite.Collection("docs", conn, model_id="hashing")
    docs.embed_multi([(i, f"item {n} {i}") for n, i in enumerate(ids)])
    # a second collection around it, so the range must also keep to collection_id
    other = embsqlite.Collection("other", conn, model_id="hashing")
    other.embed_multi([(i, f"other {n}") for n, i in enumerate(ids[:50])])
    return docs


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_collection_prefix_search_from_sql_and_from_the_cache(tmp_path, encoding, sql_and_cache_only):
    ids = make_ids(4, 300, STORABLE)
    docs = collection_with(tmp_path, encoding, ids)
    query = docs.model().embed("item")
    for prefix in PREFIXES:
        want = sorted(i for i in ids if i.startswith(prefix))
        first = docs.similar_by_vector(query, number=len(ids), prefix=prefix)  # SQL
        second = docs.similar_by_vector(query, number=len(ids), prefix=prefix)  # the cache
        if idorder.searchable(prefix, encoding):
            assert docs._cache.token is not None, "the second search must come from the cache"
        assert sorted(e.id for e in first) == want, (prefix, encoding)
        assert [(e.id, e.score) for e in second] == [(e.id, e.score) for e in first]
        docs._cache._drop()  # the next prefix starts from SQL again
    # the id ties are broken in SQLite's order in both
    skip = ids[len(ids) // 2]
    ranked = docs.similar_by_vector([1.0] * 256, number=5, skip_id=skip)
    again = docs.similar_by_vector([1.0] * 256, number=5, skip_id=skip)
    assert [e.id for e in ranked] == [e.id for e in again] and skip not in [e.id for e in ranked]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_prefix_search_uses_the_primary_key(tmp_path, encoding, sql_and_cache_only):
    """The search statement a Collection runs, with its bounds, is a range on the index."""
    ids = make_ids(5, 50, STORABLE)
    docs = collection_with(tmp_path, encoding, ids)
    statements: list[str] = []
    docs.conn.set_trace_callback(statements.append)
    docs.similar_by_vector([1.0] * 256, number=3, prefix="\xff")
    docs.conn.set_trace_callback(None)
    (search,) = [s for s in statements if "cosine_similarity" in s]
    plan = " ".join(str(row[-1]) for row in docs.conn.execute("explain query plan " + search))
    assert "INDEX sqlite_autoindex_embeddings_1 (collection_id=? AND id>? AND id<?)" in plan


stored_text = st.text(alphabet=st.sampled_from(STORABLE), max_size=4)
any_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=4)


@settings(max_examples=200, deadline=None)
@given(encoding=st.sampled_from(ENCODINGS), ids=st.sets(stored_text, max_size=30), prefix=any_text)
def test_prefix_range_property(encoding, ids, prefix):
    conn = sqlite3.connect(":memory:")
    conn.execute(f"pragma encoding = '{encoding}'")
    insert_ids(conn, ids)
    assert select_prefix(conn, prefix, encoding) == {i for i in ids if i.startswith(prefix)}
    key = idorder.sort_key(encoding)
    assert [r[0] for r in conn.execute("select id from t order by id")] == sorted(ids, key=key)
