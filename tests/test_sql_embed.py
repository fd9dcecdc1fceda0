"""`embedding_from_text(model_id, text)` outside Datasette: registered only on request,
embeds once per (model, text) however many rows compare with it, and reports every
failure as an SQL error naming the function, on stdlib sqlite3, pysqlite3, apsw and
sqlite-utils connections."""
from __future__ import annotations

import sqlite3
import sys

import apsw
import pysqlite3.dbapi2 as pysqlite3
import pytest
import sqlite_utils
from conftest import CountingModel

import embsqlite
from embsqlite import registry, sql_embed
from embsqlite.collection import Collection

RANK_SQL = ("select id from embeddings order by "
            "cosine_similarity(embedding, embedding_from_text(?, ?)) desc, id limit 5")


@pytest.fixture
def counting():
    """A CountingModel registered as `counting-sql`, and an empty cache; both undone after."""
    model = CountingModel("counting-sql")
    embsqlite.register_embedding_model(model)
    sql_embed.clear_cache()
    yield model
    registry._entries.pop(model.model_id, None)
    sql_embed.clear_cache()


def thousand_rows(path, model) -> sqlite3.Connection:
    collection = Collection("many", str(path), model=model)
    collection.embed_multi((f"item-{i:04d}", f"text number {i % 37} of many") for i in range(1000))
    collection.close()
    model.batches.clear()
    return embsqlite.register(sqlite3.connect(path), embed_text=True)


def test_default_registration_has_no_model_function(tmp_path, counting):
    conn = embsqlite.register(sqlite3.connect(tmp_path / "a.db"))
    with pytest.raises(sqlite3.OperationalError, match="no such function: embedding_from_text"):
        conn.execute("select embedding_from_text('counting-sql', 'x')")
    # Registering it loads nothing and calls no model.
    embsqlite.register(conn, embed_text=True)
    assert counting.batches == []


def test_one_query_embeds_its_text_once(tmp_path, counting):
    conn = thousand_rows(tmp_path / "many.db", counting)
    first = conn.execute(RANK_SQL, ("counting-sql", "text number 5")).fetchall()
    assert counting.items == ["text number 5"]
    # The same search again (a page reload, "Run this SQL") embeds nothing.
    assert conn.execute(RANK_SQL, ("counting-sql", "text number 5")).fetchall() == first
    assert counting.items == ["text number 5"]
    expected = Collection("many", conn, create=False).similar_by_vector(
        counting.inner.embed("text number 5"), number=5)
    assert [row[0] for row in first] == [e.id for e in expected]


def test_per_row_texts_are_embedded_once_each(tmp_path, counting):
    """With a different text per row, each distinct text reaches the model once."""
    conn = thousand_rows(tmp_path / "many.db", counting)
    rows = conn.execute("select embedding_from_text('counting-sql', 'word ' || (rowid % 3)) "
                        "from embeddings").fetchall()
    assert len(rows) == 1000 and sorted(counting.items) == ["word 0", "word 1", "word 2"]


def test_the_cache_keeps_only_the_last_few(tmp_path, counting):
    conn = embsqlite.register(sqlite3.connect(":memory:"), embed_text=True)
    for i in range(sql_embed.CACHE_SIZE + 1):
        conn.execute("select embedding_from_text('counting-sql', ?)", (f"t{i}",))
    conn.execute("select embedding_from_text('counting-sql', ?)", (f"t{sql_embed.CACHE_SIZE}",))
    assert len(counting.items) == sql_embed.CACHE_SIZE + 1  # the newest was still cached
    conn.execute("select embedding_from_text('counting-sql', 't0')")
    assert counting.items[-1] == "t0"  # the oldest was not
    assert len(sql_embed.cache_keys()) == sql_embed.CACHE_SIZE


def test_result_is_the_models_vector_and_null_gives_null():
    conn = embsqlite.register(sqlite3.connect(":memory:"), embed_text=True)
    blob, = conn.execute("select embedding_from_text('hashing', 'my happy hound')").fetchone()
    assert blob == embsqlite.encode(embsqlite.get_embedding_model("hashing").embed("my happy hound"))
    assert conn.execute("select embedding_from_text(null, 'x'), embedding_from_text('hashing', null)"
                        ).fetchone() == (None, None)


def _stdlib(path):
    return sqlite3.connect(path)


def _pysqlite3(path):
    return pysqlite3.connect(str(path))


def _apsw(path):
    return apsw.Connection(str(path))


def _sqlite_utils(path):
    return sqlite_utils.Database(sqlite3.connect(path))


def _execute(conn, sql):
    target = getattr(conn, "conn", conn)
    return target.cursor().execute(sql).fetchall()


ERRORS = [
    ("select embedding_from_text('no-such-model', 'x')",
     "embedding_from_text: cannot embed with model 'no-such-model': unknown, or not installed here"),
    ("select embedding_from_text('hashing', x'00ff')", "embedding_from_text: text must be TEXT, not BLOB"),
    ("select embedding_from_text('hashing', 1.5)", "embedding_from_text: text must be TEXT, not REAL"),
    ("select embedding_from_text(x'01', 'x')", "embedding_from_text: model_id must be TEXT"),
]


@pytest.mark.parametrize("connect", [_stdlib, _pysqlite3, _apsw, _sqlite_utils])
@pytest.mark.parametrize("sql, message", ERRORS)
def test_errors_name_the_function_on_every_connection_type(tmp_path, connect, sql, message):
    conn = embsqlite.register(connect(tmp_path / "e.db"), embed_text=True)
    with pytest.raises(Exception) as raised:
        _execute(conn, sql)
    assert str(raised.value).startswith(message)
    assert _execute(conn, "select embedding_dimensions(embedding_from_text('hashing', 'ok'))") == [(256,)]


def test_missing_api_key_is_an_sql_error(tmp_path, monkeypatch):
    """llm's OpenAI model with no key fails before any network access, with llm's words."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    conn = embsqlite.register(sqlite3.connect(":memory:"), embed_text=True)
    with pytest.raises(sqlite3.OperationalError,
                       match="^embedding_from_text: cannot embed with model 'text-embedding-3-small': No key found"):
        conn.execute("select embedding_from_text('text-embedding-3-small', 'x')")


@pytest.mark.parametrize("connect", [_stdlib, _pysqlite3])
def test_a_schema_cannot_call_it(tmp_path, connect, counting):
    """A view or trigger of someone else's database must not make its reader run a model."""
    conn = embsqlite.register(connect(tmp_path / "v.db"), embed_text=True)
    conn.execute("create view v as select embedding_from_text('counting-sql', 'x') as e")
    with pytest.raises(Exception, match="unsafe use of embedding_from_text"):
        conn.execute("select * from v").fetchall()
    assert counting.batches == []


# A schema that calls the function, written by a connection where it was an ordinary
# function: each kind of schema expression SQLite keeps parsed.
SCHEMA_CALLS = {
    "generated column": "create table t(body text,"
                        " e blob as (hex(embedding_from_text('counting-sql', body))))",
    "check constraint": "create table t(body text"
                        " check (embedding_from_text('counting-sql', body) is not null))",
    "expression index": "create table t(body text);"
                        " create index ix on t(embedding_from_text('counting-sql', body))",
}


def schema_calling_it(path, kind: str) -> str:
    writer = pysqlite3.connect(str(path))
    writer.create_function("embedding_from_text", 2, lambda model, text: b"\0\0\0\0",
                           deterministic=True)
    writer.executescript(SCHEMA_CALLS[kind] + "; insert into t(body) values ('hello');")
    writer.commit()
    writer.close()
    return str(path)


@pytest.mark.parametrize("connect", [_stdlib, _pysqlite3, _apsw, _sqlite_utils])
@pytest.mark.parametrize("kind", list(SCHEMA_CALLS))
@pytest.mark.parametrize("schema_read_first", [False, True], ids=["fresh", "schema-read-first"])
def test_a_stored_schema_expression_cannot_call_it(tmp_path, connect, kind, schema_read_first,
                                                   counting):
    """Generated columns, CHECKs and expression indexes fail closed, even when the
    connection read the schema before the function was registered."""
    conn = connect(schema_calling_it(tmp_path / "s.db", kind))
    if schema_read_first:
        _execute(conn, "select count(*) from sqlite_master")
    embsqlite.register(conn, embed_text=True)
    for sql in ("select * from t", "insert into t(body) values ('again')"):
        with pytest.raises(Exception, match=r"unsafe use of embedding_from_text\(\)"):
            _execute(conn, sql)
    assert counting.batches == []



@pytest.mark.parametrize("connect", [_stdlib, _pysqlite3, _apsw, _sqlite_utils])
def test_a_text_past_the_limit_is_refused_before_the_model(tmp_path, connect, counting):
    conn = embsqlite.register(connect(tmp_path / "l.db"), embed_text=True)
    limit = sql_embed.MAX_TEXT_CHARS
    ok = _execute(conn, f"select length(embedding_from_text('counting-sql', printf('%.{limit}c', 'é')))")
    assert ok == [(256,)] and len(counting.items[0]) == limit
    with pytest.raises(Exception) as raised:
        _execute(conn, f"select embedding_from_text('counting-sql', printf('%.{limit + 1}c', 'é'))")
    assert str(raised.value).startswith(
        f"embedding_from_text: text is {limit + 1:,} characters long; the limit is {limit:,}"
        " ($EMBSQLITE_SQL_MAX_TEXT)")
    # far past it (the attack: millions of characters) the text is not even copied
    with pytest.raises(Exception, match=r"^embedding_from_text: text is 4,000,000 "
                                        r"(bytes of UTF-8|characters long)"):
        _execute(conn, "select embedding_from_text('counting-sql', hex(zeroblob(2000000)))")
    assert len(counting.batches) == 1


def test_the_limit_is_configurable(monkeypatch, counting):
    conn = embsqlite.register(sqlite3.connect(":memory:"), embed_text=True)
    monkeypatch.setenv("EMBSQLITE_SQL_MAX_TEXT", "5")
    assert conn.execute("select length(embedding_from_text('counting-sql', 'abcde'))").fetchone() == (256,)
    with pytest.raises(sqlite3.OperationalError, match="text is 6 characters long; the limit is 5"):
        conn.execute("select embedding_from_text('counting-sql', 'abcdef')")
    monkeypatch.setenv("EMBSQLITE_SQL_MAX_TEXT", "lots")
    with pytest.raises(sqlite3.OperationalError,
                       match=r"^embedding_from_text: \$EMBSQLITE_SQL_MAX_TEXT must be a positive whole"
                             r" number of characters, not 'lots'"):
        conn.execute("select embedding_from_text('counting-sql', 'abcdef')")


def test_the_cache_keeps_digests_not_texts(counting):
    """Kept results are keyed by a 32-byte digest of (model, text): long texts are not kept."""
    conn = embsqlite.register(sqlite3.connect(":memory:"), embed_text=True)
    texts = [f"{i} " + "long text " * 9_000 for i in range(sql_embed.CACHE_SIZE)]
    for text in texts:
        conn.execute("select embedding_from_text('counting-sql', ?)", (text,))
    keys = sql_embed.cache_keys()
    assert len(keys) == sql_embed.CACHE_SIZE and all(len(k) == 32 for k in keys)
    assert sum(sys.getsizeof(k) for k in keys) < 4096
    # the same model and text hit; another model with the same text does not
    conn.execute("select embedding_from_text('counting-sql', ?)", (texts[-1],))
    assert len(counting.batches) == sql_embed.CACHE_SIZE
    assert sql_embed._Results.key("a\0b", "c") != sql_embed._Results.key("a", "b\0c")
