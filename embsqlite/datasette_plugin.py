"""Datasette plugin (entry point group `datasette`): the SQL functions on every connection,
with no flags, and a search page.

- `prepare_connection`: `embsqlite.register(conn)`, so `datasette some.db` can run
  `cosine_similarity(...)` and the other functions (C code, through the connection's own
  extension loading when Datasette uses pysqlite3, or the stdlib path otherwise).
- `/-/embsqlite/search?db=DB&collection=NAME&q=TEXT[&n=10][&prefix=P]`: embeds `q` on the
  server with the collection's own model, then ranks the collection with one SQL query
  over `cosine_similarity`, run through Datasette like any other query. HTML, or JSON at
  `/-/embsqlite/search.json` with the same parameters.
"""
from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any, Optional

from datasette import hookimpl
from datasette.utils.asgi import Response

from . import vectors
from .collection import prefix_range
from .models import ModelNotInstalledError, UnknownModelError, get_embedding_model
from .sql import register

SEARCH_PATH = "/-/embsqlite/search"
MAX_RESULTS = 100  # Datasette's default page size

SEARCH_SQL = """select id, cosine_similarity(embedding, embedding_from_json(:query)) as score,
  content, metadata
from embeddings
where collection_id = :collection_id{prefix}
order by score desc, id
limit :number"""


@hookimpl
def prepare_connection(conn: Any) -> None:
    register(conn)


@hookimpl
def register_routes() -> list:
    return [(r"^/-/embsqlite/search(?P<as_json>\.json)?$", search)]


@hookimpl
def menu_links(datasette: Any) -> list:
    return [{"href": datasette.urls.path(SEARCH_PATH), "label": "Search embeddings"}]


class SearchError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


async def _collections(datasette: Any, actor: Any) -> list[dict]:
    """Every collection in every database this actor may view."""
    found = []
    for name, db in datasette.databases.items():
        if name == "_internal":
            continue
        if not await datasette.permission_allowed(actor, "view-database", name, default=True):
            continue
        tables = set(await db.table_names())
        if not {"collections", "embeddings"} <= tables:
            continue
        rows = await db.execute(
            "select c.name, c.model, count(e.id) from collections c left join embeddings e "
            "on e.collection_id = c.id group by c.id order by c.name"
        )
        found.extend({"database": name, "name": r[0], "model": r[1], "count": r[2]} for r in rows)
    return found


def _number(text: Optional[str]) -> int:
    if text in (None, ""):
        return 10
    try:
        number = int(text)
    except ValueError:
        raise SearchError(f"n must be a whole number, not {text!r}") from None
    if not 1 <= number <= MAX_RESULTS:
        raise SearchError(f"n must be between 1 and {MAX_RESULTS}")
    return number


async def _search(datasette: Any, request: Any, available: list[dict]) -> dict:
    """Run the search the request asks for; raises SearchError with a message and status."""
    args = request.args
    name = args.get("collection") or ""
    query = args.get("q") or ""
    database = args.get("db") or ""
    prefix = args.get("prefix") or ""
    number = _number(args.get("n"))
    if not name:
        raise SearchError("pass collection= (and db= when several databases have it)")
    matches = [c for c in available if c["name"] == name and (not database or c["database"] == database)]
    if not matches:
        where = f" in database {database!r}" if database else ""
        raise SearchError(f"collection {name!r} not found{where}", 404)
    if len(matches) > 1:
        dbs = ", ".join(c["database"] for c in matches)
        raise SearchError(f"collection {name!r} is in several databases ({dbs}): pass db=")
    chosen = matches[0]
    if not query:
        raise SearchError("pass q= with the text to search for")
    db = datasette.get_database(chosen["database"])
    row = (await db.execute("select id, model from collections where name = ?", [name])).first()
    collection_id, model_id = row[0], row[1]
    try:
        model = get_embedding_model(model_id)
    except (UnknownModelError, ModelNotInstalledError) as error:
        raise SearchError(f"cannot embed with model {model_id!r}: {error}", 500) from None
    loop = asyncio.get_running_loop()
    try:
        vector = await loop.run_in_executor(None, model.embed, query)
    except ValueError as error:
        raise SearchError(str(error)) from None
    # The C function writes the vector as the shortest JSON that reads back exactly.
    query_json = (await db.execute("select embedding_to_json(?)", [vectors.encode(vector)])).first()[0]
    params: dict[str, Any] = {"query": query_json, "collection_id": collection_id, "number": number}
    prefix_sql = ""
    if prefix:
        encoding = (await db.execute("pragma encoding")).first()[0]
        low, high = prefix_range(prefix, encoding)
        params["low"] = low
        prefix_sql = "\n  and id >= :low"
        if high is not None:
            params["high"] = high
            prefix_sql += " and id < :high"
    sql = SEARCH_SQL.format(prefix=prefix_sql)
    try:
        rows = (await db.execute(sql, params)).rows
    except Exception as error:  # a dimension mismatch, a time limit, ...
        raise SearchError(f"the search query failed: {error}") from None
    results = [
        {"id": r[0], "score": r[1], "content": r[2],
         "metadata": json.loads(r[3]) if r[3] else None}
        for r in rows
    ]
    sql_url = datasette.urls.database(chosen["database"]) + "?" + urllib.parse.urlencode(
        {"sql": sql, **{k: str(v) for k, v in params.items()}}
    )
    return {
        "database": chosen["database"],
        "collection": name,
        "model": model_id,
        "q": query,
        "prefix": prefix or None,
        "number": number,
        "sql": sql,
        "sql_url": sql_url,
        "results": results,
    }


async def search(datasette: Any, request: Any) -> Response:
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    as_json = bool(request.url_vars.get("as_json"))
    available = await _collections(datasette, request.actor)
    searched = bool(request.args.get("collection") or request.args.get("q"))
    outcome: Optional[dict] = None
    error: Optional[str] = None
    status = 200
    if searched or as_json:
        try:
            outcome = await _search(datasette, request, available)
        except SearchError as failure:
            error, status = str(failure), failure.status
    if as_json:
        body = {"ok": error is None, **(outcome or {})}
        if error is not None:
            body["error"] = error
        else:
            body.pop("sql_url", None)
        return Response.json(body, status=status)
    template = datasette.jinja_env.from_string(TEMPLATE)
    html = await datasette.render_template(
        template,
        {
            "collections": available,
            "args": request.args,
            "outcome": outcome,
            "error": error,
            "json_url": datasette.urls.path(SEARCH_PATH + ".json") + (
                "?" + request.query_string if request.query_string else ""),
        },
        request=request,
        view_name="embsqlite_search",
    )
    return Response.html(html, status=status)


TEMPLATE = """{% extends "base.html" %}
{% block title %}Search embeddings{% endblock %}
{% block content %}
<h1>Search embeddings</h1>
{% if not collections %}
<p>No database here has embsqlite (or llm) collections. Make one with
<code>embsqlite embed-multi NAME items.csv -d DATABASE.db</code>.</p>
{% else %}
<form class="core" action="" method="get">
  <p>
    <label for="es-collection">Collection</label>
    <select id="es-collection" name="collection">
      {% for c in collections %}
      <option value="{{ c.name }}"{% if args.get('collection') == c.name %} selected{% endif %}>
        {{ c.name }} ({{ c.database }}, {{ c.model }}, {{ c.count }} items)</option>
      {% endfor %}
    </select>
    {% if args.get('db') %}<input type="hidden" name="db" value="{{ args.get('db') }}">{% endif %}
  </p>
  <p>
    <input type="search" name="q" value="{{ args.get('q', '') }}" placeholder="Text to search for" size="50" aria-label="Text to search for">
    <input type="text" name="prefix" value="{{ args.get('prefix', '') }}" placeholder="id prefix" size="12" aria-label="Only ids starting with">
    <input type="number" name="n" min="1" max="100" value="{{ args.get('n', '10') }}" aria-label="Number of results">
    <input type="submit" value="Search">
  </p>
</form>
{% endif %}
{% if error %}<p class="message-error">{{ error }}</p>{% endif %}
{% if outcome %}
<p>{{ outcome.results|length }} most similar in <strong>{{ outcome.collection }}</strong>
  ({{ outcome.database }}), embedded with <code>{{ outcome.model }}</code>.
  <a href="{{ outcome.sql_url }}">Run this SQL</a> &middot; <a href="{{ json_url }}">JSON</a></p>
<div class="table-wrapper">
<table class="rows-and-columns embsqlite-results">
  <thead><tr><th>score</th><th>id</th><th>content</th><th>metadata</th></tr></thead>
  <tbody>
  {% for r in outcome.results %}
  <tr>
    <td class="score">{{ "%.4f"|format(r.score) }}</td>
    <td class="id">{{ r.id }}</td>
    <td>{{ r.content or "" }}</td>
    <td>{% if r.metadata %}<code>{{ r.metadata|tojson }}</code>{% endif %}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
</div>
<details><summary>SQL</summary><pre>{{ outcome.sql }}</pre></details>
{% endif %}
{% endblock %}
"""
