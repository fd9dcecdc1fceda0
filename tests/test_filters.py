"""Filtered search (`where=`/`where_args=`/`metadata=`): every result compared with brute
force (all rows fetched, filtered in Python, ranked with `vectors.cosine`, which gives the
C function's bits), in SQL and through the vector cache; the filter's errors and the
expressions that try to leave their parentheses."""
from __future__ import annotations

import json
import math
import random
import sqlite3

import pytest
from conftest import VectorModel

import embsqlite
from embsqlite import cache, filters, vectorfile, vectors
from embsqlite.filters import FilterError

KINDS = ["pet", "car", "tree", None]
# Stored metadata beyond what embed writes: not JSON, NaN (not strict JSON), not an object
# (results parse metadata with json.loads, so the row that is not JSON has no embedding)
ODD_METADATA = ['{"kind": "pet", "x": NaN}', '[1, 2]', '"pet"', '{"kind": {"a": 1}}',
                '{"kind": ["pet"]}', '{"n": 1e400}']
ODD_KEYS = ["a.b", 'q"uote', "caf\u00e9", "back\\slash", "", "[0]", "$", "with space"]


def strict_json(text):
    """Stored metadata as SQLite's json_valid reads it: strict JSON, else None."""
    if text is None:
        return None

    def refuse(constant):
        raise ValueError(constant)

    try:
        value = json.loads(text, parse_constant=refuse)
    except ValueError:
        return None
    if any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(value)):
        return None
    return value


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def metadata_equal(text, wanted: dict) -> bool:
    """The rule of `metadata=`, written out in Python."""
    stored = strict_json(text)
    if not isinstance(stored, dict):
        return False
    for key, value in wanted.items():
        if key not in stored:
            return False
        found = stored[key]
        if value is None or isinstance(value, bool):
            if found is not value:
                return False
        elif isinstance(value, str):
            if not isinstance(found, str) or found != value:
                return False
        elif isinstance(found, bool) or not isinstance(found, (int, float)) or found != value:
            return False
    return True


def make_collection(path, rng: random.Random, count: int = 160):
    """Vectors from a small set of values (many equal scores), metadata of every JSON
    type, a few NULL embeddings and odd stored metadata."""
    collection = embsqlite.Collection("things", str(path), model=VectorModel())
    items = []
    for i in range(count):
        vector = ",".join(str(rng.choice([-1, 0, 1, 2])) for _ in range(4))
        if vector == "0,0,0,0" and i % 2:
            vector = "1,0,0,0"
        meta = {"kind": rng.choice(KINDS), "n": rng.choice([1, 2, 2.0, 2.5, 3, True, "2"]),
                "flag": rng.choice([True, False, None]),
                rng.choice(ODD_KEYS): rng.choice(["x", 1, None, True])}
        if i % 5 == 0:
            del meta["kind"]
        items.append((f"{'ab'[i % 2]}{i:03d}", vector, None if i % 11 == 0 else meta))
    collection.embed_multi_with_metadata(items, store=True)
    conn = collection.conn
    with conn:
        for i, text in enumerate(ODD_METADATA):
            conn.execute("update embeddings set metadata = ? where id = ?", (text, items[3 + 7 * i][0]))
        conn.execute("update embeddings set embedding = null where id in (?, ?)", (items[4][0], items[9][0]))
        conn.execute("update embeddings set metadata = '{not json' where id = ?", (items[4][0],))
    return collection


def brute_force(collection, query: bytes, number: int, keep, prefix=None, skip_id=None):
    """[(id, score)]: every row fetched, `keep(row)` (a dict of the row's columns) in Python."""
    cursor = collection.conn.execute(
        "select rowid, id, content, content_blob, metadata, updated, embedding from embeddings"
        " where collection_id = ?", (collection.id,))
    names = [d[0] for d in cursor.description]
    ranked = []
    q = vectors.decode(query)
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        if row["embedding"] is None or not keep(row):
            continue
        if prefix is not None and not row["id"].startswith(prefix):
            continue
        if row["id"] == skip_id:
            continue
        ranked.append((row["id"], vectors.cosine(vectors.decode(row["embedding"]), q)))
    ranked.sort(key=lambda pair: (-pair[1], pair[0]))
    return ranked[:number]


def found(entries):
    return [(e.id, e.score.hex()) for e in entries]


def expected(pairs):
    return [(i, s.hex()) for i, s in pairs]


@pytest.fixture
def things(tmp_path, rng):
    collection = make_collection(tmp_path / "things.db", rng)
    yield collection
    collection.close()


@pytest.fixture(params=["sql", "cache", "file"])
def searched(request, things):
    """`things`, searched in SQL only, through the in-memory vector cache (loaded), or
    through the vector file beside the database; the test's searches must stay there."""
    if request.param != "file":
        vectorfile.configure(enabled=False)
    if request.param == "sql":
        cache.configure(enabled=False)
    for _ in range(2):
        things.similar_by_vector(QUERY_LIST, 1)
    yield things
    vectorfile.configure(enabled=True)
    cache.configure(enabled=True)
    assert (things._cache.token is not None) == (request.param == "cache")
    assert (things._vectors.builds > 0) == (request.param == "file")


QUERY = vectors.encode([1.0, 0.5, -1.0, 2.0])
QUERY_LIST = vectors.decode(QUERY)

# Stored metadata that is not JSON makes json_extract raise: the tests' filters skip it
VALID = "(case when json_valid(metadata) then metadata end)"
# (where, where_args, the same condition in Python)
WHERE_CASES = [
    (f"json_extract({VALID}, '$.kind') = ?", ["pet"],
     lambda r: isinstance(strict_json(r["metadata"]), dict) and strict_json(r["metadata"]).get("kind") == "pet"),
    (f"json_extract({VALID}, '$.kind') = :kind", {"kind": "car", "unused": 1},
     lambda r: isinstance(strict_json(r["metadata"]), dict) and strict_json(r["metadata"]).get("kind") == "car"),
    ("id > ?2 and id < ?1", ["b100", "a050"], lambda r: "a050" < r["id"] < "b100"),
    ("id like :p or content = :c", {"p": "a1%", "c": "1,1,1,1"},
     lambda r: r["id"].lower().startswith("a1") or r["content"] == "1,1,1,1"),
    ("metadata is null", None, lambda r: r["metadata"] is None),
    ("rowid % 3 = 0 and updated > 0", [], lambda r: r["rowid"] % 3 == 0 and r["updated"] > 0),
    ("content_blob is null and content != '1) or (1 -- ; /* \"'", None,
     lambda r: r["content_blob"] is None and r["content"] != "1) or (1 -- ; /* \""),
    ("embeddings.id in (select id from embeddings where id glob '*7')", None, lambda r: r["id"].endswith("7")),
    ("0", None, lambda r: False),
]


@pytest.mark.parametrize("where, where_args, keep", WHERE_CASES)
def test_where_matches_brute_force(searched, where, where_args, keep):
    for number in (1, 5, 200):
        got = searched.similar_by_vector(QUERY_LIST, number, where=where, where_args=where_args)
        assert found(got) == expected(brute_force(searched, QUERY, number, keep))


def test_where_with_prefix_and_skip_id(searched):
    things = searched
    keep = WHERE_CASES[0][2]
    got = things.similar_by_id("a002", 20, prefix="a", where=WHERE_CASES[0][0], where_args=["pet"])
    stored = things.conn.execute("select embedding from embeddings where id = 'a002'").fetchone()[0]
    assert found(got) == expected(brute_force(things, stored, 20, keep, prefix="a", skip_id="a002"))
    got = things.similar_by_vector(QUERY_LIST, 20, skip_id="b001", prefix="b", metadata={"flag": True})
    assert found(got) == expected(brute_force(
        things, QUERY, 20, lambda r: metadata_equal(r["metadata"], {"flag": True}), prefix="b", skip_id="b001"))
    assert all(e.id.startswith("b") and e.metadata["flag"] is True for e in got)


def test_similar_embeds_the_text_and_filters(things):
    got = things.similar("1,0.5,-1,2", 7, "a", where=f"json_extract({VALID}, '$.n') = ?", where_args=[2])
    keep = lambda r: isinstance(strict_json(r["metadata"]), dict) and strict_json(r["metadata"]).get("n") == 2  # noqa: E731
    assert found(got) == expected(brute_force(things, QUERY, 7, keep, prefix="a"))


@pytest.mark.parametrize("wanted", [
    {"kind": "pet"}, {"kind": None}, {"n": 2}, {"n": 2.0}, {"n": 2.5}, {"n": True}, {"n": "2"},
    {"flag": False}, {"flag": None}, {"kind": "pet", "flag": True}, {"n": 1, "kind": "tree"},
    *({key: value} for key in ODD_KEYS for value in ("x", 1, None, True)),
    {"missing": None}, {"kind": '{"a":1}'}, {"kind": '["pet"]'}, {"n": 10**20 // 10**2},
])
def test_metadata_equality_matches_brute_force(searched, wanted):
    things = searched
    got = things.similar_by_vector(QUERY_LIST, 200, metadata=wanted)
    assert found(got) == expected(brute_force(things, QUERY, 200, lambda r: metadata_equal(r["metadata"], wanted)))


def test_metadata_types_distinguished(things):
    """True is not 1, "2" is not 2, 2 is 2.0, None needs the key present."""
    def ids(wanted):
        return {e.id for e in things.similar_by_vector(QUERY_LIST, 500, metadata=wanted)}

    assert ids({"n": 2}) == ids({"n": 2.0}) and ids({"n": 2})
    assert ids({"n": True}) and not ids({"n": True}) & ids({"n": 1})
    assert ids({"n": "2"}) and not ids({"n": "2"}) & ids({"n": 2})
    assert not ids({"missing": None}) and ids({"kind": None})


def test_metadata_and_where_combine(searched):
    things = searched
    wanted = {"flag": False}
    got = things.similar_by_vector(QUERY_LIST, 50, prefix="a", where="id < :top", where_args={"top": "a100"},
                                   metadata=wanted)
    keep = lambda r: metadata_equal(r["metadata"], wanted) and r["id"] < "a100"  # noqa: E731
    assert found(got) == expected(brute_force(things, QUERY, 50, keep, prefix="a"))


@pytest.mark.parametrize("wanted, error", [
    ({"kind": ["pet"]}, TypeError), ({"kind": {"a": 1}}, TypeError), ({1: "x"}, TypeError),
    ({"n": float("nan")}, ValueError), ({"n": float("inf")}, ValueError), ({"n": 2**63}, ValueError),
    ({}, ValueError), (["kind"], TypeError), ({"kind": "\ud800"}, ValueError),
])
def test_metadata_refused(things, wanted, error):
    with pytest.raises(error, match="metadata"):
        things.similar_by_vector(QUERY_LIST, 5, metadata=wanted)


@pytest.mark.parametrize("where, where_args, message", [
    ("nosuch > 1", None, "no such column: nosuch"),
    ("score > 0", None, "no such column: score"),
    ("id = = 1", None, "syntax error"),
    ("id = ?", None, "1 positional parameter"),
    ("id = ?", [1, 2], "has 2 value"),
    ("id = :x", {"y": 1}, "no value for parameter :x"),
    ("id = :x", ["a"], "named: pass where_args as a dict"),
    ("id = ?", {"x": 1}, "positional: pass where_args as a sequence"),
    ("id = ?", [[1]], "type SQLite cannot bind"),
    ("id = ?", [2**64], "64-bit"),
    ("id = ?0", [1], "out of range"),
    ("id = :x::y", {"x": 1}, "unsupported parameter"),
    ("id = $x(1)", {"x": 1}, "unsupported parameter"),
    ("id = #1", None, "unsupported parameter"),
    ("count(*) > 1", None, "misuse of aggregate"),
    ("no_such_function(id)", None, "no such function"),
    ("   ", None, "empty"),
    ("embsqlite_mark(1, rowid) is null", None, "embsqlite's own"),
    ("\"EMBSQLITE_SINK\"(1, 0, embedding) is null", None, "embsqlite's own"),
    ("embsqlite_sink_append(1, rowid, embedding) is null", None, "embsqlite's own"),
])
def test_bad_filters_name_the_expression(things, where, where_args, message):
    with pytest.raises(FilterError, match=message) as raised:
        things.similar_by_vector(QUERY_LIST, 5, where=where, where_args=where_args)
    assert repr(where) in str(raised.value)


def test_runtime_errors_name_the_expression(things):
    """An error while evaluating (not compiling) the filter names it, not the ranking."""
    things.conn.execute("update embeddings set metadata = '{not json' where id = 'a001'")
    with pytest.raises(FilterError, match="malformed JSON") as raised:
        things.similar_by_vector(QUERY_LIST, 5, where="json_extract(metadata, '$.kind') = 'pet'")
    assert "json_extract(metadata" in str(raised.value)


ESCAPES = [
    "1) or (1", "1)) or ((1", "1) union select 1, 2, 3, 4 from collections where (1",
    "1 -- ", "1 /* x */", "1 /*", "1; delete from embeddings", "1;", "id = 'a", 'id = "a', "id = [a",
    "id = `a", ")", "(", "1) --", "0) or 1 or (0", "1) limit 1000 --", "1\x00) or (1",
]


@pytest.mark.parametrize("where", ESCAPES)
def test_escapes_refused(things, where):
    before = things.conn.execute("select count(*), total(length(metadata)) from embeddings").fetchone()
    with pytest.raises(FilterError) as raised:
        things.similar_by_vector(QUERY_LIST, 5, where=where)
    assert repr(where)[:40] in str(raised.value)
    assert things.conn.execute("select count(*), total(length(metadata)) from embeddings").fetchone() == before


def test_literals_may_hold_what_escapes_use(things):
    """Quotes, brackets, comments and ';' inside string literals and quoted identifiers
    are data; the parameters of the statement around the filter are out of reach."""
    where = "content not in ('1) or (1', ';', '--', '/*', ')', '''') and \"id\" != ']' and [id] != ?"
    got = things.similar_by_vector(QUERY_LIST, 30, where=where, where_args=["a000"])
    assert found(got) == expected(brute_force(things, QUERY, 30, lambda r: r["id"] != "a000"))
    # ?1 is the filter's own first value, not the statement's query vector
    assert things.similar_by_vector(QUERY_LIST, 5, where="?1 is not null", where_args=[None]) == []
    assert len(things.similar_by_vector(QUERY_LIST, 5, where="?1 is not null and ?2", where_args=[1, 1])) == 5


def test_filter_arguments_are_keyword_only(things):
    with pytest.raises(TypeError):
        things.similar_by_vector(QUERY_LIST, 5, None, None, "1")  # type: ignore[misc]
    with pytest.raises(TypeError):
        things.similar("1,1,1,1", 5, None, "1")  # type: ignore[misc]
    with pytest.raises(ValueError, match="where_args was given without"):
        things.similar_by_vector(QUERY_LIST, 5, where_args=[1])
    with pytest.raises(TypeError, match="where must be a str"):
        things.similar_by_vector(QUERY_LIST, 5, where=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="where_args must be a sequence"):
        things.similar_by_vector(QUERY_LIST, 5, where="id = ?", where_args="a")


def test_a_bad_filter_is_refused_before_the_model_runs(tmp_path, counting_model):
    collection = embsqlite.Collection("counted", str(tmp_path / "c.db"), model=counting_model)
    collection.embed("a", "some text")
    sent = len(counting_model.items)
    with pytest.raises(FilterError, match="no such column"):
        collection.similar("query text", where="nosuch = 1")
    with pytest.raises(FilterError, match="no value for parameter"):
        collection.similar("query text", where="id = :x", where_args={})
    assert len(counting_model.items) == sent
    assert [e.id for e in collection.similar("query text", where="id = 'a'")] == ["a"]


def test_number_zero_still_checks_the_filter(things):
    assert things.similar_by_vector(QUERY_LIST, 0, where="1") == []
    with pytest.raises(FilterError, match="no such column"):
        things.similar_by_vector(QUERY_LIST, 0, where="nosuch")


def test_filters_on_a_pysqlite3_connection(tmp_path, rng):
    """Errors of another driver are reported the same way."""
    dbapi2 = pytest.importorskip("pysqlite3.dbapi2")
    make_collection(tmp_path / "p.db", rng).close()
    conn = dbapi2.connect(str(tmp_path / "p.db"))
    collection = embsqlite.Collection("things", conn)
    with pytest.raises(FilterError, match="no such column"):
        collection.similar_by_vector(QUERY_LIST, 5, where="nosuch")
    got = collection.similar_by_vector(QUERY_LIST, 9, metadata={"kind": "tree"})
    assert found(got) == expected(brute_force(collection, QUERY, 9, lambda r: metadata_equal(r["metadata"], {"kind": "tree"})))
    conn.close()


def test_tokens_follow_sqlite():
    """The filter's view of where each token ends agrees with SQLite's tokenizer on the
    cases that differ between SQL dialects."""
    for where in ["'it''s'", '"a""b"', "[a\"b]", "`a``b`", "x'00'", "a$b", "1.5e-3", "-1- -1", "'--'", "'/*'"]:
        filters.parse_where(where)
        assert sqlite3.complete_statement(f"select {where};")
    parsed = filters.parse_where("a = :x and b = @x and c = $y and :x", {"x": 1, "y": 2})
    assert parsed.values == (1, 2) and parsed.render(lambda i: f"?{i + 7}") == "a = ?7 and b = ?7 and c = ?8 and ?7"


def cli(*args: str):
    from click.testing import CliRunner

    from embsqlite.cli import cli as command

    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def test_cli_where_and_param(things, tmp_path):
    path = str(tmp_path / "things.db")
    embsqlite.register_embedding_model(VectorModel())
    where = f"json_extract({VALID}, '$.kind') = :kind and id >= :low"
    result = cli("similar", "things", "-d", path, "-c", "1,0.5,-1,2", "-n", "8",
                 "--where", where, "--param", "kind", "tree", "--param", "low", "a050")
    assert result.exit_code == 0, result.output
    keep = lambda r: (isinstance(strict_json(r["metadata"]), dict)  # noqa: E731
                      and strict_json(r["metadata"]).get("kind") == "tree" and r["id"] >= "a050")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(d["id"], d["score"].hex()) for d in lines] == expected(brute_force(things, QUERY, 8, keep))
    by_id = cli("similar", "things", "a002", "-d", path, "--prefix", "b", "--metadata-filter", '{"flag": true}')
    stored = things.conn.execute("select embedding from embeddings where id = 'a002'").fetchone()[0]
    keep = lambda r: metadata_equal(r["metadata"], {"flag": True})  # noqa: E731
    assert [json.loads(line)["id"] for line in by_id.output.splitlines()] == [
        i for i, _ in brute_force(things, stored, 10, keep, prefix="b", skip_id="a002")]
    plain = cli("similar", "things", "a002", "-d", path, "-p", "-n", "1", "--where", "id = :i", "--param", "i", "b005")
    assert plain.exit_code == 0 and plain.output.startswith("b005 (")


@pytest.mark.parametrize("args, message", [
    (["--where", "nosuch = 1"], "Error: filter 'nosuch = 1': no such column: nosuch"),
    (["--where", "1) or (1"], "Error: filter '1) or (1': ')' closes a parenthesis"),
    (["--where", "id = :x"], "Error: filter 'id = :x': no value for parameter :x in --param"),
    (["--where", "id = ?", "--param", "x", "1"],
     "Error: filter 'id = ?': parameter ? is positional: use :name parameters, their values from --param"),
    (["--param", "x", "1"], "Error: --param needs --where"),
    (["--metadata-filter", "[1]"], "Error: --metadata-filter must be a JSON object"),
    (["--metadata-filter", "{"], "Error: --metadata-filter is not valid JSON"),
    (["--metadata-filter", '{"a": [1]}'], "Error: metadata value of 'a' must be str, int, float, bool or None"),
])
def test_cli_filter_errors_are_one_line(things, tmp_path, args, message):
    embsqlite.register_embedding_model(VectorModel())
    for target in (["-c", "1,1,1,1"], ["a002"]):
        result = cli("similar", "things", *target, "-d", str(tmp_path / "things.db"), *args)
        assert result.exit_code in (1, 2)
        assert result.output.strip().splitlines() == [message] or result.output.startswith(message)


# Through the vector cache: SQL marks the rows the filter keeps, C ranks only those


def statements_of(collection, action):
    """The statements `action` runs on the collection's connection, and its result."""
    seen = []
    collection.conn.set_trace_callback(seen.append)
    try:
        result = action()
    finally:
        collection.conn.set_trace_callback(None)
    return seen, result


CACHE_CASES = [
    (dict(where=WHERE_CASES[0][0], where_args=["pet"]), WHERE_CASES[0][2]),
    (dict(where=WHERE_CASES[2][0], where_args=WHERE_CASES[2][1]), WHERE_CASES[2][2]),
    (dict(metadata={"n": 2}), lambda r: metadata_equal(r["metadata"], {"n": 2})),
    (dict(metadata={"caf\u00e9": None, "flag": False}),
     lambda r: metadata_equal(r["metadata"], {"caf\u00e9": None, "flag": False})),
    (dict(where="0"), lambda r: False),
    (dict(where="1"), lambda r: True),
]


def test_cached_filtered_search_matches_brute_force(things, sql_and_cache_only):
    query = [1.0, 0.5, -1.0, 2.0]
    things.similar_by_vector(query, 3)
    things.similar_by_vector(query, 3)  # loads the cache
    assert things._cache.loads == 1 and things._cache.token is not None
    for arguments, keep in CACHE_CASES:
        for prefix, skip_id, number in ((None, None, 200), ("a", "a002", 7), ("b1", None, 3)):
            seen, got = statements_of(things, lambda: things.similar_by_vector(
                query, number, skip_id, prefix, **arguments))  # noqa: B023
            assert found(got) == expected(brute_force(things, QUERY, number, keep, prefix=prefix, skip_id=skip_id))
            assert not any("cosine_similarity" in s for s in seen), seen  # ranked in C
    assert things._cache.loads == 1


def test_cached_subset_is_reused_until_the_database_changes(things, tmp_path, sql_and_cache_only):
    query = [1.0, 0.5, -1.0, 2.0]
    for _ in range(2):
        things.similar_by_vector(query, 3)
    arguments = dict(where=f"json_extract({VALID}, '$.flag') = ?", where_args=[1], metadata={"kind": "car"})

    def keep(r):
        return metadata_equal(r["metadata"], {"kind": "car", "flag": True})

    def marking(seen):
        return [s for s in seen if "embsqlite_mark" in s]

    seen, first = statements_of(things, lambda: things.similar_by_vector(query, 50, **arguments))
    assert len(marking(seen)) == 1
    seen, again = statements_of(things, lambda: things.similar_by_vector([2.0, 0, 1, 1], 50, **arguments))
    assert marking(seen) == [] and not any("cosine_similarity" in s for s in seen)
    assert found(again) == expected(brute_force(things, vectors.encode([2.0, 0, 1, 1]), 50, keep))
    # 1, 1.0 and True are different parameters to SQL (typeof): never mixed up
    for value in (1, 1.0, True, "1"):
        got = things.similar_by_vector(query, 200, where="typeof(?) = 'integer' and metadata is not null",
                                       where_args=[value])
        assert len(got) == (0 if isinstance(value, (float, str)) else len(brute_force(
            things, QUERY, 200, lambda r: r["metadata"] is not None)))
    # an expression that may pick other rows with no change to the database is evaluated again
    for _ in range(2):
        seen, _ = statements_of(things, lambda: things.similar_by_vector(query, 5, where="random() is not null"))
        assert len(marking(seen)) == 1
    # another connection writes: the next search sees it (in SQL, then from a new load)
    other = sqlite3.connect(str(tmp_path / "things.db"))
    with other:
        other.execute("""update embeddings set metadata = '{"kind": "car", "flag": true}' where id = 'a000'""")
    other.close()
    assert things._cache.loads == 1
    for _ in range(3):
        got = things.similar_by_vector(query, 50, **arguments)
        assert found(got) == expected(brute_force(things, QUERY, 50, keep))
        assert "a000" in [e.id for e in got]
    assert things._cache.loads == 2


def test_cached_filter_errors_are_the_sql_paths(things, sql_and_cache_only):
    """A filter that fails while marking rows gets the SQL path's error."""
    query = [1.0, 0.5, -1.0, 2.0]
    for _ in range(2):
        things.similar_by_vector(query, 3)
    with things.conn:
        things.conn.execute("update embeddings set metadata = '{not json' where id = 'a001'")
    for _ in range(3):
        things.similar_by_vector(query, 3)
    assert things._cache.token is not None
    with pytest.raises(FilterError, match="malformed JSON"):
        things.similar_by_vector(query, 5, where="json_extract(metadata, '$.kind') = 'pet'")
    got = things.similar_by_vector(query, 5, metadata={"kind": "pet"})
    assert found(got) == expected(brute_force(things, QUERY, 5, lambda r: metadata_equal(r["metadata"], {"kind": "pet"})))


def test_an_index_on_the_filters_expression_picks_the_rows(things, sql_and_cache_only):
    """With the collection alone in its file, the filter statements leave out the
    primary-key index by `+collection_id` (not NOT INDEXED), so an expression index on
    the filter is used, in SQL and by the cache's marking statement."""
    where = "json_extract(metadata, '$.flag') = ?"
    with things.conn:
        things.conn.execute("update embeddings set metadata = null where not json_valid(metadata)")
        things.conn.execute("create index flag_index on embeddings(json_extract(metadata, '$.flag'))")

    def keep(r):
        return isinstance(strict_json(r["metadata"]), dict) and strict_json(r["metadata"]).get("flag") is True

    statements: list[str] = []
    things.conn.set_trace_callback(statements.append)
    for _ in range(4):
        got = things.similar_by_vector(QUERY_LIST, 20, where=where, where_args=[1])
        assert found(got) == expected(brute_force(things, QUERY, 20, keep))
    things.conn.set_trace_callback(None)
    ranking = [s for s in statements if "cosine_similarity" in s and "flag" in s]
    marking = [s for s in statements if "embsqlite_mark" in s]
    assert ranking and marking
    for statement in (ranking[0], marking[0]):  # traced with the values in place
        plan = " ".join(row[-1] for row in things.conn.execute("explain query plan " + statement))
        assert "flag_index" in plan, plan


# Through the vector file: SQL picks the rows, the file's scan ranks them by rowid


def test_vector_file_filtered_search_matches_brute_force(things, tmp_path):
    query = [1.0, 0.5, -1.0, 2.0]
    for arguments, keep in CACHE_CASES:
        for prefix, skip_id, number in ((None, None, 200), ("a", "a002", 7), ("b1", None, 3)):
            seen, got = statements_of(things, lambda: things.similar_by_vector(
                query, number, skip_id, prefix, **arguments))  # noqa: B023
            assert found(got) == expected(brute_force(things, QUERY, number, keep, prefix=prefix, skip_id=skip_id))
            assert not any("cosine_similarity" in s or "embsqlite_mark" in s for s in seen), seen
    assert things._vectors.builds == 1 and things._cache.loads == 0
    # the same filter and bounds again: its rows are not read again until the database changes
    arguments, keep = CACHE_CASES[2]
    things.similar_by_vector(query, 1, **arguments)
    seen, got = statements_of(things, lambda: things.similar_by_vector([2.0, 0, 1, 1], 50, **arguments))
    assert not any("order by rowid" in s for s in seen)
    assert found(got) == expected(brute_force(things, vectors.encode([2.0, 0, 1, 1]), 50, keep))
    other = sqlite3.connect(str(tmp_path / "things.db"))
    with other:
        other.execute("""update embeddings set metadata = '{"n": 2}' where id = 'a000'""")
    other.close()
    # after a write the next search answers from SQL (the filter evaluated once, there),
    # the one after builds the file again and picks the rows anew
    for from_file in (False, True):
        seen, got = statements_of(things, lambda: things.similar_by_vector(query, 200, **arguments))
        assert any("order by rowid" in s for s in seen) == from_file
        assert any("cosine_similarity" in s for s in seen) != from_file
        assert found(got) == expected(brute_force(things, QUERY, 200, keep)) and "a000" in [e.id for e in got]
    assert things._vectors.builds == 2
    # a filter that may pick other rows with no change to the database is read every time
    for _ in range(2):
        seen, _ = statements_of(things, lambda: things.similar_by_vector(query, 5, where="abs(random()) >= 0"))
        assert any("order by rowid" in s for s in seen)


def test_vector_file_filter_errors_are_the_sql_paths(things):
    with things.conn:
        things.conn.execute("update embeddings set metadata = '{not json' where id = 'a001'")
    with pytest.raises(FilterError, match="malformed JSON"):
        things.similar_by_vector(QUERY_LIST, 5, where="json_extract(metadata, '$.kind') = 'pet'")
    got = things.similar_by_vector(QUERY_LIST, 5, metadata={"kind": "pet"})
    assert found(got) == expected(brute_force(things, QUERY, 5, lambda r: metadata_equal(r["metadata"], {"kind": "pet"})))
    assert things._vectors.builds >= 1


@pytest.mark.parametrize("path", ["cache", "file"])
def test_random_writes_and_filtered_searches_match_brute_force(tmp_path, rng, path):
    """Writes of every kind (this connection and another, metadata, NULL embeddings,
    inserts, deletes) between repeated filtered searches: every answer is brute force's."""
    if path == "cache":
        vectorfile.configure(enabled=False)
    try:
        things = make_collection(tmp_path / "things.db", rng, count=60)
        other = sqlite3.connect(str(tmp_path / "things.db"))
        wanted_cases = [{"kind": "pet"}, {"flag": True}, {"n": 2}, {"kind": None}]
        for step in range(25):
            wanted = rng.choice(wanted_cases)
            for _ in range(rng.choice([1, 2, 3])):  # repeated: the rows picked are reused
                query = [rng.choice([-1.0, 0.0, 1.0, 2.0]) for _ in range(4)]
                got = things.similar_by_vector(query, 12, where="rowid % 4 != ?", where_args=[step % 4],
                                               metadata=wanted)
                keep = lambda r: metadata_equal(r["metadata"], wanted) and r["rowid"] % 4 != step % 4  # noqa: E731,B023
                assert found(got) == expected(brute_force(things, vectors.encode(query), 12, keep))
            target = rng.choice([things.conn, other])
            victim = f"{'ab'[step % 2]}{rng.randrange(60):03d}"
            change = rng.choice([
                ("update embeddings set metadata = ? where id = ?", (json.dumps(rng.choice(wanted_cases)), victim)),
                ("update embeddings set embedding = null where id = ?", (victim,)),
                ("update embeddings set embedding = ? where id = ?", (vectors.encode([1, 1, 0, 0]), victim)),
                ("delete from embeddings where id = ?", (victim,)),
                ("insert or replace into embeddings (collection_id, id, embedding, metadata) values (1, ?, ?, ?)",
                 (f"c{step:03d}", vectors.encode([0, 1, 1, 0]), json.dumps({"kind": "pet", "flag": True, "n": 2}))),
            ])
            with target:
                target.execute(*change)
        other.close()
        assert things._cache.loads > 1 if path == "cache" else things._vectors.builds > 1
        things.close()
    finally:
        vectorfile.configure(enabled=True)


def test_filters_on_an_apsw_connection(tmp_path, rng):
    """apsw: no embsqlite_mark for the in-memory cache; the file or SQL answers, exactly."""
    import apsw

    make_collection(tmp_path / "a.db", rng).close()
    conn = apsw.Connection(str(tmp_path / "a.db"))
    collection = embsqlite.Collection("things", conn)
    wanted = {"kind": "car"}
    for _ in range(4):
        got = collection.similar_by_vector(QUERY_LIST, 9, where="id > ?", where_args=["a050"], metadata=wanted)
        assert found(got) == expected(brute_force(
            collection, QUERY, 9, lambda r: metadata_equal(r["metadata"], wanted) and r["id"] > "a050"))
    with pytest.raises(FilterError, match="no such column"):
        collection.similar_by_vector(QUERY_LIST, 5, where="nosuch")
    conn.close()


# Reuse of a filter's rows: only when nothing but the database can change them


def test_buffer_parameters_are_keyed_by_content(searched):
    """A memoryview's repr shows its address, which a later one may get: the rows
    picked for one buffer are never reused for another with other bytes."""
    ids = [f"{'ab'[i % 2]}{i:03d}" for i in range(0, 160, 4)]
    for number, wanted in enumerate(ids * 2):
        value = [memoryview(bytearray(wanted.encode())), bytearray(wanted.encode()), wanted.encode()][number % 3]
        got = searched.similar_by_vector(QUERY_LIST, 3, where="id = cast(? as text)", where_args=[value])
        assert found(got) == expected(brute_force(searched, QUERY, 3, lambda r: r["id"] == wanted))  # noqa: B023
        del value


def test_subqueries_are_evaluated_for_every_search(searched):
    """A view (or a table named after IN) may call what changes with no write:
    a filter with a subquery is never reused."""
    state = {"x": 0}
    searched.conn.create_function("coin", 0, lambda: state["x"])
    searched.conn.execute("create temp view coin as select coin() as x")
    searched.conn.execute("create temp table parity (x integer)")
    for where in ("rowid % 2 = (select x from coin)", "rowid % 2 in coin", "rowid % 2 in (values (coin()))"):
        for step in range(6):
            state["x"] = step % 2
            with searched.conn:
                searched.conn.execute("delete from temp.parity")
                searched.conn.execute("insert into temp.parity values (coin())")
            for filter_ in (where, where.replace("coin", "parity") if "in coin" in where else where):
                got = searched.similar_by_vector(QUERY_LIST, 6, where=filter_)
                assert found(got) == expected(brute_force(
                    searched, QUERY, 6, lambda r: r["rowid"] % 2 == state["x"])), (filter_, step)
    assert filters.parse_where("rowid in (select 1)").reuse_key() is None
    assert filters.parse_where("rowid in parity").reuse_key() is None
    assert filters.parse_where("abs(rowid) in (1, 2)").reuse_key() is not None


def test_like_glob_and_collations_are_evaluated_for_every_search(searched):
    """PRAGMA case_sensitive_like, and collations and LIKE/GLOB/REGEXP/MATCH functions
    the application defines, change what these operators keep with no write."""
    conn = searched.conn
    for sensitive in (0, 1, 0, 1):
        conn.execute(f"pragma case_sensitive_like = {sensitive}")
        got = searched.similar_by_vector(QUERY_LIST, 20, where="id like 'A01%'")
        assert found(got) == expected(brute_force(
            searched, QUERY, 20, lambda r: not sensitive and r["id"].startswith("a01")))  # noqa: B023
    for folding in (True, False, True):
        def compare(a, b, folding=folding):
            a, b = (a.lower(), b.lower()) if folding else (a, b)
            return (a > b) - (a < b)
        conn.create_collation("mine", compare)
        got = searched.similar_by_vector(QUERY_LIST, 5, where="id = 'A010' collate mine")
        assert found(got) == expected(brute_force(
            searched, QUERY, 5, lambda r: folding and r["id"] == "a010"))  # noqa: B023
    conn.execute("pragma case_sensitive_like = 0")
    for where in ("id glob 'a*'", "id regexp 'a'", "id match 'a'", "like('a%', id)", "glob('a*', id)",
                  "id = 'a' collate nocase"):
        assert filters.parse_where(where).reuse_key() is None, where


def test_a_filter_meets_only_the_rows_the_search_can_return(searched):
    """Outside the prefix range a row whose metadata makes the filter fail is not
    evaluated on any path (the vector file's rows are picked with the same range and
    skipped id as the SQL statement)."""
    with searched.conn:
        searched.conn.execute("update embeddings set metadata = 'not json' where id = 'b050'")
    where = "json_extract(metadata, '$.flag') = 1"

    def keep(r):
        stored = strict_json(r["metadata"])
        return isinstance(stored, dict) and stored.get("flag") is True

    stored = searched.conn.execute("select embedding from embeddings where id = 'b103'").fetchone()[0]
    for _ in range(3):  # after the write: from SQL, then from a new file or cache
        got = searched.similar_by_vector(QUERY_LIST, 9, prefix="b1", where=where)
        assert found(got) == expected(brute_force(searched, QUERY, 9, keep, prefix="b1"))
        got = searched.similar_by_id("b103", 9, prefix="b1", where=where)
        assert found(got) == expected(brute_force(searched, stored, 9, keep, prefix="b1", skip_id="b103"))
    with searched.conn:
        searched.conn.execute("update embeddings set metadata = 'not json' where id = 'b103'")

    def outcome():
        try:
            return found(searched.similar_by_id("b103", 9, prefix="b1", where=where))
        except FilterError as error:
            return str(error)

    answers = [outcome() for _ in range(3)]
    file_on, cache_on = vectorfile._enabled, cache.budget_bytes() > 0
    vectorfile.configure(enabled=False)
    cache.configure(enabled=False)
    assert answers == [outcome()] * 3  # the skipped id: what SQL does, every path does
    vectorfile.configure(enabled=file_on)
    cache.configure(enabled=cache_on)
    for _ in range(2):
        searched.similar_by_vector(QUERY_LIST, 1)  # the path the fixture checks, again
    with pytest.raises(FilterError, match="malformed JSON"):
        searched.similar_by_vector(QUERY_LIST, 9, prefix="b", where=where)


def test_parameter_messages_name_where_args_for_python(things):
    """The CLI says --param (above); Python callers read where_args."""
    with pytest.raises(FilterError, match="no value for parameter :x in where_args"):
        things.similar_by_vector(QUERY_LIST, 1, where="id = :x", where_args={})
    with pytest.raises(FilterError, match="pass where_args as a sequence"):
        things.similar_by_vector(QUERY_LIST, 1, where="id = ?", where_args={"x": 1})


def test_cli_help_filter_examples_work_as_written(tmp_path):
    """`similar --help`'s filter examples, run as printed (values of --param are text,
    as in sqlite-utils, so the example casts its number)."""
    import shlex

    path = str(tmp_path / "phrases.db")
    embsqlite.register_embedding_model(VectorModel())
    phrases = embsqlite.Collection("phrases", path, model=VectorModel())
    phrases.embed_multi_with_metadata([
        ("hound", "1,1,0,0", {"kind": "pet", "legs": 4}), ("cat", "1,0,1,0", {"kind": "pet", "legs": 4}),
        ("bird", "1,0,0,1", {"kind": "pet", "legs": 2}), ("car", "1,1,1,0", {"kind": "car", "wheels": 4})])
    phrases.close()
    help_text = cli("similar", "--help").output.replace("\\\n", " ")  # continued lines joined
    examples = [shlex.split(line.strip()) for line in help_text.splitlines()
                if line.strip().startswith("embsqlite similar phrases hound --")]
    assert len(examples) == 2
    for words, wanted in zip(examples, (["cat"], ["bird", "cat"])):  # --where legs = 4; kind = pet
        result = cli(*words[1:], "-d", path)
        assert result.exit_code == 0, result.output
        assert sorted(json.loads(line)["id"] for line in result.output.splitlines()) == wanted, words


def test_metadata_keys_written_with_escapes_match(searched):
    """A key stored as `"\\u006bind"` is the key kind (SQLite before 3.45 compares `$.kind`
    with the undecoded text: json_each decides for text holding a backslash)."""
    stored = {"a000": '{"\\u006bind": "pet", "n": 2}', "a002": '{"k\\u0069nd": "pet", "flag": true}',
              "b001": '{"kind": "p\\u0065t", "path": "c:\\\\x"}', "b003": '{"path": "c:\\\\x", "kind": "car"}',
              "b005": '{"\\u006b\\u0069nd": null, "\\"n": 2}'}
    with searched.conn:
        for id_, text in stored.items():
            searched.conn.execute("update embeddings set metadata = ? where id = ?", (text, id_))
    for _ in range(3):  # after the write: from SQL, then from a new file or cache
        for wanted in ({"kind": "pet"}, {"kind": None}, {"kind": "car"}, {"flag": True, "kind": "pet"}, {'"n': 2}):
            got = searched.similar_by_vector(QUERY_LIST, 200, metadata=wanted)
            assert found(got) == expected(brute_force(
                searched, QUERY, 200, lambda r: metadata_equal(r["metadata"], wanted))), wanted  # noqa: B023
    ids = [e.id for e in searched.similar_by_vector(QUERY_LIST, 200, metadata={"kind": "pet"})]
    assert {"a000", "a002", "b001"} <= set(ids) and "b003" not in ids
