"""Datasette plugin (entry point group `datasette`), for Datasette 0.65 and the 1.0 alphas:
the SQL functions on every connection with no flags, and a semantic search page.

- `prepare_connection`: `embsqlite.register(conn, embed_text=True)`: the C functions and
  `embedding_from_text(model_id, text)`, so SQL can rank by meaning.
- `/-/embsqlite/search?collection=DB/NAME&q=TEXT[&n=10][&prefix=P]` (or `db=DB&collection=NAME`):
  embeds `q` with the collection's own model, then ranks the collection with one SQL
  query that a person can read and re-run in Datasette's SQL editor. HTML, or JSON at
  `/-/embsqlite/search.json`. `metadata={"key": value}` keeps rows whose metadata has
  those values; `where=EXPR` (its `:name` parameters from `name=` arguments) keeps rows
  for which an SQL expression is true, for actors who may execute SQL in the database
  only (an expression can read any table).
- `/-/embsqlite/collections.json`: the collections this actor may see.

Who sees what is `datasette_access`'s business; each database is read on its own, so one
that is slow, broken or not llm's never breaks another's search.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Any, Optional

from datasette import hookimpl
from datasette.utils import InvalidSql, tilde_decode, tilde_encode, validate_sql_select
from datasette.utils.asgi import Forbidden, Response
from datasette.version import __version__ as datasette_version

from . import idorder, schema, vectorfile
from .collection import summary_sql
from .datasette_access import (
    is_datasette_1,
    may_execute_sql,
    may_view_collections,
    may_view_database,
    may_view_instance,
)
from .filters import Filter, FilterError, describe, metadata_rule, parse_where
from .idorder import prefix_range
from .loading import register
from .ranking import filter_sql, ranking_sql
from .sql_embed import FUNCTION as EMBED_FUNCTION
from .sql_embed import TextTooLong, echo, embed_text, one_line, register_embed_text

SEARCH_PATH = "/-/embsqlite/search"
COLLECTIONS_PATH = "/-/embsqlite/collections.json"
TEMPLATE = "embsqlite_search.html"
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
MAX_RESULTS = 100  # Datasette's default page size
DEFAULT_RESULTS = 10
# The listing counts at most this many items per collection, so a page costs the same
# whatever the size of the databases behind it.
COUNT_CAP = 10_000

# Parameters of the search page itself; a where= expression's :names may not take them.
PAGE_PARAMETERS = frozenset(("q", "n", "collection", "db", "prefix", "prefix_end", "where", "metadata"))
COLLECTION_ID_SQL = "(select id from collections where name = :collection)"

LIST_SQL = summary_sql(text_names_only=True)
FIND_SQL = "select model from collections where name = :collection"


@hookimpl
def prepare_connection(conn: Any) -> None:
    """The C functions, then `embedding_from_text` where SQLite can keep it out of schemas
    (else a warning, and the functions without it)."""
    register(conn)
    try:
        register_embed_text(conn)
    except RuntimeError as refused:
        warnings.warn(f"embsqlite: {refused}", RuntimeWarning, stacklevel=2)


@hookimpl
def prepare_jinja2_environment(env: Any) -> None:
    """Make the page's template findable; appended, so a --template-dir copy wins."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    env.loader = ChoiceLoader([env.loader, FileSystemLoader(TEMPLATES_DIR)])


@hookimpl
def register_routes() -> list:
    return [
        (r"^/-/embsqlite/search(?P<as_json>\.json)?$", search),
        (r"^/-/embsqlite/collections\.json$", collections_json),
    ]


@hookimpl
def menu_links(datasette: Any, actor: Any) -> Any:
    async def links() -> list:
        if not await may_view_instance(datasette, actor):
            return []
        return [{"href": datasette.urls.path(SEARCH_PATH), "label": "Search embeddings"}]

    return links


class SearchError(Exception):
    """What went wrong, in one line, and the HTTP status that goes with it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Found:
    """A collection the actor may see."""

    database: str
    name: str
    model: str

    @property
    def key(self) -> str:
        """`DB/NAME` with each part tilde-encoded: the picker's value."""
        return f"{tilde_encode(self.database)}/{tilde_encode(self.name)}"


def _query_error(error: Exception) -> str:
    """A failed query in one line, never its SQL or parameters."""
    from datasette.database import QueryInterrupted

    if isinstance(error, QueryInterrupted):
        return "the query took longer than this Datasette's time limit (sql_time_limit_ms)"
    return one_line(error)


async def _is_llm_database(db: Any) -> bool:
    """Does `db` hold llm's `collections` and `embeddings` tables? The rule is the one
    embsqlite applies before writing (schema.embeddings_stage); it only reads."""

    def check(conn: Any) -> bool:
        try:
            return schema.has_schema(conn)
        except schema.ForeignTableError:
            return False

    return bool(await db.execute_fn(check))


async def _readable_databases(
    datasette: Any, actor: Any, only: Optional[str] = None
) -> tuple[list[str], list[dict]]:
    """The databases whose collections `actor` may see, and the problems of those among
    them that could not be read ({"database", "error"}); `only` limits it to one name."""
    names, problems = [], []
    for name, db in list(datasette.databases.items()):
        if name == "_internal" or (only is not None and name != only):
            continue
        try:  # 0.65's view-table check reads the database's schema: inside the try too
            if await may_view_collections(datasette, actor, name) and await _is_llm_database(db):
                names.append(name)
        except Exception as error:  # locked, corrupt, interrupted: this database only
            # named only to those who may see the database (a check that reads no schema)
            if await may_view_database(datasette, actor, name):
                problems.append({"database": name, "error": _query_error(error)})
    return names, problems


async def list_collections(datasette: Any, actor: Any) -> tuple[list[dict], list[dict]]:
    """Every collection `actor` may see, with its model and item count (exact up to
    COUNT_CAP), and the databases that could not be read."""
    names, problems = await _readable_databases(datasette, actor)
    found = []
    for name in names:
        try:
            rows = (await datasette.get_database(name).execute(LIST_SQL, {"cap": COUNT_CAP + 1})).rows
        except Exception as error:
            problems.append({"database": name, "error": _query_error(error)})
            continue
        for collection, model, count in rows:
            item = Found(name, collection, model)
            found.append({
                "database": name, "name": collection, "model": model, "key": item.key,
                "count": min(count, COUNT_CAP), "count_is_exact": count <= COUNT_CAP,
            })
    return found, problems


def _target(args: Any) -> list[tuple[Optional[str], str]]:
    """The (database or None, name) pairs `collection=`/`db=` may mean, likeliest first."""
    name = args.get("collection") or ""
    database = args.get("db") or None
    if database is not None or "/" not in name:
        return [(database, name)]
    encoded_db, encoded_name = name.split("/", 1)
    return [(tilde_decode(encoded_db), tilde_decode(encoded_name)), (None, name)]


async def _find(datasette: Any, actor: Any, args: Any) -> list[Found]:
    """The visible collections the request names (several if it names no database)."""
    for database, name in _target(args):
        if database is not None and database not in datasette.databases:
            continue
        names, problems = await _readable_databases(datasette, actor, only=database)
        if database is not None and problems:
            raise SearchError(f"database {echo(database)} could not be read: {problems[0]['error']}")
        matches = []
        for db_name in names:
            try:
                row = (await datasette.get_database(db_name).execute(
                    FIND_SQL, {"collection": name})).first()
            except Exception as error:
                if database is not None:
                    raise SearchError(
                        f"database {echo(db_name)} could not be read: {_query_error(error)}"
                    ) from None
                continue  # another database's trouble is not this search's
            if row is not None:
                matches.append(Found(db_name, name, row[0]))
        if matches:
            return matches
    return []


def _number(text: Optional[str]) -> int:
    if text in (None, ""):
        return DEFAULT_RESULTS
    try:
        number = int(text)
    except ValueError:
        raise SearchError(f"n must be a whole number, not {echo(text)}") from None
    if not 1 <= number <= MAX_RESULTS:
        raise SearchError(f"n must be between 1 and {MAX_RESULTS}")
    return number


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def search_sql(
    model: str, prefix: str, encoding: str = "UTF-8", search_filter: Optional[Filter] = None
) -> tuple[str, dict]:
    """The search query for a collection's model, and the parameters a prefix adds (its
    range in SQLite's order for the database's text `encoding`) and a filter adds."""
    params: dict[str, Any] = {}
    where = None
    if search_filter is not None:
        where, filter_params = _readable(search_filter)
        params.update(filter_params)
    low = high = None
    if prefix:
        params["prefix"], end = prefix_range(prefix, encoding)
        low = ":prefix"
        if end is not None:
            params["prefix_end"], high = end, ":prefix_end"
    sql = ranking_sql(
        f"{EMBED_FUNCTION}({_sql_literal(model)}, :q)",
        COLLECTION_ID_SQL,
        ":n",
        low,
        high,
        where=where,
    )
    return sql, params


def _readable(search_filter: Filter) -> tuple[str, dict]:
    """The filter as readable SQL with `:name` parameters, and their values. A number is
    cast in the SQL, so the query means the same in Datasette's SQL editor, whose
    parameters are text."""
    names, values = search_filter.names, search_filter.values

    def placeholder(i: int) -> str:
        cast = {int: "integer", float: "real"}.get(type(values[i]))
        return f":{names[i]}" if cast is None else f"cast(:{names[i]} as {cast})"

    return search_filter.render(placeholder), {str(name): value for name, value in zip(names, values)}


async def _search_filter(datasette: Any, request: Any, database: str) -> Optional[Filter]:
    """The filter the request asks for: `metadata=` (a JSON object of equalities) for
    anyone who may search, `where=` (an SQL expression, its `:name` parameters taken from
    the request) only for actors who may execute SQL in `database`."""
    parts = []
    where = request.args.get("where") or ""
    if where.strip():
        if not await _may_execute_sql(datasette, request.actor, database):
            raise SearchError(
                f"where= needs permission to execute SQL in database {echo(database)};"
                " use metadata= (a JSON object of key/value equalities) instead", 403)
        arguments = {key: request.args.get(key) for key in request.args.keys()}
        try:
            parsed = parse_where(where, arguments, args_name="the URL (name=value)")
            validate_sql_select(f"select ({where})")  # the SQL editor's rule (PRAGMAs)
        except FilterError as error:
            raise SearchError(one_line(error)) from None
        except InvalidSql as error:
            raise SearchError(f"where {describe(where)}: {one_line(error)}") from None
        taken = sorted(str(n) for n in set(parsed.names) if n in PAGE_PARAMETERS or str(n).startswith("metadata_"))
        if taken:
            raise SearchError(f"where {describe(where)}: parameter :{taken[0]} is one of the page's own;"
                              " choose another name")
        parts.append(parsed)
    metadata_text = request.args.get("metadata") or ""
    if metadata_text.strip():
        try:
            wanted = json.loads(metadata_text, parse_constant=_strict_number, parse_float=_strict_number)
        except (ValueError, RecursionError):
            raise SearchError(f"metadata must be a JSON object, not {echo(metadata_text)}") from None
        if not isinstance(wanted, dict):
            raise SearchError(f'metadata must be a JSON object such as {{"kind": "pet"}}, not {echo(metadata_text)}')
        try:
            parts.append(metadata_rule(wanted))
        except (TypeError, ValueError) as error:
            raise SearchError(one_line(error)) from None
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] & parts[1]


async def _check_filter(db: Any, search_filter: Filter, params: dict, evaluate: bool = False) -> None:
    """Compile the filter alone (with `evaluate`, run it over the collection), under the
    time limit: a SearchError naming the expression if SQLite refuses it."""
    where, _ = _readable(search_filter)
    sql = filter_sql(COLLECTION_ID_SQL, where, "count(*)") + ("" if evaluate else " limit 0")
    try:
        await db.execute(sql, params)
    except Exception as error:
        raise SearchError(f"filter {describe(search_filter.expression)}: {_query_error(error)}") from None


def _strict_number(text: str) -> float:
    """A JSON number as a float; NaN, Infinity and numbers too large for a double are not
    JSON (Python's json reads them, and would write them back as NaN/Infinity)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {text[:20]}")
    return number


def _metadata(text: Optional[str]) -> dict:
    """The stored metadata, parsed as strict JSON; anything else is passed on as text, marked."""
    if text is None:
        return {"metadata": None}
    try:
        return {"metadata": json.loads(text, parse_constant=_strict_number, parse_float=_strict_number)}
    except (ValueError, RecursionError):
        return {"metadata": text, "metadata_error": "not valid JSON"}


async def run_search(datasette: Any, request: Any) -> dict:
    """Run the search the request asks for; raises SearchError with a message and status.
    With no text to search for, returns the chosen collection and no "results"."""
    number = _number(request.args.get("n"))
    if not request.args.get("collection"):
        raise SearchError("choose a collection: pass collection=DATABASE/NAME (or db= and collection=)")
    matches = await _find(datasette, request.actor, request.args)
    if not matches:
        raise SearchError(f"collection {echo(request.args.get('collection'))} not found", 404)
    if len(matches) > 1:
        places = ", ".join(m.database for m in matches)
        raise SearchError(f"collection {echo(matches[0].name)} is in several databases ({places}):"
                          f" pass collection=DATABASE/NAME or db=")
    chosen = matches[0]
    if not isinstance(chosen.model, str) or not chosen.model:
        raise SearchError(f"collection {echo(chosen.name)} names no model to embed with", 500)
    query = request.args.get("q") or ""
    prefix = request.args.get("prefix") or ""
    outcome: dict[str, Any] = {
        "database": chosen.database, "collection": chosen.name, "key": chosen.key,
        "model": chosen.model, "q": query, "prefix": prefix or None, "number": number,
        "where": request.args.get("where") or None, "metadata": request.args.get("metadata") or None,
    }
    search_filter = await _search_filter(datasette, request, chosen.database)
    if search_filter is not None:
        outcome["where_parameters"] = [n for n in search_filter.names if n and not n.startswith("metadata_")]
    if not query.strip():
        return outcome
    # Embed off the event loop and outside the query's time limit (a model may take
    # seconds to load); the SQL function then finds the vector in its cache.
    loop = asyncio.get_running_loop()
    try:
        vector = await loop.run_in_executor(None, embed_text, chosen.model, query)
    except TextTooLong as error:
        raise SearchError(f"q is too long: {error}") from None
    except ValueError as error:
        raise SearchError(str(error), 500) from None
    db = datasette.get_database(chosen.database)
    encoding = "UTF-8"
    try:
        if prefix:
            encoding = (await db.execute("pragma encoding")).first()[0]
        sql, params = search_sql(chosen.model, prefix, encoding, search_filter)
        params.update({"q": query, "collection": chosen.name, "n": number})
    except Exception as error:
        raise SearchError(f"the search failed: {_query_error(error)}") from None
    if search_filter is not None:
        await _check_filter(db, search_filter, params)
    try:
        # a prefix no stored id can start with (see idorder.searchable) matches nothing
        # a filtered search runs its statement in db.execute, under the time limit (the
        # vector file's execute_fn has none, and a filter's evaluation may be long)
        rows = [] if not idorder.searchable(prefix, encoding) else None if search_filter else (
            await _from_vector_file(datasette, db, chosen.name, vector, number, prefix, encoding))
        if rows is None:  # no vector file can answer: the SQL statement, in the time limit
            rows = (await db.execute(sql, params)).rows
    except Exception as error:
        from datasette.database import QueryInterrupted

        if search_filter is not None and not isinstance(error, QueryInterrupted):
            await _check_filter(db, search_filter, params, evaluate=True)  # the filter's fault?
        raise SearchError(f"the search failed: {_query_error(error)}") from None
    outcome["sql"] = sql
    outcome["params"] = params
    outcome["results"] = [
        {"id": r[0], "score": r[1], "content": r[2], **_metadata(r[3])} for r in rows
    ]
    if await _may_execute_sql(datasette, request.actor, chosen.database):
        outcome["sql_url"] = _sql_editor_url(datasette, chosen.database, sql, params)
    return outcome


async def _may_where(datasette: Any, actor: Any, collections: list[dict]) -> bool:
    """Show the where= field: the actor may execute SQL in a database with collections."""
    for database in sorted({c["database"] for c in collections}):
        if await _may_execute_sql(datasette, actor, database):
            return True
    return False


async def _from_vector_file(
    datasette: Any, db: Any, name: str, vector: bytes, number: int, prefix: str, encoding: str,
) -> Optional[list]:
    """The search from the collection's vector file (the same rows as the SQL statement;
    vectorfile.py), building it within the SQL time limit; None when it cannot answer."""
    limit_ms = datasette.setting("sql_time_limit_ms") or 0
    deadline = time.monotonic() + limit_ms / 1000 if limit_ms else None
    found = await db.execute_fn(lambda conn: vectorfile.search_collection(  # a read connection
        conn, name, vector, number, prefix, encoding, deadline))
    return None if found is None else [tuple(row) for row in found]


async def _may_execute_sql(datasette: Any, actor: Any, database: str) -> bool:
    """`may_execute_sql`, False when the check itself cannot read the database."""
    try:
        return await may_execute_sql(datasette, actor, database)
    except Exception:
        return False


def _sql_editor_url(datasette: Any, database: str, sql: str, params: dict) -> str:
    """Datasette's SQL page for this query, its parameters filled in."""
    path = datasette.urls.database(database)
    if is_datasette_1(datasette):
        path += "/-/query"
    return path + "?" + urllib.parse.urlencode({"sql": sql, **{k: str(v) for k, v in params.items()}})


def _json(body: dict, status: int = 200) -> Response:
    return Response.json(body, status=status)


async def collections_json(datasette: Any, request: Any) -> Response:
    if not await may_view_instance(datasette, request.actor):
        return _json({"ok": False, "error": "permission denied: you may not view this instance"}, 403)
    found, problems = await list_collections(datasette, request.actor)
    return _json({"ok": True, "collections": found, "unreadable": problems})


async def search(datasette: Any, request: Any) -> Response:
    as_json = bool(request.url_vars.get("as_json"))
    if not await may_view_instance(datasette, request.actor):
        if as_json:
            return _json({"ok": False, "error": "permission denied: you may not view this instance"}, 403)
        raise Forbidden("view-instance")
    outcome: Optional[dict] = None
    error: Optional[str] = None
    status = 200
    if as_json or request.args.get("collection") or request.args.get("q"):
        try:
            outcome = await run_search(datasette, request)
        except SearchError as failure:
            error, status = str(failure), failure.status
    if as_json:
        if error is None and (outcome is None or "results" not in outcome):
            error, status = "q is empty: pass q= with the text to search for", 400
        if error is not None or outcome is None:
            return _json({"ok": False, "error": error}, status)
        outcome.pop("sql_url", None)
        outcome.pop("where_parameters", None)
        return _json({"ok": True, **outcome})
    collections, problems = await list_collections(datasette, request.actor)
    selected = outcome["key"] if outcome else None
    if selected is None and request.args.get("collection"):
        wanted = _target(request.args)[0]
        selected = next((c["key"] for c in collections
                         if (wanted[0] in (None, c["database"])) and c["name"] == wanted[1]), None)
    query_string = request.query_string
    html = await datasette.render_template(
        TEMPLATE,
        {
            "collections": collections,
            "databases": sorted({c["database"] for c in collections}),
            "unreadable": problems,
            "selected": selected,
            "q": request.args.get("q") or "",
            "prefix": request.args.get("prefix") or "",
            "where": request.args.get("where") or "",
            "metadata": request.args.get("metadata") or "",
            "where_parameters": [(name, request.args.get(name) or "")
                                 for name in (outcome or {}).get("where_parameters", [])],
            "may_where": await _may_where(datasette, request.actor, collections),
            "n": request.args.get("n") or str(DEFAULT_RESULTS),
            "max_results": MAX_RESULTS,
            "outcome": outcome,
            "error": error,
            "json_url": datasette.urls.path(SEARCH_PATH + ".json")
            + ("?" + query_string if query_string else ""),
            "datasette_version": datasette_version,
        },
        request=request,
        view_name="embsqlite_search",
    )
    return Response.html(html, status=status)
