"""The Datasette plugin, on whichever Datasette is installed (CI runs this file on the 0.65
line and on 1.0a41): SQL functions with no flags, `--load-extension` without the plugin,
`embedding_from_text` in SQL and canned queries, who may see which collection, several
databases, the search page and its JSON, through Datasette in-process, `datasette --get`,
a real server and a real headless Chromium."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest
from datasette.app import Datasette
from datasette.version import __version__ as DATASETTE_VERSION

import embsqlite
from embsqlite.collection import Collection
from embsqlite.hashing import HashingModel

DATASETTE = os.path.join(os.path.dirname(sys.executable), "datasette")
DATASETTE_1 = int(DATASETTE_VERSION.split(".")[0]) >= 1
FUNCTIONS_SQL = (
    "select embsqlite_version() as version,"
    " cosine_similarity(embedding_from_json('[1,2,3]'), embedding_from_json('[1,2,4]')) as cosine,"
    " embedding_to_json(embedding_from_json('[0.5,-2]')) as json,"
    " embedding_dimensions(embedding_from_json('[1,2,3]')) as dims,"
    " embedding_norm(embedding_from_json('[3,4]')) as norm"
)
EXPECTED_FUNCTIONS = {"version": embsqlite.__version__, "cosine": pytest.approx(0.9914601339836675),
                      "json": "[0.5,-2]", "dims": 3, "norm": 5.0}
SEMANTIC_SQL = ("select id from embeddings order by "
                "cosine_similarity(embedding, embedding_from_text('hashing', :q)) desc, id limit 3")
# Async tests run on anyio's pytest plugin (anyio comes with httpx).
pytestmark = pytest.mark.anyio

ITEMS = {
    "dog-1": "my happy hound",
    "dog-2": "a happy dog barks at the postman",
    "cat-1": "a happy cat sleeps all day",
    "money": "stock market crash",
    "weather": "rain and wind tomorrow",
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_db(path, model_id="hashing", name="phrases", model=None):
    collection = Collection(name, str(path), model_id=None if model else model_id, model=model)
    collection.embed_multi_with_metadata(
        [(k, v, {"n": i}) for i, (k, v) in enumerate(ITEMS.items())], store=True
    )
    collection.close()
    return str(path)


@pytest.fixture
def db_path(tmp_path):
    return make_db(tmp_path / "phrases.db")


class FailingModel(embsqlite.EmbeddingModel):
    """A model that fails the way a broken one does, with a two-line message."""

    model_id = "failing"

    def embed_batch(self, items):
        raise RuntimeError("the model broke\nsecond line of a traceback-like message")


def needs_an_extra() -> embsqlite.EmbeddingModel:
    raise embsqlite.ModelNotInstalledError("the needs-extra model needs its extra: pip install 'needs-extra'")


@pytest.fixture(scope="module", autouse=True)
def test_models():
    """`hashing-4`, `hashing-64`, `failing` and `needs-extra` registered for this module's
    collections, then removed."""
    from embsqlite import registry

    added = [HashingModel(4), HashingModel(64), FailingModel()]
    for model in added:
        embsqlite.register_embedding_model(model)
    registry.register_lazy_embedding_model("needs-extra", needs_an_extra)
    yield
    for model_id in [m.model_id for m in added] + ["needs-extra"]:
        registry._entries.pop(model_id, None)


def datasette(files, config=None, settings=None) -> Datasette:
    """Datasette over `files`; `config` holds permissions and canned queries, which 1.0
    reads from its configuration and 0.65 from its metadata."""
    kwargs = {"settings": settings} if settings else {}
    if config:
        kwargs["config" if DATASETTE_1 else "metadata"] = config
    return Datasette([str(f) for f in files], **kwargs)


def sql_url(database: str, sql: str, **params) -> str:
    """The JSON URL of an arbitrary query (1.0 moved it to /DB/-/query)."""
    path = f"/{database}/-/query.json" if DATASETTE_1 else f"/{database}.json"
    return path + "?" + urllib.parse.urlencode({"sql": sql, **params, "_shape": "array"})


def as_actor(ds: Datasette, actor_id: str) -> dict:
    """Request headers that sign in as `actor_id` (Datasette's own actor cookie)."""
    return {"cookie": "ds_actor=" + ds.sign({"a": {"id": actor_id}}, "actor")}


def option_values(page: str) -> list[tuple[str, bool]]:
    """The collection picker's (value, selected) pairs."""
    return [(html.unescape(v), bool(s)) for v, s in
            re.findall(r'<option value="([^"]*)"( selected)?>', page)]


def result_ids(page: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'<td class="id">([^<]*)</td>', page)]


def page_error(page: str) -> str:
    found = re.search(r'<p class="message-error embsqlite-error">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else ""


def sql_link(page: str) -> str | None:
    found = re.search(r'<a href="([^"]+)">Run this SQL</a>', page)
    return html.unescape(found.group(1)) if found else None


# In-process Datasette: SQL


async def test_plugin_is_installed_and_functions_need_no_flags(db_path):
    ds = datasette([db_path])
    plugins = (await ds.client.get("/-/plugins.json")).json()
    assert any(p["name"] == "embsqlite" and "prepare_connection" in p["hooks"]
               for p in plugins)
    response = await ds.client.get(sql_url("phrases", FUNCTIONS_SQL))
    assert response.status_code == 200, response.text
    assert response.json() == [EXPECTED_FUNCTIONS]


async def test_sql_functions_rank_a_collection_like_the_library(db_path):
    collection = Collection("phrases", db_path, create=False)
    query = collection.model().embed("happy hound")
    expected = collection.similar_by_vector(query, number=5)
    ds = datasette([db_path])
    sql = ("select id, cosine_similarity(embedding, embedding_from_json(:q)) as score from embeddings "
           "order by score desc, id")
    rows = (await ds.client.get(sql_url("phrases", sql, q=json.dumps(query)))).json()
    assert [(r["id"], r["score"]) for r in rows] == [(e.id, e.score) for e in expected]


async def test_sql_function_errors_come_back_as_errors(db_path):
    ds = datasette([db_path])
    response = await ds.client.get(sql_url("phrases", "select cosine_similarity(x'00000000', x'0000')"))
    assert response.status_code == 400
    assert "cosine_similarity" in response.json()["error"]


async def test_embedding_from_text_ranks_by_meaning_in_the_sql_editor(db_path):
    expected = Collection("phrases", db_path, create=False).similar("happy hound", number=3)
    ds = datasette([db_path])
    response = await ds.client.get(sql_url("phrases", SEMANTIC_SQL, q="happy hound"))
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()] == [e.id for e in expected]


async def test_embedding_from_text_in_a_canned_query(db_path):
    expected = Collection("phrases", db_path, create=False).similar("stock crash", number=3)
    ds = datasette([db_path], config={"databases": {"phrases": {"queries": {
        "similar": {"sql": SEMANTIC_SQL, "title": "Most similar"}}}}})
    response = await ds.client.get("/phrases/similar.json?q=stock+crash&_shape=array")
    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()] == [e.id for e in expected]
    page = await ds.client.get("/phrases/similar?q=stock+crash")
    assert page.status_code == 200 and "money" in page.text


@pytest.mark.parametrize("sql, message", [
    ("select embedding_from_text('no-such-model', 'x')",
     "embedding_from_text: cannot embed with model 'no-such-model': unknown, or not installed here"),
    ("select embedding_from_text('hashing', x'00ff')", "embedding_from_text: text must be TEXT, not BLOB"),
    ("select embedding_from_text('hashing', 42)", "embedding_from_text: text must be TEXT, not INTEGER"),
    ("select embedding_from_text(7, 'x')", "embedding_from_text: model_id must be TEXT"),
])
async def test_embedding_from_text_errors_name_the_function(db_path, sql, message):
    ds = datasette([db_path])
    response = await ds.client.get(sql_url("phrases", sql))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


# In-process Datasette: the search page and its JSON


async def test_search_json_matches_collection_similar(db_path):
    expected = Collection("phrases", db_path, create=False).similar("happy hound", number=3)
    ds = datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+hound&n=3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["database"] == "phrases" and body["model"] == "hashing"
    assert [(r["id"], r["score"]) for r in body["results"]] == [(e.id, e.score) for e in expected]
    assert body["results"][0] == {"id": "dog-1", "score": expected[0].score,
                                  "content": "my happy hound", "metadata": {"n": 0}}
    # The SQL is one a person can read and run: the query text, not a vector.
    assert "embedding_from_text('hashing', :q)" in body["sql"]
    assert body["params"] == {"q": "happy hound", "collection": "phrases", "n": 3}
    rows = (await ds.client.get(sql_url("phrases", body["sql"], **body["params"]))).json()
    assert [(r["id"], r["score"]) for r in rows] == [(e.id, e.score) for e in expected]


async def test_search_prefix_and_db_parameter(db_path):
    ds = datasette([db_path])
    body = (await ds.client.get("/-/embsqlite/search.json?db=phrases&collection=phrases&q=happy&prefix=dog-")).json()
    assert body["ok"] and {r["id"] for r in body["results"]} == {"dog-1", "dog-2"}
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases/phrases&q=happy&prefix=cat")).json()
    assert body["ok"] and [r["id"] for r in body["results"]] == ["cat-1"]


async def test_search_html_page_and_its_sql_link(db_path):
    ds = datasette([db_path])
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy+hound&n=2")
    assert page.status_code == 200
    text = page.text
    assert "<h1>Search embeddings</h1>" in text
    assert option_values(text) == [("phrases/phrases", True)]
    scores = [float(s) for s in re.findall(r'<td class="score">([^<]*)</td>', text)]
    expected = Collection("phrases", db_path, create=False).similar("happy hound", number=2)
    assert result_ids(text) == [e.id for e in expected]
    assert scores == [round(e.score, 4) for e in expected]
    # "Run this SQL" opens Datasette's own SQL page: readable SQL with the query text as a
    # parameter (no vector), giving the same results.
    link = sql_link(text)
    path, query = link.split("?", 1)
    assert urllib.parse.parse_qs(query)["q"] == ["happy hound"] and len(link) < 1000
    assert "embedding_from_text('hashing', :q)" in urllib.parse.parse_qs(query)["sql"][0]
    page = await ds.client.get(link)
    assert page.status_code == 200 and "dog-1" in page.text
    rows = (await ds.client.get(f"{path}.json?{query}&_shape=array")).json()
    assert [(r["id"], r["score"]) for r in rows] == [(e.id, e.score) for e in expected]


async def test_search_page_looks_like_datasette(db_path):
    ds = datasette([db_path])
    text = (await ds.client.get("/-/embsqlite/search")).text
    assert "phrases (5 items, hashing)" in text and '<optgroup label="phrases">' in text
    # Every field has a label; the query box is the wide one.
    for field_id, label in [("es-collection", "Collection"), ("es-q", "Search for"),
                            ("es-prefix", "Id prefix"), ("es-n", "Results")]:
        assert f'<label for="{field_id}">{label}</label>' in text
        assert f'id="{field_id}"' in text
    assert ".embsqlite-search input[type=search] { width: 60%; }" in text
    assert ".embsqlite-search input[type=text] { width: 12em; }" in text
    # Datasette's own layout and footer, with the real version.
    assert '<div class="not-footer">' in text and '<footer class="ft">' in text
    assert f'title="Datasette v{DATASETTE_VERSION}"' in text
    assert 'href="/-/embsqlite/search">Search embeddings</a>' in (await ds.client.get("/")).text


async def test_empty_query_and_no_results_read_like_a_page(db_path):
    ds = datasette([db_path])
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=")
    assert page.status_code == 200
    assert "Type some text above to find the items of <strong>phrases</strong>" in page.text
    assert "pass q=" not in page.text and page_error(page.text) == ""
    assert option_values(page.text) == [("phrases/phrases", True)]
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=")).json()
    assert body == {"ok": False, "error": "q is empty: pass q= with the text to search for"}
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy&prefix=zzz")
    assert page.status_code == 200
    assert "No results:" in page.text and "whose id starts with <code>zzz</code>" in page.text
    assert "<table" not in page.text


async def test_collections_json(tmp_path):
    first = make_db(tmp_path / "first.db")
    make_db(tmp_path / "second.db", name="other")
    ds = datasette([first, tmp_path / "second.db"])
    body = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert body == {"ok": True, "unreadable": [], "collections": [
        {"database": "first", "name": "phrases", "model": "hashing", "key": "first/phrases",
         "count": 5, "count_is_exact": True},
        {"database": "second", "name": "other", "model": "hashing", "key": "second/other",
         "count": 5, "count_is_exact": True},
    ]}


async def test_search_errors(db_path):
    ds = datasette([db_path])

    async def error(query, status):
        response = await ds.client.get("/-/embsqlite/search.json?" + query)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["ok"] is False and set(body) == {"ok", "error"}
        assert "\n" not in body["error"]
        return body["error"]

    assert "not found" in await error("collection=nope&q=x", 404)
    assert "not found" in await error("collection=phrases&db=other&q=x", 404)
    assert "not found" in await error("collection=other/phrases&q=x", 404)
    assert "choose a collection" in await error("q=x", 400)
    assert "n must be" in await error("collection=phrases&q=x&n=0", 400)
    assert "n must be" in await error("collection=phrases&q=x&n=ten", 400)
    page = await ds.client.get("/-/embsqlite/search?collection=nope&q=x")
    assert page.status_code == 404 and page_error(page.text) == "collection 'nope' not found"


# Several databases, and databases that are not ours


async def test_picker_names_database_and_collection(tmp_path):
    """Two databases with a `pets` collection: each option is its own, one is selected,
    and submitting either (as the form does) searches that database."""
    first = make_db(tmp_path / "first.db", name="pets")
    second = make_db(tmp_path / "second.db", name="pets", model=HashingModel(64))
    ds = datasette([first, second])
    assert "several databases" in (await ds.client.get("/-/embsqlite/search.json?collection=pets&q=x")).json()["error"]
    page = (await ds.client.get("/-/embsqlite/search?collection=second/pets&q=happy")).text
    assert option_values(page) == [("first/pets", False), ("second/pets", True)]
    assert "pets in first (5 items, hashing)" in page and "pets in second (5 items, hashing-64)" in page
    for value, _ in option_values(page):
        form = urllib.parse.urlencode({"collection": value, "q": "happy dog", "prefix": "", "n": "3"})
        response = await ds.client.get("/-/embsqlite/search?" + form)
        assert response.status_code == 200, page_error(response.text)
        assert f"({value.split('/')[0]})" in response.text and len(result_ids(response.text)) == 3
    body = (await ds.client.get("/-/embsqlite/search.json?collection=pets&q=happy&db=second")).json()
    assert body["ok"] and body["database"] == "second" and body["model"] == "hashing-64"


async def test_a_db_parameter_does_not_stick(tmp_path):
    first = make_db(tmp_path / "first.db", name="pets")
    make_db(tmp_path / "second.db", name="cats")
    ds = datasette([first, tmp_path / "second.db"])
    page = (await ds.client.get("/-/embsqlite/search?db=first&collection=pets&q=happy")).text
    assert 'type="hidden"' not in page and 'name="db"' not in page
    assert ("first/pets", True) in option_values(page)
    # Choosing the other database's collection in that form works.
    response = await ds.client.get("/-/embsqlite/search?collection=second/cats&q=happy")
    assert response.status_code == 200 and result_ids(response.text)


async def test_odd_database_and_collection_names_round_trip(tmp_path):
    path = tmp_path / "my data~1.db"
    make_db(path, name="a/b ~c")
    ds = datasette([path])
    page = (await ds.client.get("/-/embsqlite/search")).text
    (value, _), = option_values(page)
    response = await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": value, "q": "happy"}))
    body = response.json()
    assert body["ok"], body
    assert (body["database"], body["collection"]) == ("my data~1", "a/b ~c")
    body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "a/b ~c", "q": "happy"}))).json()
    assert body["ok"] and body["collection"] == "a/b ~c"


async def test_databases_whose_tables_are_not_llms_are_skipped(db_path, tmp_path):
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.executescript("create table collections (id integer primary key, title text);"
                       "create table embeddings (x); insert into collections values (1, 'phrases');")
    conn.close()
    ds = datasette([foreign, db_path])
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy")).json()
    assert body["ok"] and body["database"] == "phrases", body
    listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert [c["database"] for c in listing["collections"]] == ["phrases"]
    assert listing["unreadable"] == []
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy")
    assert page.status_code == 200 and result_ids(page.text)
    response = await ds.client.get("/-/embsqlite/search.json?collection=foreign/phrases&q=happy")
    assert response.status_code == 404


async def test_a_database_that_fails_to_read_does_not_break_another(db_path, tmp_path):
    """llm's tables, but the page holding the collections rows is corrupt: every read of
    them fails while the schema still says the tables are llm's."""
    broken = tmp_path / "broken.db"
    Collection("phrases", str(broken), model=HashingModel(4)).close()
    conn = sqlite3.connect(broken)
    conn.execute("pragma journal_mode=delete")
    page_size = conn.execute("pragma page_size").fetchone()[0]
    root = conn.execute("select rootpage from sqlite_master where name = 'collections'").fetchone()[0]
    conn.close()
    with open(broken, "r+b") as file:  # page type 0 is no b-tree page SQLite knows
        file.seek((root - 1) * page_size)
        file.write(b"\x00" * 16)
    ds = datasette([broken, db_path])
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+hound")).json()
    assert body["ok"] and body["database"] == "phrases" and body["results"][0]["id"] == "dog-1"
    listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert [c["database"] for c in listing["collections"]] == ["phrases"]
    assert listing["unreadable"] == [{"database": "broken", "error": "database disk image is malformed"}]
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy+hound")
    assert page.status_code == 200 and result_ids(page.text)[0] == "dog-1"
    assert "Could not read <strong>broken</strong> (database disk image is malformed)" in page.text
    response = await ds.client.get("/-/embsqlite/search.json?collection=broken/phrases&q=happy")
    assert response.status_code == 400
    assert response.json()["error"] == "database 'broken' could not be read: database disk image is malformed"


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> str:
    """300,000 items (4-dimension zero vectors) in one collection."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    collection = Collection("big", str(path), model=HashingModel(4))
    collection.conn.execute(
        "insert into embeddings (collection_id, id, embedding, content) "
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 300000) "
        "select ?, printf('item-%06d', i), zeroblob(16), 'x' from n", (collection.id,))
    collection.conn.commit()
    collection.close()
    return str(path)


async def test_a_big_database_and_a_time_limit_do_not_break_another(big_db, db_path):
    ds = datasette([big_db, db_path], settings={"sql_time_limit_ms": 20})
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+hound")).json()
    assert body["ok"] and body["results"][0]["id"] == "dog-1", body
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy+hound")
    assert page.status_code == 200 and result_ids(page.text)[0] == "dog-1"
    # Searching the big one takes longer than 20 ms: one line says so, no SQL, no vector.
    response = await ds.client.get("/-/embsqlite/search.json?collection=big&q=happy")
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "the search failed: the query took longer "
                               "than this Datasette's time limit (sql_time_limit_ms)"}
    page = await ds.client.get("/-/embsqlite/search?collection=big/big&q=happy")
    assert "time limit" in page_error(page.text) and "select" not in page_error(page.text)


async def test_listing_counts_only_up_to_a_bound(big_db):
    ds = datasette([big_db])
    body = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert body["collections"][0]["count"] == 10_000 and body["collections"][0]["count_is_exact"] is False
    assert "big (10,000+ items, hashing-4)" in (await ds.client.get("/-/embsqlite/search")).text


async def test_null_embeddings_are_left_out_and_bad_metadata_is_shown(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("update embeddings set embedding = null where id = 'dog-2'")
    conn.commit()
    expected = Collection("phrases", db_path, create=False).similar("happy dog", number=10)
    conn.execute("update embeddings set metadata = '{not json' where id = 'dog-1'")
    conn.commit()
    conn.close()
    ds = datasette([db_path])
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+dog&n=10")).json()
    assert body["ok"] and [r["id"] for r in body["results"]] == [e.id for e in expected]
    assert "dog-2" not in [r["id"] for r in body["results"]]
    assert all(r["score"] is not None for r in body["results"])
    dog = next(r for r in body["results"] if r["id"] == "dog-1")
    assert dog["metadata"] == "{not json" and dog["metadata_error"] == "not valid JSON"
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy+dog&n=10")
    assert page.status_code == 200 and "dog-2" not in result_ids(page.text)
    assert "<code>{not json</code> <em>(not valid JSON)</em>" in page.text


def add_collection(db_path: str, name: str, model: str) -> None:
    """A collection row naming `model`, written directly (as llm would have)."""
    conn = sqlite3.connect(db_path)
    conn.execute("insert into collections (name, model) values (?, ?)", (name, model))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("model, message", [
    ("no-such-model", "cannot embed with model 'no-such-model': unknown, or not installed here"),
    ("needs-extra", "cannot embed with model 'needs-extra': the needs-extra model needs its extra"),
    ("failing", "cannot embed with model 'failing': the model broke"),
    # llm's OpenAI model with no key: llm refuses before any network access.
    ("text-embedding-3-small", "cannot embed with model 'text-embedding-3-small': No key found"),
])
async def test_model_errors_are_shown_in_the_page_and_json(db_path, tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    add_collection(db_path, "strange", model)
    ds = datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?collection=strange&q=x")
    assert response.status_code == 500
    body = response.json()
    assert body["ok"] is False and body["error"].startswith(message) and "\n" not in body["error"]
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/strange&q=x")
    assert page.status_code == 500
    assert page_error(page.text).startswith(message)
    assert 'name="q" value="x"' in page.text and ("phrases/strange", True) in option_values(page.text)


async def test_collections_without_a_name_or_model(db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("insert into collections (name, model) values (null, 'hashing'), ('nameless', null)")
    conn.commit()
    conn.close()
    ds = datasette([db_path])
    listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert [(c["name"], c["model"]) for c in listing["collections"]] == [("nameless", None), ("phrases", "hashing")]
    page = await ds.client.get("/-/embsqlite/search")
    assert page.status_code == 200 and "nameless (0 items, no model)" in page.text
    response = await ds.client.get("/-/embsqlite/search.json?collection=nameless&q=x")
    assert response.status_code == 500
    assert response.json()["error"] == "collection 'nameless' names no model to embed with"


# Who may see what


DENIALS = {
    "instance": {"allow": {"id": "root"}},
    "database": {"databases": {"phrases": {"allow": {"id": "root"}}}},
    "embeddings table": {"databases": {"phrases": {"tables": {"embeddings": {"allow": {"id": "root"}}}}}},
    "collections table": {"databases": {"phrases": {"tables": {"collections": {"allow": {"id": "root"}}}}}},
    "both tables and SQL, as false": {"databases": {"phrases": {
        "allow_sql": False,
        "tables": {"embeddings": {"allow": False}, "collections": {"allow": False}}}}},
}


@pytest.mark.parametrize("level", DENIALS)
async def test_denied_collections_are_not_listed_or_searchable(db_path, tmp_path, level):
    """Anonymous visitors denied at each level see neither the collection nor its items
    (a second, open database stays usable); root, where allowed, sees both."""
    other = make_db(tmp_path / "other.db", name="open")
    ds = datasette([db_path, other], config=DENIALS[level])
    anonymous: dict = {}
    search = "/-/embsqlite/search.json?collection=phrases&q=happy"
    if level == "instance":
        for path in (search, "/-/embsqlite/collections.json"):
            response = await ds.client.get(path)
            assert response.status_code == 403
            assert response.json() == {"ok": False, "error": "permission denied: you may not view this instance"}
        assert (await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy")).status_code == 403
        assert "Search embeddings" not in (await ds.client.get("/-/versions")).text
    else:
        response = await ds.client.get(search, headers=anonymous)
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error": "collection 'phrases' not found"}
        listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
        assert [c["name"] for c in listing["collections"]] == ["open"]
        page = (await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy")).text
        assert option_values(page) == [("other/open", False)]
        assert result_ids(page) == [] and "my happy hound" not in page
        body = (await ds.client.get("/-/embsqlite/search.json?collection=open&q=happy")).json()
        assert body["ok"] and body["results"]
    if "false" in level:
        return
    root = as_actor(ds, "root")
    body = (await ds.client.get(search, headers=root)).json()
    assert body["ok"] and body["results"][0]["id"] == "dog-1"
    listing = (await ds.client.get("/-/embsqlite/collections.json", headers=root)).json()
    assert {c["name"] for c in listing["collections"]} == {"phrases", "open"}
    page = (await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy", headers=root)).text
    assert result_ids(page)[0] == "dog-1"


async def test_where_obeys_the_sql_editors_pragma_rule(db_path):
    """where= may use only the PRAGMA functions Datasette's SQL editor allows, with its
    message; the editor itself refuses the same expression."""
    from datasette.utils import InvalidSql, validate_sql_select

    ds = datasette([db_path])
    refused = "exists(select 1 from pragma_compile_options)"
    with pytest.raises(InvalidSql) as editor:
        validate_sql_select(f"select {refused}")
    body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "phrases", "q": "happy", "where": refused}))).json()
    assert body["ok"] is False and body["error"].startswith(f"where {refused!r}: {str(editor.value)[:40]}")
    allowed = "exists(select 1 from pragma_table_info('embeddings'))"
    body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "phrases", "q": "happy", "where": allowed}))).json()
    assert body["ok"] and len(body["results"]) == len(ITEMS)


@pytest.mark.parametrize("config, settings", [
    ({"databases": {"phrases": {"allow_sql": False}}}, None),
    ({"allow_sql": {"id": "root"}}, None),
    (None, {"default_allow_sql": False}),
])
async def test_run_this_sql_only_for_those_who_may_run_sql(db_path, config, settings):
    ds = datasette([db_path], config=config, settings=settings)
    url = "/-/embsqlite/search?collection=phrases/phrases&q=happy+hound"
    page = (await ds.client.get(url)).text
    assert result_ids(page)[0] == "dog-1" and sql_link(page) is None
    # ...as Datasette itself refuses that visitor its SQL editor,
    assert (await ds.client.get(sql_url("phrases", "select 1"))).status_code == 403
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy")).json()
    assert body["ok"] and "sql_url" not in body
    listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
    assert [c["name"] for c in listing["collections"]] == ["phrases"]
    if config and "allow_sql" in config:  # root may
        root = as_actor(ds, "root")
        link = sql_link((await ds.client.get(url, headers=root)).text)
        assert link and (await ds.client.get(link, headers=root)).status_code == 200


async def test_search_page_without_collections(tmp_path):
    plain = tmp_path / "plain.db"
    embsqlite.connect(str(plain)).execute("create table t (x)").connection.close()
    ds = datasette([plain])
    text = (await ds.client.get("/-/embsqlite/search")).text
    assert "No database you can see here has embsqlite (or llm) collections" in text


# datasette as a command


def _datasette(*args: str, plugin: bool = True) -> subprocess.CompletedProcess:
    """Run the `datasette` command; with plugin=False, with embsqlite's plugin unregistered."""
    if plugin:
        command = [DATASETTE, *args]
    else:
        code = ("import sys; from datasette.plugins import pm; pm.unregister(name='embsqlite');"
                "from datasette.cli import cli; sys.argv[0] = 'datasette'; cli()")
        command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_datasette_get_with_no_flags(db_path):
    done = _datasette(db_path, "--get", sql_url("phrases", FUNCTIONS_SQL))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [EXPECTED_FUNCTIONS]
    done = _datasette(db_path, "--get", "/-/embsqlite/search.json?collection=phrases&q=stock+crash&n=1")
    assert json.loads(done.stdout)["results"][0]["id"] == "money"


@pytest.mark.slow
def test_datasette_load_extension_without_the_plugin(db_path):
    """`--load-extension loadable_path()` alone gives the C functions (Datasette uses
    pysqlite3 here; stdlib sqlite3 builds without enable_load_extension cannot)."""
    without = _datasette(db_path, "--get", "/-/plugins.json", plugin=False)
    assert without.returncode == 0, without.stderr
    assert not any("embsqlite" in p["name"] for p in json.loads(without.stdout))
    # Without the plugin and without the flag the functions are missing...
    missing = _datasette(db_path, "--get", sql_url("phrases", FUNCTIONS_SQL), plugin=False)
    assert "no such function" in missing.stdout + missing.stderr
    # ...and the flag brings them.
    done = _datasette(db_path, "--load-extension", embsqlite.loadable_path(),
                      "--get", sql_url("phrases", FUNCTIONS_SQL), plugin=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [EXPECTED_FUNCTIONS]


@pytest.mark.slow
def test_datasette_load_extension_with_the_plugin_too(db_path):
    done = _datasette(db_path, "--load-extension", embsqlite.loadable_path(),
                      "--get", sql_url("phrases", FUNCTIONS_SQL))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [EXPECTED_FUNCTIONS]


# a real server, and a real browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`datasette serve` on 127.0.0.1 over a MiniLM collection, a hashing one, and one whose
    model does not exist; yields the base URL."""
    db = make_db(tmp_path / "minilm.db", model_id="all-MiniLM-L6-v2", name="minilm")
    make_db(tmp_path / "minilm.db", model_id="hashing", name="phrases")
    add_collection(db, "strange", "no-such-model")
    port = _free_port()
    process = subprocess.Popen(
        [DATASETTE, "serve", db, "-h", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"datasette exited: {process.stderr.read().decode()}")
            try:
                if httpx.get(f"{base}/-/versions.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("datasette did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.mark.slow
def test_real_server_functions_and_search(server, tmp_path):
    rows = httpx.get(server + sql_url("minilm", FUNCTIONS_SQL), timeout=30).json()
    assert rows == [EXPECTED_FUNCTIONS]
    # The page embeds the text on the server with the collection's model (MiniLM).
    body = httpx.get(f"{server}/-/embsqlite/search.json",
                     params={"collection": "minilm", "q": "a joyful dog", "n": 5}, timeout=60).json()
    assert body["ok"] and body["model"] == "all-MiniLM-L6-v2"
    ranked = [r["id"] for r in body["results"]]
    assert ranked[0] == "dog-1" and ranked[-1] == "money", body
    expected = Collection("minilm", str(tmp_path / "minilm.db"), create=False).similar("a joyful dog", 5)
    assert [r["score"] for r in body["results"]] == pytest.approx([e.score for e in expected], abs=1e-6)
    # The same ranking from SQL, by meaning, with no vector in sight.
    sql = ("select id from embeddings where collection_id = (select id from collections where name = 'minilm')"
           " order by cosine_similarity(embedding, embedding_from_text('all-MiniLM-L6-v2', :q)) desc limit 5")
    rows = httpx.get(server + sql_url("minilm", sql, q="a joyful dog"), timeout=60).json()
    assert [r["id"] for r in rows] == ranked
    page = httpx.get(f"{server}/-/embsqlite/search",
                     params={"collection": "minilm/phrases", "q": "stock crash", "n": 1}, timeout=30)
    assert page.status_code == 200
    assert result_ids(page.text) == ["money"]


def chromium_dom(url: str, profile) -> str:
    """The DOM of `url` after load, as Debian's headless Chromium renders it."""
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is required: apt-get install chromium"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HOME": str(profile)},
    )
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_search_page_in_headless_chromium(server, tmp_path):
    """Results, no results, and a model error, each rendered by a real browser."""
    page = f"{server}/-/embsqlite/search?"
    dom = chromium_dom(page + "collection=minilm%2Fminilm&q=a+joyful+dog&n=3", tmp_path / "profile")
    assert "<title>Search embeddings: a joyful dog</title>" in dom
    assert result_ids(dom) == ["dog-1", "dog-2", "cat-1"]
    assert "3 most similar items to\n<strong>a joyful dog</strong>" in dom
    assert '<option value="minilm/minilm" selected="">' in dom and "Run this SQL" in dom
    assert f'title="Datasette v{DATASETTE_VERSION}"' in dom
    dom = chromium_dom(page + "collection=minilm%2Fphrases&q=happy&prefix=zzz", tmp_path / "profile")
    assert "No results:" in dom and "<table" not in dom and result_ids(dom) == []
    dom = chromium_dom(page + "collection=minilm%2Fstrange&q=hello", tmp_path / "profile")
    assert page_error(dom).startswith("cannot embed with model 'no-such-model': unknown, or not installed here")
    assert '<input id="es-q" type="search" name="q" value="hello"' in dom
    assert '<option value="minilm/strange" selected="">' in dom


def schema_calling_embedding_from_text(path) -> str:
    """A database whose generated column, CHECK and index call embedding_from_text, written
    where it was an ordinary function."""
    import pysqlite3.dbapi2 as pysqlite3

    writer = pysqlite3.connect(str(path))
    writer.create_function("embedding_from_text", 2, lambda model, text: b"\0\0\0\0",
                           deterministic=True)
    writer.executescript("""
        create table gen(body text, e blob as (hex(embedding_from_text('hashing', body))));
        create table chk(body text check (embedding_from_text('hashing', body) is not null));
        create table ix(body text);
        create index ix_e on ix(embedding_from_text('hashing', body));
        insert into gen(body) values ('hello');
        insert into chk(body) values ('hello');
        insert into ix(body) values ('hello');
    """)
    writer.commit()
    writer.close()
    return str(path)


async def test_a_schema_that_calls_embedding_from_text_fails_closed(db_path, tmp_path, monkeypatch):
    """Opening such a database runs no model: SQLite reports "unsafe use". On 0.65 its
    tables fail and the other databases work as usual; 1.0 reads every database's schema
    into its catalog on each request, so there the whole instance fails closed."""
    from embsqlite import sql_embed

    called = []
    monkeypatch.setattr(sql_embed, "get_embedding_model", lambda model_id: called.append(model_id))
    sql_embed.clear_cache()
    bad = schema_calling_embedding_from_text(tmp_path / "schemacalls.db")
    ds = datasette([db_path, bad])
    paths = ("/schemacalls/gen.json?_shape=array", sql_url("schemacalls", "select * from gen"),
             sql_url("schemacalls", "select count(*) from ix"))
    if DATASETTE_1:
        for path in paths + ("/-/versions.json",):
            with pytest.raises(Exception, match=r"unsafe use of embedding_from_text\(\)"):
                await ds.client.get(path)
    else:
        for path in paths:
            response = await ds.client.get(path)
            assert response.status_code >= 400, (path, response.text[:300])
            assert "unsafe use of embedding_from_text()" in response.text, (path, response.text[:300])
        listing = (await ds.client.get("/-/embsqlite/collections.json")).json()
        assert [c["key"] for c in listing["collections"]] == ["phrases/phrases"]
    assert called == []


def corrupt_db(path) -> str:
    """An llm database whose first page (the schema) past the header is garbage."""
    source = make_db(path, name="held")
    check = sqlite3.connect(source)
    check.execute("pragma journal_mode=delete")
    check.close()
    data = bytearray(open(source, "rb").read())
    data[100:4096] = b"\xff" * (4096 - 100)
    with open(path, "wb") as out:
        out.write(data)
    return str(path)


HOLD_LOCK = """
import sqlite3, sys
holder = sqlite3.connect(sys.argv[1], isolation_level=None)
holder.execute("begin exclusive")
holder.execute("insert into collections(name, model) values ('pending', 'hashing')")
print("locked", flush=True)
sys.stdin.read()
holder.execute("rollback")
"""


@pytest.fixture
def locked_db(tmp_path):
    """An llm database in rollback-journal mode, held under an exclusive lock by another
    process (POSIX locks do not conflict within one process) for the test's duration."""
    path = make_db(tmp_path / "locked.db", name="held")
    setup = sqlite3.connect(path)
    setup.execute("pragma journal_mode=delete")
    setup.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == "locked\n"
    yield path
    holder.communicate("", timeout=30)


@pytest.mark.slow
async def test_a_locked_database_is_reported_not_fatal(db_path, locked_db):
    """Each read of the locked database waits for SQLite's busy timeout, then fails."""
    await check_one_database_unreadable(db_path, locked_db)


async def test_a_corrupt_database_is_reported_not_fatal(db_path, tmp_path):
    await check_one_database_unreadable(db_path, corrupt_db(tmp_path / "corrupt.db"))


async def check_one_database_unreadable(db_path: str, bad: str) -> None:
    """On 0.65 even the permission check reads each database's schema; one database that
    cannot be read is named in the listing and page, and every other one works."""
    name = os.path.splitext(os.path.basename(bad))[0]
    ds = datasette([db_path, bad])
    if DATASETTE_1:
        # 1.0 itself reads every database's schema on each request, before any plugin
        with pytest.raises(Exception, match="database is locked|malformed"):
            await ds.client.get("/-/versions.json")
        return
    listing = await ds.client.get("/-/embsqlite/collections.json")
    assert listing.status_code == 200, listing.text[:300]
    assert [c["key"] for c in listing.json()["collections"]] == ["phrases/phrases"]
    assert [p["database"] for p in listing.json()["unreadable"]] == [name]
    response = await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=dog")
    assert response.status_code == 200 and response.json()["results"], response.text[:300]
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=dog")
    assert page.status_code == 200 and result_ids(page.text)
    assert f"Could not read <strong>{name}</strong>" in page.text
    response = await ds.client.get(f"/-/embsqlite/search.json?collection={name}/held&q=dog")
    assert response.status_code in (400, 404) and not response.json()["ok"]


def _no_constants(name: str):
    raise ValueError(f"not JSON: {name}")


@pytest.mark.parametrize("stored", ["NaN", '{"x": -Infinity}', "[Infinity]", '{"big": 1e400}',
                                    "[" * 100_000])
async def test_metadata_that_is_not_strict_json_is_returned_as_text(db_path, stored):
    """Python's json reads NaN, Infinity, 1e400 (as infinity) and would write them back:
    such metadata is text with metadata_error, so the response is always strict JSON."""
    conn = sqlite3.connect(db_path)
    conn.execute("update embeddings set metadata = ? where id = 'dog-1'", (stored,))
    conn.commit()
    conn.close()
    ds = datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+hound")
    assert response.status_code == 200
    body = json.loads(response.text, parse_constant=_no_constants)
    dog = next(r for r in body["results"] if r["id"] == "dog-1")
    assert dog["metadata"] == stored and dog["metadata_error"] == "not valid JSON"
    page = await ds.client.get("/-/embsqlite/search?collection=phrases/phrases&q=happy+hound")
    assert page.status_code == 200 and "(not valid JSON)" in page.text


@pytest.mark.parametrize("query", ["n=" + "9" * 5000 + "&collection=phrases&q=x",
                                   "collection=" + "c" * 20_000 + "&q=x",
                                   "db=phrases&collection=" + "c" * 20_000 + "&q=x"])
async def test_errors_quote_at_most_a_hundred_characters_of_the_request(db_path, query):
    ds = datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?" + query)
    assert response.status_code in (400, 404)
    error = response.json()["error"]
    assert len(error) < 250 and "..." in error, error
    page = await ds.client.get("/-/embsqlite/search?" + query)
    assert len(page_error(page.text)) < 250


async def test_unknown_model_errors_do_not_list_the_installed_models(db_path):
    add_collection(db_path, "strange", "no-such-model")
    ds = datasette([db_path])
    for response in (await ds.client.get("/-/embsqlite/search.json?collection=strange&q=x"),
                     await ds.client.get(sql_url("phrases", "select embedding_from_text('nope', 'x')"))):
        error = response.json()["error"]
        assert "unknown, or not installed here" in error
        assert "hashing" not in error and "MiniLM" not in error and "Known" not in error


async def test_embedding_from_text_refuses_a_text_past_its_limit(db_path, monkeypatch):
    """In the SQL editor and on the search page, a text longer than the limit is a 400
    naming the limit, before any model runs."""
    from embsqlite import sql_embed

    called = []
    monkeypatch.setattr(sql_embed, "get_embedding_model", lambda model_id: called.append(model_id))
    sql_embed.clear_cache()
    ds = datasette([db_path])
    sql = "select length(embedding_from_text('hashing', replace(hex(zeroblob(500000)), '00', 'a ')))"
    response = await ds.client.get(sql_url("phrases", sql))
    assert response.status_code == 400
    assert ("embedding_from_text: text is 1,000,000 bytes of UTF-8, more than 100,000 characters"
            in response.json()["error"])
    # the limit is configurable, and a URL holds less than 100,000 characters anyway
    monkeypatch.setenv("EMBSQLITE_SQL_MAX_TEXT", "1000")
    response = await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "phrases", "q": "a" * 1001}))
    assert response.status_code == 400
    assert response.json()["error"] == ("q is too long: text is 1,001 characters long;"
                                        " the limit is 1,000 ($EMBSQLITE_SQL_MAX_TEXT)")
    page = await ds.client.get("/-/embsqlite/search?" + urllib.parse.urlencode(
        {"collection": "phrases/phrases", "q": "é" * 1001}))
    assert page.status_code == 400 and page_error(page.text).startswith("q is too long")
    assert called == []


# Filtered search: metadata= for everyone, where= only with execute-sql


async def test_search_filters_match_the_library(db_path):
    collection = Collection("phrases", db_path, create=False)
    expected = collection.similar("happy dog", 5, where="json_extract(metadata, '$.n') >= cast(:low as integer)",
                                  where_args={"low": "1"}, metadata={"n": 2})
    assert [e.id for e in expected] == ["cat-1"]
    ds = datasette([db_path])
    query = {"collection": "phrases", "q": "happy dog", "n": "5", "metadata": '{"n": 2}',
             "where": "json_extract(metadata, '$.n') >= cast(:low as integer)", "low": "1"}
    body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(query))).json()
    assert body["ok"], body
    assert [(r["id"], r["score"]) for r in body["results"]] == [(e.id, e.score) for e in expected]
    assert body["params"]["low"] == "1" and body["params"]["metadata_value_1"] == 2
    assert body["where"] == query["where"] and body["metadata"] == '{"n": 2}'
    for wanted in ({"n": 3}, {"n": 0}, {"n": "0"}):
        expected = collection.similar("happy dog", 5, metadata=wanted)
        body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
            {"collection": "phrases", "q": "happy dog", "metadata": json.dumps(wanted)}))).json()
        assert [(r["id"], r["score"]) for r in body["results"]] == [(e.id, e.score) for e in expected]
    # the page: both fields, the parameter's own field, the same rows, a working SQL link
    page = (await ds.client.get("/-/embsqlite/search?" + urllib.parse.urlencode(
        {**query, "collection": "phrases/phrases"}))).text
    assert result_ids(page) == ["cat-1"]
    assert 'name="where"' in page and 'name="metadata"' in page and 'name="low" value="1"' in page
    link = sql_link(page)
    assert link is not None
    rows = (await ds.client.get(link.replace("/-/query?", "/-/query.json?").replace("/phrases?", "/phrases.json?")
                                + "&_shape=array")).json()
    assert [r["id"] for r in rows] == ["cat-1"]
    collection.close()


@pytest.mark.parametrize("config, settings", [
    ({"databases": {"phrases": {"allow_sql": False}}}, None),
    ({"allow_sql": {"id": "root"}}, None),
    (None, {"default_allow_sql": False}),
])
async def test_where_needs_permission_to_execute_sql(db_path, config, settings):
    """An SQL expression can read any table (a subquery), so where= is refused, in one
    line, to an actor who may not run SQL; metadata= still works for them."""
    ds = datasette([db_path], config=config, settings=settings)
    where = {"collection": "phrases", "q": "happy", "where": "(select count(*) from collections) > 0"}
    response = await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(where))
    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "where= needs permission to execute SQL in database"
                               " 'phrases'; use metadata= (a JSON object of key/value equalities) instead"}
    page = await ds.client.get("/-/embsqlite/search?" + urllib.parse.urlencode({**where, "collection": "phrases/phrases"}))
    assert page.status_code == 403 and page_error(page.text).startswith("where= needs permission")
    assert result_ids(page.text) == []
    assert 'name="where"' not in page.text and 'name="metadata"' in page.text
    body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "phrases", "q": "happy", "metadata": '{"n": 1}'}))).json()
    assert body["ok"] and [r["id"] for r in body["results"]] == ["dog-2"]
    if config and "allow_sql" in config:  # root may
        root = as_actor(ds, "root")
        body = (await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(where), headers=root)).json()
        assert body["ok"] and len(body["results"]) == len(ITEMS)
        assert 'name="where"' in (await ds.client.get("/-/embsqlite/search", headers=root)).text


@pytest.mark.parametrize("args, error", [
    ({"where": "nosuch = 1"}, "filter 'nosuch = 1': no such column: nosuch"),
    ({"where": "1) or (1"}, "filter '1) or (1': ')' closes a parenthesis the expression did not open"),
    ({"where": "1; select 1"}, "filter '1; select 1': ';' is not allowed in a filter"),
    ({"where": "id = :q"}, "where 'id = :q': parameter :q is one of the page's own; choose another name"),
    ({"where": "id = :x"}, "filter 'id = :x': no value for parameter :x in the URL (name=value)"),
    ({"where": "id = ?"}, "filter 'id = ?': parameter ? is positional: use :name parameters, their values"
                          " from the URL (name=value)"),
    ({"metadata": "[1]"}, 'metadata must be a JSON object such as {"kind": "pet"}, not \'[1]\''),
    ({"metadata": "{"}, "metadata must be a JSON object, not '{'"),
    ({"metadata": '{"n": NaN}'}, "metadata must be a JSON object, not '{\"n\": NaN}'"),
    ({"metadata": '{"n": [1]}'}, "metadata value of 'n' must be str, int, float, bool or None, not list"),
])
async def test_filter_errors_are_one_line(db_path, args, error):
    ds = datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "phrases", "q": "happy", **args}))
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": error}


async def test_a_filter_obeys_the_time_limit(big_db):
    ds = datasette([big_db], settings={"sql_time_limit_ms": 20})
    response = await ds.client.get("/-/embsqlite/search.json?" + urllib.parse.urlencode(
        {"collection": "big", "q": "happy", "where": "length(hex(randomblob(2000))) > 0"}))
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "the search failed: the query took longer "
                               "than this Datasette's time limit (sql_time_limit_ms)"}


async def test_the_search_page_reads_the_vector_file_with_the_sql_answer(db_path):
    """A tracked database (embsqlite wrote it) is searched from its vector file, built
    by the first search beside the database; the answer is the SQL statement's."""
    from embsqlite import vectorfile

    ds = datasette([db_path])
    vectors = db_path + "-embsqlite-1.vectors"
    assert not os.path.exists(vectors)
    url = "/-/embsqlite/search.json?collection=phrases&q=happy+hound&n=4"
    body = (await ds.client.get(url)).json()
    assert body["ok"] and os.path.exists(vectors)
    built = os.stat(vectors).st_mtime_ns
    again = (await ds.client.get(url)).json()
    assert os.stat(vectors).st_mtime_ns == built  # read, not written again
    rows = (await ds.client.get(sql_url("phrases", body["sql"], **body["params"]))).json()
    assert [(r["id"], r["score"], r["content"]) for r in rows] == [
        (r["id"], r["score"], r["content"]) for r in body["results"]] == [
        (r["id"], r["score"], r["content"]) for r in again["results"]]
    vectorfile.configure(enabled=False)
    try:
        sql_only = (await ds.client.get(url + "&prefix=dog-")).json()
    finally:
        vectorfile.configure(enabled=True)
    assert (await ds.client.get(url + "&prefix=dog-")).json()["results"] == sql_only["results"]
