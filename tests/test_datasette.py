"""The Datasette plugin: SQL functions with no flags, `--load-extension` without the plugin,
and the search page, through Datasette in-process, `datasette --get`, and a real server."""
from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest
from datasette.app import Datasette

import embsqlite
from embsqlite.collection import Collection

DATASETTE = os.path.join(os.path.dirname(sys.executable), "datasette")
FUNCTIONS_SQL = (
    "select embsqlite_version() as version,"
    " cosine_similarity(embedding_from_json('[1,2,3]'), embedding_from_json('[1,2,4]')) as cosine,"
    " embedding_to_json(embedding_from_json('[0.5,-2]')) as json,"
    " embedding_dimensions(embedding_from_json('[1,2,3]')) as dims,"
    " embedding_norm(embedding_from_json('[3,4]')) as norm"
)
EXPECTED_FUNCTIONS = {"version": embsqlite.__version__, "cosine": pytest.approx(0.9914601339836675),
                      "json": "[0.5,-2]", "dims": 3, "norm": 5.0}
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


def make_db(path, model_id="hashing", name="phrases"):
    collection = Collection(name, str(path), model_id=model_id)
    collection.embed_multi_with_metadata(
        [(k, v, {"n": i}) for i, (k, v) in enumerate(ITEMS.items())], store=True
    )
    collection.close()
    return str(path)


@pytest.fixture
def db_path(tmp_path):
    return make_db(tmp_path / "phrases.db")


def sql_url(database: str, sql: str) -> str:
    return f"/{database}.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"})


# In-process Datasette


async def test_plugin_is_installed_and_functions_need_no_flags(db_path):
    ds = Datasette([db_path])
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
    ds = Datasette([db_path])
    sql = ("select id, cosine_similarity(embedding, embedding_from_json(:q)) as score from embeddings "
           "order by score desc, id")
    url = "/phrases.json?" + urllib.parse.urlencode({"sql": sql, "q": json.dumps(query), "_shape": "array"})
    rows = (await ds.client.get(url)).json()
    assert [(r["id"], r["score"]) for r in rows] == [(e.id, e.score) for e in expected]


async def test_sql_function_errors_come_back_as_errors(db_path):
    ds = Datasette([db_path])
    response = await ds.client.get(sql_url("phrases", "select cosine_similarity(x'00000000', x'0000')"))
    assert response.status_code == 400
    assert "cosine_similarity" in response.json()["error"]


async def test_search_json_matches_collection_similar(db_path):
    expected = Collection("phrases", db_path, create=False).similar("happy hound", number=3)
    ds = Datasette([db_path])
    response = await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy+hound&n=3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["database"] == "phrases" and body["model"] == "hashing"
    assert [(r["id"], r["score"]) for r in body["results"]] == [(e.id, e.score) for e in expected]
    assert body["results"][0] == {"id": "dog-1", "score": expected[0].score,
                                  "content": "my happy hound", "metadata": {"n": 0}}
    assert "cosine_similarity(embedding, embedding_from_json(:query))" in body["sql"]


async def test_search_prefix_and_db_parameter(db_path):
    ds = Datasette([db_path])
    body = (await ds.client.get("/-/embsqlite/search.json?db=phrases&collection=phrases&q=happy&prefix=dog-")).json()
    assert body["ok"] and {r["id"] for r in body["results"]} == {"dog-1", "dog-2"}


async def test_search_html_page_and_its_sql_link(db_path):
    ds = Datasette([db_path])
    page = await ds.client.get("/-/embsqlite/search?collection=phrases&q=happy+hound&n=2")
    assert page.status_code == 200
    text = page.text
    assert "<h1>Search embeddings</h1>" in text
    assert '<option value="phrases" selected>' in text
    ids = re.findall(r'<td class="id">([^<]*)</td>', text)
    scores = [float(s) for s in re.findall(r'<td class="score">([^<]*)</td>', text)]
    expected = Collection("phrases", db_path, create=False).similar("happy hound", number=2)
    assert ids == [e.id for e in expected]
    assert scores == [round(e.score, 4) for e in expected]
    # "Run this SQL" opens Datasette's own SQL page with the same query and results.
    link = html.unescape(re.search(r'<a href="([^"]+)">Run this SQL</a>', text).group(1))
    path, query = link.split("?", 1)
    rows = (await ds.client.get(f"{path}.json?{query}&_shape=array")).json()
    assert [(r["id"], r["score"]) for r in rows] == [(e.id, e.score) for e in expected]


async def test_search_page_form_and_menu_link(db_path):
    ds = Datasette([db_path])
    text = (await ds.client.get("/-/embsqlite/search")).text
    assert 'name="q"' in text and "phrases (phrases, hashing, 5 items)" in text
    assert 'href="/-/embsqlite/search">Search embeddings</a>' in (await ds.client.get("/")).text


async def test_search_errors(db_path, tmp_path):
    ds = Datasette([db_path])

    async def error(query, status):
        response = await ds.client.get("/-/embsqlite/search.json?" + query)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["ok"] is False
        return body["error"]

    assert "not found" in await error("collection=nope&q=x", 404)
    assert "not found in database 'other'" in await error("collection=phrases&db=other&q=x", 404)
    assert "pass q=" in await error("collection=phrases", 400)
    assert "pass collection=" in await error("q=x", 400)
    assert "n must be" in await error("collection=phrases&q=x&n=0", 400)
    assert "n must be" in await error("collection=phrases&q=x&n=ten", 400)
    page = await ds.client.get("/-/embsqlite/search?collection=nope&q=x")
    assert page.status_code == 404 and "collection &#39;nope&#39; not found" in page.text
    # A collection whose model is not installed: a clear error, not a crash.
    other = Collection("strange", db_path, model_id="hashing")
    other.conn.execute("update collections set model = 'no-such-model' where name = 'strange'")
    other.conn.commit()
    other.close()
    assert "cannot embed with model 'no-such-model'" in await error("collection=strange&q=x", 500)


async def test_search_across_databases(tmp_path):
    first = make_db(tmp_path / "first.db")
    second = make_db(tmp_path / "second.db")
    ds = Datasette([first, second])
    assert "several databases" in (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=x")).json()["error"]
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=happy&db=second")).json()
    assert body["ok"] and body["database"] == "second"


async def test_search_page_without_collections(tmp_path):
    plain = tmp_path / "plain.db"
    embsqlite.connect(str(plain)).execute("create table t (x)").connection.close()
    ds = Datasette([str(plain)])
    text = (await ds.client.get("/-/embsqlite/search")).text
    assert "No database here has embsqlite (or llm) collections" in text


async def test_search_respects_database_permissions(db_path):
    ds = Datasette([db_path], metadata={"databases": {"phrases": {"allow": {"id": "root"}}}})
    body = (await ds.client.get("/-/embsqlite/search.json?collection=phrases&q=x")).json()
    assert body["ok"] is False and "not found" in body["error"]


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


def test_datasette_get_with_no_flags(db_path):
    done = _datasette(db_path, "--get", sql_url("phrases", FUNCTIONS_SQL))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [EXPECTED_FUNCTIONS]
    done = _datasette(db_path, "--get", "/-/embsqlite/search.json?collection=phrases&q=stock+crash&n=1")
    assert json.loads(done.stdout)["results"][0]["id"] == "money"


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


def test_datasette_load_extension_with_the_plugin_too(db_path):
    done = _datasette(db_path, "--load-extension", embsqlite.loadable_path(),
                      "--get", sql_url("phrases", FUNCTIONS_SQL))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [EXPECTED_FUNCTIONS]


# a real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`datasette serve` on 127.0.0.1 over a MiniLM collection; yields the base URL."""
    db = make_db(tmp_path / "minilm.db", model_id="all-MiniLM-L6-v2", name="minilm")
    make_db(tmp_path / "minilm.db", model_id="hashing", name="phrases")
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
    page = httpx.get(f"{server}/-/embsqlite/search",
                     params={"collection": "phrases", "q": "stock crash", "n": 1}, timeout=30)
    assert page.status_code == 200
    assert re.findall(r'<td class="id">([^<]*)</td>', page.text) == ["money"]
