"""The `embsqlite` command line (also `python -m embsqlite`).

Commands and options follow llm's embedding commands: `embed`, `embed-multi`, `similar`,
`collections list|delete|path`, `embed-models list|default`, plus our `models` and
`demo`. The database is `-d/--database`, else `$EMBSQLITE_DATABASE`, else `embeddings.db`
in the user's data directory. Known user errors are one line on stderr and a non-zero exit
status (see `cli_errors.py`); a bug shows its traceback.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import sqlite3
import sys
import textwrap
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import click
from click_default_group import DefaultGroup

from . import changes, dbfile, filters, index, inputs, schema, user_dir, vectorfile, vectors
from .cli_errors import OneLineUsageGroup, UserError, user_errors
from .cluster import ClusterError
from .collection import MAX_COUNT, Collection, summary_sql
from .default_model import get_default_embedding_model, set_default_embedding_model
from .model import ModelNotInstalledError, UnknownModelError
from .progress import progress_bar
from .registry import get_embedding_model, get_embedding_models_with_aliases

DATABASE_ENV = "EMBSQLITE_DATABASE"
DATABASE_FILE = "embeddings.db"


def default_database() -> Path:
    """`embeddings.db` in `$EMBSQLITE_USER_PATH`, else the user's data directory (e.g.
    ~/.local/share/embsqlite)."""
    return user_dir.data_dir() / DATABASE_FILE


def _database_option(func: Any) -> Any:
    return click.option(
        "-d",
        "--database",
        type=click.Path(dir_okay=False, allow_dash=False),
        envvar=DATABASE_ENV,
        help=f"Database file [default: embeddings.db in the user data directory; env {DATABASE_ENV}]",
    )(func)


def _clean_up_on_sigterm() -> None:
    """Make SIGTERM end the command as Ctrl-C does, through every cleanup (a collection
    or file the command created is removed), exiting 143; restored when the command ends."""
    if threading.current_thread() is not threading.main_thread():
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    click.get_current_context().call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def _database_path(database: Optional[str]) -> Path:
    return Path(database) if database else default_database()


def _open(database: Optional[str], create: bool) -> sqlite3.Connection:
    """A connection embsqlite owns (so it gets the owned-connection tuning), with the SQL
    functions. `create=False` refuses a database file that does not exist rather than
    making an empty one; only the default database may have its directory created."""
    path = _database_path(database)
    if not create and not path.exists():
        raise UserError(f"no database at {path}")
    with user_errors(dbfile.DatabasePathError, sqlite3.DatabaseError, OSError):
        return dbfile.connect(path, create_parent=database is None)


@contextmanager
def _writing(
    database: Optional[str], name: str, model: Optional[str]
) -> Iterator[tuple[sqlite3.Connection, Collection]]:
    """The connection and the collection `name` to write into. If the command fails, or
    writes nothing, a collection it created is removed again, and so is a database file
    it created, or the llm tables it added to a file that had none: a failed first batch
    leaves nothing behind."""
    path = _database_path(database)
    new_file = not path.exists()
    empty_file = path.is_file() and path.stat().st_size == 0  # made empty again on failure
    conn = _open(database, create=True)
    new_collection = emptied = False
    existed: set[str] = set()
    try:
        with user_errors(schema.ForeignTableError, sqlite3.DatabaseError):
            new_collection = not Collection.exists(conn, name)
            existed = schema.llm_tables(conn)
        yield conn, _collection(conn, name, model)
    finally:
        try:
            emptied = new_collection and _remove_if_empty(conn, name)
            if emptied and not new_file:
                schema.drop_created(conn, existed)
        finally:
            conn.close()
            if new_file and (emptied or not new_collection):
                dbfile.remove(path)
            elif empty_file and emptied:
                dbfile.empty_again(path)


def _remove_if_empty(conn: sqlite3.Connection, name: str) -> bool:
    """Delete the collection `name` if it holds no item (or was never made); True then."""
    if not Collection.exists(conn, name):
        return True
    collection = Collection(name, conn, create=False)
    if collection.count():
        return False
    collection.delete()
    return True


# Errors of the library that describe the user's request, not a bug.
MODEL_ERRORS = (UnknownModelError, ModelNotInstalledError)
# The library's checks of what it is given (model mismatch, a model that does not take
# this kind of input, a vector of another dimension), and a database that refuses a write.
INPUT_ERRORS = (ValueError, inputs.InputError, sqlite3.OperationalError)
# A Dask cluster that cannot embed (no scheduler, a worker without the model).
CLUSTER_ERRORS = (ClusterError,)


def _existing_collection(conn: sqlite3.Connection, name: str) -> Collection:
    try:
        return Collection(name, conn, create=False)
    except Collection.DoesNotExist:
        raise UserError("Collection does not exist") from None


def _collection(conn: sqlite3.Connection, name: str, model: Optional[str]) -> Collection:
    """The collection `name`, created with `model` (else the default model) if missing.
    An existing one is opened with its own model; `model` must then name that model."""
    with user_errors(*MODEL_ERRORS, ValueError, sqlite3.OperationalError):  # e.g. locked
        return Collection.open_or_create(name, conn, model_id=model)


def _metadata_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[dict]:
    """The `--metadata` JSON object, with llm's messages for anything else."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise click.BadParameter("metadata must be valid JSON") from None
    except RecursionError:
        raise click.BadParameter("metadata is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("metadata must be a JSON object")
    return parsed


def _read_content(content: Optional[str], input: Optional[str], binary: bool) -> Any:
    """The value to embed: `-c` text, else the `-i` file (`-` or none: stdin)."""
    if content is not None:
        value: Any = content.encode("utf-8") if binary else content
    else:
        if input is None or input == "-":
            data = sys.stdin.buffer.read()
            where = "standard input"
        else:
            try:
                with open(input, "rb") as stream:
                    data = stream.read()
            except OSError as error:
                raise UserError(f"cannot read {input}: {error.strerror or error}") from None
            where = input
        value = data if binary else _decode(data, where)
    if not value:
        raise UserError("No content provided")
    return value


def _decode(data: bytes, where: str) -> str:
    """Text in UTF-8 (a BOM is dropped), else Latin-1, like `embed-multi --files`."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@click.group(cls=OneLineUsageGroup, name="embsqlite")
@click.version_option(package_name="embsqlite", prog_name="embsqlite")
def cli() -> None:
    """Embeddings in SQLite: store them, then search by cosine similarity, computed in C.

    The database is -d/--database, else $EMBSQLITE_DATABASE, else embeddings.db in
    the user data directory (see `embsqlite collections path`).
    """
    _clean_up_on_sigterm()
    with user_errors(NotADirectoryError):  # a bad $EMBSQLITE_USER_PATH, said once for all
        user_dir.user_path()


@cli.command()
@click.argument("collection", required=False)
@click.argument("id", required=False)
@click.option("-i", "--input", type=click.Path(exists=True, readable=True, allow_dash=True),
              help="File to embed ('-' for standard input)")
@click.option("-m", "--model", help="Embedding model (id or alias) [default: the default model]")
@click.option("--store", is_flag=True, help="Store the text itself in the database")
@_database_option
@click.option("-c", "--content", help="Content to embed")
@click.option("--binary", is_flag=True, help="Treat the input as binary data")
@click.option("--metadata", callback=_metadata_option, help="JSON object metadata to store")
@click.option("format_", "-f", "--format", type=click.Choice(["json", "blob", "base64", "hex"]),
              help="Print the vector in this format [default: json when no collection]")
def embed(collection: Optional[str], id: Optional[str], input: Optional[str], model: Optional[str],
          store: bool, database: Optional[str], content: Optional[str], binary: bool,
          metadata: Optional[dict], format_: Optional[str]) -> None:
    """Embed one text (or file) and store it in COLLECTION under ID, or print its vector.

    \b
        embsqlite embed phrases hound -c "my happy hound" --store
        embsqlite embed -c "my happy hound" -f hex     # no collection: print the vector
    """
    if collection and not id:
        raise UserError("Must provide both collection and id")
    if store and not collection:
        raise UserError("Must provide collection when using --store")
    if metadata is not None and not collection:
        raise UserError("Must provide collection when using --metadata")
    if collection is None:
        with user_errors(*MODEL_ERRORS):
            model_obj = get_embedding_model(model or get_default_embedding_model())
        value = _read_content(content, input, binary)
        with user_errors(ValueError):
            vector = model_obj.embed(value)
        _print_vector(vector, format_ or "json")
        return
    value = _read_content(content, input, binary)
    with _writing(database, collection, model) as (conn, collection_obj):
        with user_errors(*MODEL_ERRORS, *INPUT_ERRORS):
            collection_obj.embed(id, value, metadata=metadata, store=store)
        if format_:
            row = conn.execute(
                "select embedding from embeddings where collection_id = ? and id = ?",
                (collection_obj.id, id),
            ).fetchone()
            _print_vector(vectors.decode(row[0]), format_)


def _print_vector(vector: list[float], format_: str) -> None:
    """The vector as llm prints it: the model's own values as JSON, or the float32 blob
    raw (with a newline, as click.echo adds), in base64 or in hex."""
    blob = vectors.encode(vector)
    if format_ == "json":
        click.echo(json.dumps(vector))
    elif format_ == "blob":
        click.echo(blob)
    elif format_ == "base64":
        click.echo(base64.b64encode(blob).decode("ascii"))
    else:
        click.echo(blob.hex())


@cli.command(name="embed-multi")
@click.argument("collection")
@click.argument(
    "input_path", required=False,
    type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True),
)
@click.option("--format", "format_", type=click.Choice(list(inputs.FORMATS)),
              help="Format of INPUT_PATH [default: detected from its first bytes]")
@click.option("--files", type=(str, str), multiple=True, metavar="DIR GLOB",
              help="Embed each file in DIR matching GLOB (repeatable); ids are relative paths")
@click.option("encodings", "--encoding", multiple=True,
              help="Encodings to try for --files, in order [default: utf-8, then latin-1]; "
                   "for INPUT_PATH, the first one")
@click.option("--binary", is_flag=True, help="Embed --files (or a --sql BLOB column) as bytes")
@click.option("--sql", help="Read items from this SQL query (first column or `id` is the id)")
@click.option("--attach", type=(str, click.Path(dir_okay=False)), multiple=True,
              metavar="ALIAS PATH", help="Attach this database for --sql (repeatable)")
@click.option("--batch-size", type=click.IntRange(min=1, max=MAX_COUNT), default=100, show_default=True,
              help="Items written per transaction")
@click.option("--prefix", default="", help="Prefix added to each id")
@click.option("-m", "--model", help="Embedding model for a new collection [default: the default model]")
@click.option("--prepend", default="", help="Text added before each text item before embedding")
@click.option("--store", is_flag=True, help="Store the text (or bytes) in the database")
@click.option("--dask", "dask_address", metavar="ADDRESS",
              help="Run the model on the Dask cluster whose scheduler is at ADDRESS")
@click.option("--dask-workers", type=click.IntRange(min=1), metavar="N",
              help="Run the model on a local Dask cluster of N worker processes")
@_database_option
@user_errors(inputs.InputError)
def embed_multi(collection: str, input_path: Optional[str], format_: Optional[str],
                files: tuple, encodings: tuple, binary: bool, sql: Optional[str],
                attach: tuple, batch_size: int, prefix: str, model: Optional[str],
                prepend: str, store: bool, dask_address: Optional[str],
                dask_workers: Optional[int], database: Optional[str]) -> None:
    """Embed many items into COLLECTION, from INPUT_PATH ('-' for standard input), --files or --sql.

    \b
    INPUT_PATH holds CSV, TSV, a JSON array or newline-delimited JSON: the column or key
    `id` (else the first) is the id, a `metadata` column or key (a JSON object) is the
    metadata, the other values are joined with spaces as the content.

    \b
        embsqlite embed-multi docs items.csv --store
        embsqlite embed-multi docs --files notes '**/*.md'
        embsqlite embed-multi docs --attach blog blog.db --sql 'select id, title, body from blog.posts'
    """
    sources = sum(bool(s) for s in (input_path, files, sql))
    if sources != 1:
        raise click.UsageError("give exactly one of INPUT_PATH, --files or --sql")
    if binary and not (files or sql):
        raise click.UsageError("--binary works with --files or --sql")
    if binary and encodings:
        raise click.UsageError("--binary and --encoding exclude each other")
    if format_ and not input_path:
        raise click.UsageError("--format applies to INPUT_PATH only")
    if attach and not sql:
        raise click.UsageError("--attach is for --sql")
    if dask_address and dask_workers:
        raise click.UsageError("--dask and --dask-workers exclude each other")
    for directory, _pattern in files:
        if not Path(directory).is_dir():
            raise click.UsageError(f"Invalid directory: {directory}")
    for alias, _path in attach:
        if alias.lower() in ("main", "temp"):
            raise click.UsageError(f"--attach {alias}: SQLite reserves that name; choose another alias")
    with _writing(database, collection, model) as (conn, collection_obj):
        for alias, path in attach:
            if not Path(path).is_file():
                raise UserError(f"--attach {alias}: no database at {path}")
            with user_errors(sqlite3.DatabaseError):
                conn.execute("attach database ? as " + schema.quote(alias), (path,))
        total: Optional[int] = None
        warn = lambda message: click.echo(message, err=True)  # noqa: E731
        with user_errors(*MODEL_ERRORS, *INPUT_ERRORS, *CLUSTER_ERRORS):
            if files:
                own = _database_path(database)
                own_files = [Path(str(own) + suffix) for suffix in ("", *dbfile.SIDECARS)]
                total = inputs.count_files(files, own_files)
                items: Iterable[inputs.Item] = inputs.read_files(
                    files, binary, encodings or inputs.DEFAULT_ENCODINGS, warn, own_files
                )
            elif sql:
                total = inputs.snapshot_sql(conn, sql)
                for alias, _path in attach:  # read in full: no write may lock them
                    conn.execute("detach database " + schema.quote(alias))
                items = inputs.read_sql(conn, binary)
            else:
                encoding = encodings[0] if encodings else "utf-8-sig"
                if input_path == "-":
                    items = inputs.read_stream(sys.stdin.buffer, format_, "standard input", encoding)
                else:
                    assert input_path is not None  # checked with the other input options
                    if Path(input_path).is_file():  # a pipe or FIFO can be read only once
                        total = 0
                        for _ in inputs.read_path(input_path, format_, encoding):
                            total += 1
                    items = inputs.read_path(input_path, format_, encoding)
            with progress_bar(total) as bar:
                collection_obj.embed_multi_with_metadata(
                    inputs.with_prefix(items, prefix, prepend), store, batch_size,
                    progress=bar.update, dask=dask_address or dask_workers,
                )


@cli.command()
@click.argument("collection")
@click.argument("id", required=False)
@click.option("-i", "--input", type=click.Path(exists=True, readable=True, allow_dash=True),
              help="File to embed for comparison ('-' for standard input)")
@click.option("-c", "--content", help="Content to embed for comparison")
@click.option("--binary", is_flag=True, help="Treat the input as binary data")
@click.option("-n", "--number", type=click.IntRange(min=0, max=MAX_COUNT), default=10, show_default=True,
              help="Number of results")
@click.option("-p", "--plain", is_flag=True, help="Plain text instead of JSON lines")
@_database_option
@click.option("--prefix", default="", help="Only ids that start with this (literally)")
@click.option("--where", help="Only rows for which this SQL expression is true (id, content, metadata, ...)")
@click.option("--param", "params", multiple=True, type=(str, str), metavar="NAME VALUE",
              help="Named :parameters for --where (text, as in sqlite-utils: cast(:n as integer))")
@click.option("--metadata-filter", help='Only rows whose metadata has these keys and values: a JSON object')
@click.option("--exact", is_flag=True, help="Scan every row even if the collection has a current index")
def similar(collection: str, id: Optional[str], input: Optional[str], content: Optional[str],
            binary: bool, number: int, plain: bool, database: Optional[str], prefix: str,
            where: Optional[str], params: tuple[tuple[str, str], ...], metadata_filter: Optional[str],
            exact: bool) -> None:
    """The items of COLLECTION most similar to ID, or to -c/-i content; best first.

    \b
        embsqlite similar phrases -c "a joyful dog"
        embsqlite similar phrases hound -n 3 --plain
        embsqlite similar phrases hound --param legs 4 \\
            --where "json_extract(metadata, '$.legs') = cast(:legs as integer)"
        embsqlite similar phrases hound --metadata-filter '{"kind": "pet"}'
    """
    if id is not None and (content is not None or input is not None):
        raise click.UsageError("give an ID or content (-c/-i), not both")
    if not id and not content and not input:
        raise UserError("Must provide content or an ID for the comparison")
    if params and where is None:
        raise click.UsageError("--param needs --where")
    search_filter: dict[str, Any] = {"where": where, "where_args": dict(params) if where is not None else None,
                     "metadata": _metadata_filter(metadata_filter)}
    with user_errors(ValueError, TypeError):  # the filter's own checks, before any model call
        filters.build(**search_filter, args_name="--param")
    conn = _open(database, create=False)
    collection_obj = _existing_collection(conn, collection)
    if id is not None:
        try:
            with user_errors(filters.FilterError):
                results = collection_obj.similar_by_id(id, number, prefix=prefix or None, exact=exact,
                                                       **search_filter)
        except Collection.DoesNotExist:
            raise UserError("ID not found in collection") from None
    else:
        value = _read_content(content, input, binary)
        with user_errors(*MODEL_ERRORS, ValueError):
            results = collection_obj.similar(value, number, prefix=prefix or None, exact=exact, **search_filter)
    for entry in results:
        if plain:
            _print_plain(entry)
        else:
            click.echo(json.dumps(dataclasses.asdict(entry), ensure_ascii=False))
    conn.close()


def _metadata_filter(text: Optional[str]) -> Optional[dict]:
    """--metadata-filter's JSON object."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UserError(f"--metadata-filter is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise UserError("--metadata-filter must be a JSON object, such as '{\"kind\": \"pet\"}'")
    return value


def _print_plain(entry: Any) -> None:
    """One result as llm's `similar --plain` prints it: the id and the full score, a blank
    line, the content and the metadata indented by two spaces, a blank line."""
    click.echo(f"{entry.id} ({entry.score})\n")
    if entry.content:
        click.echo(textwrap.indent(entry.content, "  "))
    if entry.metadata:
        click.echo(textwrap.indent(json.dumps(entry.metadata), "  "))
    click.echo("")


@cli.command(name="vector-file")
@click.argument("collection", required=False)
@_database_option
@click.option("--forget", is_flag=True,
              help="Remove the database's change tokens, their triggers and every vector file")
def vector_file(collection: Optional[str], database: Optional[str], forget: bool = False) -> None:
    """Write COLLECTION's vector file beside the database now and print its path.

    Searches then read the file instead of every row (in every process), and build it
    again themselves after changes. Needed only for a database embsqlite never wrote
    (embsqlite's writes keep it up to date); delete the file to drop it. With --forget:
    drop the triggers and the `embsqlite_changes` table together and delete the vector
    files (printing their paths); embsqlite's next write installs the triggers again.
    """
    conn = _open(database, create=False)
    if forget:
        with user_errors(sqlite3.OperationalError):
            changes.forget(conn)
        for path in vectorfile.remove_files(conn):
            click.echo(path)
        conn.close()
        return
    if collection is None:
        raise click.UsageError("Missing argument 'COLLECTION' (or give --forget).")
    collection_obj = _existing_collection(conn, collection)
    with user_errors(changes.ForeignChangesTable, sqlite3.OperationalError):
        path = collection_obj.build_vector_file()
    conn.close()
    if path is None:
        raise UserError("no vector file can be written here (an empty collection, an "
                        "in-memory database or a directory that cannot be written)")
    click.echo(path)


@cli.group(cls=DefaultGroup, default="list", default_if_no_args=True)
def collections() -> None:
    """List, delete and locate collections (default: list)."""


@collections.command(name="list")
@_database_option
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
def collections_list(database: Optional[str] = None, json_: bool = False) -> None:
    """The collections, each with its model and number of items."""
    path = Path(database) if database else default_database()
    if not path.exists():  # a new machine: nothing embedded yet
        click.echo("[]" if json_ else f"No collections yet (no database at {path})",
                   err=not json_)
        return
    conn = _open(database, create=False)

    rows: list[dict] = []
    if schema.has_schema(conn):
        rows = [
            {"name": name, "model": model, "num_embeddings": count}
            for name, model, count in conn.execute(summary_sql(), {"cap": -1})
        ]
        if not json_:  # the JSON stays llm's
            for row in rows:
                found = conn.execute("select id from collections where name = ?", (row["name"],)).fetchone()
                row["index"] = None if found is None else index.status(conn, found[0])
    conn.close()
    if json_:
        click.echo(json.dumps(rows, indent=4))  # as llm
        return
    if not rows:
        click.echo(f"No collections yet in {path}", err=True)
    for row in rows:
        count = row["num_embeddings"]
        click.echo(f"{row['name']}: {row['model']}\n  {count} embedding{'' if count == 1 else 's'}")
        if row["index"] not in (None, "none"):
            click.echo(f"  index: {_index_note(row['name'], row['index'])}")


def _index_note(name: str, status: str) -> str:
    """One line on a collection's index for `collections list` and `index`."""
    if status == "current":
        return "current (searches use it)"
    if status == "stale":
        return f"stale, searches scan every row; rebuild with: embsqlite index {name}"
    return f"{status}; searches scan every row; rebuild with: embsqlite index {name}"


@cli.command(name="index")
@click.argument("collection")
@click.option("--probes", type=click.IntRange(1), default=index.PROBES, show_default=True,
              help="IVF lists scanned per search (more: better recall, slower)")
@click.option("--remove", is_flag=True, help="Delete the collection's index instead")
@_database_option
def index_command(collection: str, probes: int, remove: bool, database: Optional[str]) -> None:
    """Build (or rebuild) the approximate-search index of COLLECTION.

    \b
    The index is one file beside the database, DATABASE-embsqlite-<id>.index. Searches
    use it (candidates re-ranked exactly) until anything changes the collection; then
    they scan every row again until this command runs anew. Needs faiss:
    pip install 'embsqlite[index]'.
    """
    conn = _open(database, create=False)
    try:
        collection_obj = _existing_collection(conn, collection)
        if remove:
            with user_errors(OSError):
                found = index.remove(conn, collection_obj.id)
            click.echo("index removed" if found else "no index", err=True)
            return
        total = collection_obj.count()
        with user_errors(index.IndexUnavailable, index.IndexBuildError, changes.ForeignChangesTable,
                         sqlite3.OperationalError, OSError):
            with progress_bar(total, "Indexing") as bar:
                path = collection_obj.build_index(probes=probes, progress=bar.update)
        click.echo(path)
    finally:
        conn.close()


@collections.command(name="delete")
@click.argument("collection")
@_database_option
def collections_delete(collection: str, database: Optional[str]) -> None:
    """Delete COLLECTION and all its embeddings."""
    conn = _open(database, create=False)
    try:
        with user_errors(sqlite3.OperationalError):  # read-only media, a locked database
            _existing_collection(conn, collection).delete()
    finally:
        conn.close()


@collections.command(name="path")
def collections_path() -> None:
    """The database used when -d is not given."""
    click.echo(os.environ.get(DATABASE_ENV) or default_database())


@cli.group(cls=DefaultGroup, default="list", default_if_no_args=True)
def models() -> None:
    """List embedding models and set the default one (default: list)."""


@models.command(name="list")
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
@click.option("--llm", "include_llm", is_flag=True, help="Include the models of an installed llm")
def models_list(json_: bool = False, include_llm: bool = False) -> None:
    """The embedding models, with their aliases; the default is marked."""
    default = get_default_embedding_model()
    try:
        default_id: Optional[str] = get_embedding_model(default).model_id
    except (UnknownModelError, ModelNotInstalledError):
        default_id = None
    found = get_embedding_models_with_aliases(include_llm=include_llm)
    if json_:
        click.echo(json.dumps([
            {"model_id": m.model.model_id, "aliases": m.aliases,
             "supports_text": m.model.supports_text, "supports_binary": m.model.supports_binary,
             "default": m.model.model_id == default_id}
            for m in found
        ], indent=2))
        return
    for m in found:
        line = m.model.model_id
        if m.aliases:
            line += f" (aliases: {', '.join(m.aliases)})"
        if m.model.model_id == default_id:
            line += " [default]"
        click.echo(line)


@models.command(name="default")
@click.argument("model", required=False)
@click.option("--remove", is_flag=True, help="Forget the saved default")
def models_default(model: Optional[str], remove: bool) -> None:
    """Show the default model, or save MODEL as the default."""
    if remove:
        set_default_embedding_model(None)
    elif model:
        with user_errors(*MODEL_ERRORS):
            set_default_embedding_model(model)
    else:
        click.echo(get_default_embedding_model())


@cli.group(name="embed-models", cls=DefaultGroup, default="list", default_if_no_args=True)
def embed_models() -> None:
    """Manage available embedding models (llm's command, with llm's options)."""


@embed_models.command(name="list")
@click.option("-q", "--query", multiple=True,
              help="Search for embedding models matching these strings")
def embed_models_list(query: tuple) -> None:
    """List available embedding models: ours, then those of an installed llm."""
    from .llm_bridge import llm_models_with_aliases

    found = [(f"{type(m.model).__name__}: {m.model.model_id}", list(m.aliases))
             for m in get_embedding_models_with_aliases()]
    found += [(str(model), aliases) for model, aliases in llm_models_with_aliases()]
    lines = []
    for name, aliases in found:
        if query and not all(
            any(q.lower() in s.lower() for s in [*aliases, name]) for q in query
        ):
            continue
        lines.append(name + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
    click.echo("\n".join(lines))


@embed_models.command(name="default")
@click.argument("model", required=False)
@click.option("--remove-default", is_flag=True, help="Forget the saved default model")
def embed_models_default(model: Optional[str], remove_default: bool) -> None:
    """Show or set the default embedding model."""
    if remove_default:
        set_default_embedding_model(None)
    elif model:
        try:
            set_default_embedding_model(model)
        except MODEL_ERRORS:
            raise UserError(f"Unknown embedding model: {model}") from None
    else:
        click.echo(get_default_embedding_model())


@cli.command()
@click.option("-m", "--model", help="Embedding model [default: the default model]")
@_database_option
@click.option("--collection", "collection_name", default="python-stdlib", show_default=True,
              help="Collection to fill")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=1500, show_default=True,
              help="Embed at most this many docstrings (0: all of them)")
@click.option("--fresh", is_flag=True, help="Delete the collection first")
@click.option("-q", "--query", "queries", multiple=True, help="Search for this (repeatable)")
def demo(model: Optional[str], database: Optional[str], collection_name: str,
         limit: Optional[int], fresh: bool, queries: tuple) -> None:
    """Embed the docstrings of this machine's Python standard library into a collection,
    then show the top hits of a few searches (-q for your own). A second run embeds
    only what is missing."""
    from . import demo as demo_module

    with user_errors(*MODEL_ERRORS, ValueError, sqlite3.OperationalError):
        demo_module.run(
            database=dbfile.check_path(_database_path(database), create_parent=database is None),
            model=model,
            collection_name=collection_name,
            limit=limit or None,
            fresh=fresh,
            queries=list(queries) or None,
            echo=click.echo,
        )

