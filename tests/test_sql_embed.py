"""`embedding_from_text(model_id, text)` outside Datasette: registered only on request,
embeds once per (model, text) however many rows compare with it, and reports every
failure as an SQL error naming the function, on stdlib sqlite3, pysqlite3, apsw and
sqlite-utils connections."""
from __future__ import annotations

import sqlite3

import apsw
import pysqlite3.dbapi2 as pysqlite3
import pytest
import sqlite_utils

import embsqlite
from embsqlite import registry as models, sql_embed
from embsqlite.collection import Collection

from conftest import CountingModel

RANK_SQL = ("select id from embeddings order by "
            "cosine_similarity(embedding, embedding_from_text(?, ?)) desc, id limit 5")


@pytest.fixture
def counting():
    """A CountingModel registered as `counting-sql`, and an empty cache; both undone after."""
    model = CountingModel("counting-sql")
    embsqlite.register_embedding_model(model)
    sql_embed.embed_text.cache_clear()
    yield model
    models._entries.pop(model.model_id, None)
    sql_embed.embed_text.cache_clear()


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
    assert sql_embed.embed_text.cache_info().currsize == sql_embed.CACHE_SIZE


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
     "embedding_from_text: cannot embed with model 'no-such-model': Unknown embedding model: 'no-such-model'"),
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
