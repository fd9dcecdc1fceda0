"""Data safety and input checks: tables that are not llm's are never written, a failed
command leaves nothing behind, database paths and input files are checked, every item is
checked before a model sees it, the command line's connections get the owned tuning, and
a copy on read-only media can still be searched.

Real SQLite files, the real llm package and real Datasette throughout; read-only media is
a read-only bind mount inside a private mount namespace (`unshare -m`), because we run as
root and permission bits do not stop root.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner
from llm.embeddings_migrations import embeddings_migrations

import embsqlite
from embsqlite import cache, connection, dbfile, ingest, schema
from embsqlite.cli import cli
from embsqlite.collection import Collection


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """User data and config under tmp_path; the text-only MiniLM model stays the default
    (it is never loaded here: every command that names it fails before embedding)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL", raising=False)
    monkeypatch.delenv("EMBSQLITE_DATABASE", raising=False)
    monkeypatch.delenv("EMBSQLITE_DEBUG", raising=False)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | None = None):
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result


def fails(*args: str, contains: str = "", input: str | None = None) -> str:
    """The command fails with one `Error:` line on stderr containing `contains`."""
    result = run(*args, input=input)
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_subprocess(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`python -m embsqlite ...` in a fresh process; `timeout` guards against a hang."""
    return subprocess.run(
        [sys.executable, "-m", "embsqlite", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **env},
    )


# Tables that are not llm's ------------------------------------------------------------

FOREIGN_SCHEMAS = {
    "own embeddings table": (
        "create table embeddings(doc_id integer primary key, vector blob, note text);"
        "insert into embeddings values (1, x'0000803f', 'first'), (2, x'00000040', 'second');",
        "'embeddings'",
    ),
    "own collections(id, name, model)": (
        "create table collections(id, name, model);"
        "insert into collections values (1, 'docs', 'mine'), (2, 'other', 'mine');",
        "'collections'",
    ),
    "typed collections without llm's unique index": (
        "create table collections(id integer primary key, name text, model text);"
        "insert into collections values (1, 'docs', 'mine');",
        "'collections'",
    ),
    "llm's final columns plus one": (
        "create table embeddings(collection_id integer, id text, embedding blob, content text, "
        "content_blob blob, content_hash blob, metadata text, updated integer, note text, "
        "primary key (collection_id, id));"
        "insert into embeddings (collection_id, id, note) values (1, 'a', 'kept');",
        "'embeddings'",
    ),
    "llm's oldest columns without the primary key": (
        "create table embeddings(collection_id integer, id text, embedding blob, content text, "
        "metadata text); insert into embeddings values (1, 'a', null, 'x', null);",
        "'embeddings'",
    ),
    "own EMBEDDINGS table in capitals": (
        "create table EMBEDDINGS(doc_id integer primary key, vector blob);"
        "insert into EMBEDDINGS values (1, x'0000803f');",
        "'embeddings'",
    ),
    "an index named collections": (
        "create table notes(n); create index collections on notes(n);",
        "'collections'",
    ),
    "a view named embeddings": (
        "create table notes(n); insert into notes values (1);"
        "create view embeddings as select n from notes;",
        "'embeddings'",
    ),
    "collections with INTEGER PRIMARY KEY DESC (no rowid alias)": (
        "create table collections(id integer primary key desc, name text, model text);"
        "create unique index idx_collections_name on collections(name);",
        "'collections'",
    ),
    "collections whose unique index on name is partial": (
        "create table collections(id integer primary key, name text, model text);"
        "create unique index i on collections(name) where name is not null;",
        "'collections'",
    ),
    "collections whose unique index on name is NOCASE": (
        "create table collections(id integer primary key, name text, model text);"
        "create unique index i on collections(name collate nocase);",
        "'collections'",
    ),
    "collections WITHOUT ROWID": (
        "create table collections(id integer primary key, name text, model text) without rowid;"
        "create unique index idx_collections_name on collections(name);",
        "'collections'",
    ),
    "collections with an index whose name has a double quote": (
        'create table collections(id integer primary key, name text, model text);'
        'create unique index "a""b" on collections(name) where name is not null;',
        "'collections'",
    ),
    "llm's embeddings with id COLLATE NOCASE": (
        "create table embeddings(collection_id integer, id text collate nocase, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer, "
        "primary key (collection_id, id)); create index idx_embeddings_content_hash "
        "on embeddings(content_hash);",
        "'embeddings'",
    ),
    "llm's embeddings STRICT": (
        "create table embeddings(collection_id integer, id text, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer, "
        "primary key (collection_id, id)) strict;",
        "'embeddings'",
    ),
    "llm's embeddings with a CHECK": (
        "create table embeddings(collection_id integer, id text, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer "
        "check (length(id) < 5), primary key (collection_id, id));",
        "'embeddings'",
    ),
    "llm's embeddings with a generated column": (
        "create table embeddings(collection_id integer, id text, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer, "
        "n integer as (length(id)), primary key (collection_id, id));",
        "'embeddings'",
    ),
    "llm's embeddings WITHOUT ROWID": (
        "create table embeddings(collection_id integer, id text, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer, "
        "primary key (collection_id, id)) without rowid;",
        "'embeddings'",
    ),
    "an index of llm's name on another column": (
        "create table embeddings(collection_id integer, id text, embedding blob, "
        "content text, content_blob blob, content_hash blob, metadata text, updated integer, "
        "primary key (collection_id, id)); create index idx_embeddings_content_hash "
        "on embeddings(content);",
        "'idx_embeddings_content_hash'",
    ),
    "another migrations table": (
        "create table _sqlite_migrations(version integer, script text);"
        "insert into _sqlite_migrations values (7, 'mine');",
        "'_sqlite_migrations'",
    ),
}


def _foreign_db(tmp_path: Path, schema_sql: str) -> Path:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.executescript(schema_sql)
    conn.close()
    return path


ENTRY_POINTS = {
    "Collection()": lambda path: Collection("docs", str(path), model_id="hashing"),
    "Collection(create=False)": lambda path: Collection("docs", str(path), create=False),
    "Collection.exists": lambda path: Collection.exists(str(path), "docs"),
    "embed-multi": lambda path: fails("embed-multi", "docs", "-", "-d", str(path), "-m", "hashing",
                                      input="id,text\na,hello\n", contains="not llm's"),
    "embed": lambda path: fails("embed", "docs", "a", "-c", "hello", "-d", str(path), "-m", "hashing",
                                contains="not llm's"),
    "similar": lambda path: fails("similar", "docs", "-c", "hello", "-d", str(path), contains="not llm's"),
    "collections list": lambda path: fails("collections", "list", "-d", str(path), contains="not llm's"),
    "collections delete": lambda path: fails("collections", "delete", "docs", "-d", str(path),
                                             contains="not llm's"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", list(FOREIGN_SCHEMAS))
def test_a_table_that_is_not_llms_is_left_byte_for_byte(tmp_path, case, entry):
    schema_sql, table = FOREIGN_SCHEMAS[case]
    path = _foreign_db(tmp_path, schema_sql)
    before = digest(path)
    try:
        ENTRY_POINTS[entry](path)
    except schema.ForeignTableError as error:
        message = str(error)
    else:
        assert entry not in ("Collection()", "Collection(create=False)", "Collection.exists"), \
            "the library accepted a table that is not llm's"
        message = "not llm's " + table  # the CLI helpers checked the message themselves
    assert table in message and "not llm's" in message
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["app.db"]


def test_the_datasette_plugin_lists_a_foreign_database_without_writing_it(tmp_path):
    from datasette.app import Datasette

    path = _foreign_db(tmp_path, FOREIGN_SCHEMAS["own collections(id, name, model)"][0]
                       + "create table embeddings(doc_id integer primary key, vector blob);")
    before = digest(path)

    async def visit():
        ds = Datasette([str(path)])
        return [(await ds.client.get(url)).status_code for url in
                ("/-/embsqlite/search", "/-/embsqlite/search.json?collection=docs&q=hello")]

    statuses = asyncio.run(visit())
    assert all(status < 500 for status in statuses), statuses
    assert digest(path) == before


def test_the_recognised_stages_are_those_llms_own_migrations_leave(tmp_path):
    """Each stage in schema.EMBEDDINGS_STAGES is what llm's migrations produce, in order."""
    names = schema.MIGRATION_NAMES
    stops = [*names[1:], None]
    stages = []
    for number, stop in enumerate(stops):
        db = sqlite_utils.Database(tmp_path / f"stage-{number}.db")
        embeddings_migrations.apply(db, **({"stop_before": stop} if stop else {}))
        stages.append(schema.embeddings_stage(db.conn))
        db.close()
    # m001 and m002 differ only by a foreign key
    assert stages == [0, 0, 1, 2, 3]


def test_an_llm_embeddings_table_without_collections_gets_one(tmp_path):
    """llm's own shape is recognised even when its collections table went missing."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    embeddings_migrations.apply(db, stop_before="m003_add_updated")
    db["embeddings"].insert({"collection_id": 7, "id": "a", "content": "x"})
    db["collections"].drop()
    db.close()
    collection = Collection("docs", str(path), model_id="hashing")
    collection.embed("b", "hello")
    assert collection.count() == 1
    assert schema.embeddings_stage(collection.conn) == len(schema.EMBEDDINGS_STAGES) - 1


def test_llms_content_hash_index_dropped_by_a_user_is_made_again(tmp_path):
    """llm's m004 makes idx_embeddings_content_hash; without it every write failed."""
    path = tmp_path / "x.db"
    Collection("c", str(path), model_id="hashing").embed("a", "hello")
    conn = sqlite3.connect(path)
    conn.execute(f"drop index {schema.CONTENT_HASH_INDEX}")
    conn.commit()
    collection = Collection("c", str(path))
    collection.embed("b", "world")
    collection.embed("c", "hello")  # copied from a through the index
    assert collection.count() == 3 and schema.content_hash_index_exists(conn)


# --sql reading the database it writes ------------------------------------------------

def _collection_of(path: Path, name: str, count: int) -> None:
    collection = Collection(name, str(path), model_id="hashing")
    collection.embed_multi(((f"{i:04d}", f"text number {i}") for i in range(count)), store=True)
    collection.close()


def _count(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select count(*) from embeddings join collections c on c.id = collection_id "
            "where c.name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()


def test_sql_over_the_table_being_written_reads_one_snapshot(tmp_path):
    path = tmp_path / "app.db"
    _collection_of(path, "a", 300)
    result = cli_subprocess("embed-multi", "b", "--sql", "select id, content from embeddings",
                            "--prefix", "x-", "-m", "hashing", "-d", str(path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert _count(path, "b") == 300
    conn = sqlite3.connect(path)
    assert conn.execute("select count(*) from embeddings where id like 'x-x-%'").fetchone()[0] == 0


def test_sql_over_the_same_file_attached_again_reads_one_snapshot(tmp_path):
    path = tmp_path / "app.db"
    _collection_of(path, "a", 300)
    result = cli_subprocess("embed-multi", "b", "--attach", "again", str(path), "--sql",
                            "select id, content from again.embeddings", "--prefix", "x-",
                            "--batch-size", "7", "-m", "hashing", "-d", str(path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert _count(path, "b") == 300


def test_files_skip_the_database_being_written(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "one.txt").write_text("hello")
    path = folder / "app.db"
    _collection_of(path, "a", 3)
    result = ok("embed-multi", "b", "--files", str(folder), "*", "--binary", "-m", "hashing",
                "-d", str(path))
    assert "skipped" in result.stderr and "app.db" in result.stderr
    assert _count(path, "b") == 1


# A failed command leaves nothing behind -----------------------------------------------

def _failing_commands(tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "bad.json").write_text('[{"id": "a", "text": "x"},')
    (tmp_path / "good.csv").write_text("id,text\na,hello\nb,world\n")
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "a.bin").write_bytes(b"\x00\x01")
    return {
        "missing input file": ["embed-multi", "docs", str(tmp_path / "missing.csv")],
        "malformed JSON": ["embed-multi", "docs", str(tmp_path / "bad.json")],
        "bad --sql": ["embed-multi", "docs", "--sql", "select nope from nowhere"],
        "--binary files into a text-only model": ["embed-multi", "docs", "--files", str(files), "*", "--binary"],
        "--binary --sql into a text-only model": ["embed-multi", "docs", "--sql", "select 'a', x'0001'", "--binary"],
        "embed --binary into a text-only model": ["embed", "docs", "a", "-c", "hello", "--binary"],
    }


FIXED = {
    "missing input file": lambda p: ["embed-multi", "docs", str(p / "good.csv"), "-m", "hashing"],
    "malformed JSON": lambda p: ["embed-multi", "docs", str(p / "good.csv"), "-m", "hashing"],
    "bad --sql": lambda p: ["embed-multi", "docs", "--sql", "select 'a', 'hello'", "-m", "hashing"],
    "--binary files into a text-only model": lambda p: ["embed-multi", "docs", "--files", str(p / "files"), "*", "--binary", "-m", "hashing"],
    "--binary --sql into a text-only model": lambda p: ["embed-multi", "docs", "--sql", "select 'a', x'0001'", "--binary", "-m", "hashing"],
    "embed --binary into a text-only model": lambda p: ["embed", "docs", "a", "-c", "hello", "--binary", "-m", "hashing"],
}


def _master(path: Path) -> list:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("select type, name, sql from sqlite_master order by name").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(FIXED))
@pytest.mark.parametrize("existing", ["no file", "a file with a collection", "a file of other tables"])
def test_a_failed_first_batch_leaves_no_collection_and_no_new_file(tmp_path, case, existing):
    path = tmp_path / "new.db"
    if existing == "a file with a collection":
        _collection_of(path, "other", 2)
    elif existing == "a file of other tables":
        conn = sqlite3.connect(path)
        conn.executescript("create table notes(n text); insert into notes values ('kept');")
        conn.close()
    master = _master(path) if path.exists() else None
    command = _failing_commands(tmp_path)[case]
    fails(*command, "-d", str(path))
    if existing == "no file":
        assert not any(name.startswith("new.db") for name in os.listdir(tmp_path))
    else:
        assert _master(path) == master  # no llm tables left in the other file
        assert not Collection.exists(str(path), "docs")
    ok(*FIXED[case](tmp_path), "-d", str(path))
    collection = Collection("docs", str(path), create=False)
    assert collection.model_id == "hashing" and collection.count() >= 1
    if existing == "a file with a collection":
        assert _count(path, "other") == 2


def test_an_empty_input_creates_nothing(tmp_path):
    path = tmp_path / "new.db"
    (tmp_path / "empty.csv").write_text("id,text\n")
    ok("embed-multi", "docs", str(tmp_path / "empty.csv"), "-m", "hashing", "-d", str(path))
    assert not path.exists()


def test_a_failure_after_the_first_batch_keeps_what_was_written(tmp_path):
    path = tmp_path / "new.db"
    fails("embed-multi", "docs", "-", "--batch-size", "1", "-m", "hashing", "-d", str(path),
          input='{"id": "a", "t": "x"}\n{"id": "b", "t": "y"}\n{"id":\n', contains="line 3")
    assert _count(path, "docs") == 2


# Database paths and input files ------------------------------------------------------

def test_a_missing_directory_is_an_error_not_created(tmp_path):
    path = tmp_path / "nonexistent" / "dir" / "x.db"
    fails("embed", "docs", "a", "-c", "hi", "-m", "hashing", "-d", str(path), contains="does not exist")
    fails("embed-multi", "docs", "-", "-m", "hashing", "-d", str(path), input="id,t\na,b\n",
          contains="does not exist")
    fails("demo", "-m", "hashing", "-n", "5", "-d", str(path), contains="does not exist")
    with pytest.raises(dbfile.DatabasePathError, match="does not exist"):
        Collection("docs", str(path), model_id="hashing")
    assert not (tmp_path / "nonexistent").exists()


def test_the_default_data_directory_is_still_created(tmp_path):
    from embsqlite.cli import default_database

    assert not default_database().parent.exists()
    ok("embed", "docs", "a", "-c", "hello", "-m", "hashing")
    assert default_database().is_file()


def _non_regular(tmp_path: Path, kind: str) -> Path:
    if kind == "/dev/null":
        for suffix in dbfile.SIDECARS:  # debris an earlier version left there
            Path("/dev/null" + suffix).unlink(missing_ok=True)
        return Path("/dev/null")
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.db")
        return tmp_path / "pipe.db"
    if kind == "symlink to /dev/null":
        (tmp_path / "link.db").symlink_to("/dev/null")
        return tmp_path / "link.db"
    (tmp_path / "folder.db").mkdir()
    return tmp_path / "folder.db"


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "symlink to /dev/null", "directory"])
def test_a_non_regular_database_path_is_refused_leaving_nothing(tmp_path, kind):
    path = _non_regular(tmp_path, kind)
    listing = sorted(os.listdir(path.parent))
    # a fresh process with a timeout: opening a FIFO could block
    result = cli_subprocess("embed", "docs", "a", "-c", "hi", "-m", "hashing", "-d", str(path), timeout=60)
    assert result.returncode != 0
    assert "not a regular file" in result.stderr or "is a directory" in result.stderr, result.stderr
    with pytest.raises(dbfile.DatabasePathError):
        Collection("docs", str(path), model_id="hashing")
    fails("demo", "-m", "hashing", "-n", "5", "-d", str(path), contains="database")
    assert sorted(os.listdir(path.parent)) == listing
    for suffix in dbfile.SIDECARS:
        assert not Path(str(path) + suffix).exists()


def test_files_skip_a_fifo_with_a_warning_instead_of_hanging(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    os.mkfifo(folder / "b.txt")
    path = tmp_path / "app.db"
    result = cli_subprocess("embed-multi", "docs", "--files", str(folder), "*.txt", "-m", "hashing",
                            "-d", str(path), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "skipped " in result.stderr and "b.txt: not a regular file" in result.stderr
    assert _count(path, "docs") == 1


@pytest.mark.parametrize("via", ["fifo", "process substitution"])
def test_an_input_path_that_is_a_pipe_is_read_once(tmp_path, via):
    """Only a regular file is counted before embedding; a pipe is read once, unknown total."""
    path = tmp_path / "app.db"
    data = "id,content\na,hello\nb,world\n"
    if via == "fifo":
        os.mkfifo(tmp_path / "in.csv")
        writer = subprocess.Popen(["sh", "-c", f"printf '{data}' > {tmp_path / 'in.csv'}"])
        result = cli_subprocess("embed-multi", "docs", str(tmp_path / "in.csv"), "-m", "hashing",
                                "-d", str(path), timeout=60)
        writer.wait(timeout=60)
    else:
        result = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m embsqlite embed-multi docs "
             f"<(printf '{data}') -m hashing -d {path}"],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _count(path, "docs") == 2


# Input checks before the model -------------------------------------------------------

@pytest.fixture
def collection(tmp_path, counting_model):
    found = Collection("docs", str(tmp_path / "items.db"), model=counting_model)
    yield found
    found.close()


def _deep(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def _cycle() -> dict:
    value: dict = {}
    value["self"] = value
    return value


BAD_ITEMS = {
    "lone surrogate in the id": (("ok", "fine", None), ("bad\ud800", "text", None), "item 2", "UTF-8"),
    "lone surrogate in the value": (("ok", "fine", None), ("b", "te\udfffxt", None), "'b'", "UTF-8"),
    "keys 1 and '1'": (("ok", "fine", None), ("b", "x", {1: "a", "1": "b"}), "'b'", "collide"),
    "keys True and 'true' nested": (("ok", "fine", None), ("b", "x", {"n": [{True: 1, "true": 2}]}), "'b'", "collide"),
    "nested 900 deep": (("ok", "fine", None), ("b", "x", _deep(900)), "'b'", "nested more than"),
    "nested 101 deep": (("ok", "fine", None), ("b", "x", _deep(101)), "'b'", "nested more than"),
    "a cycle": (("ok", "fine", None), ("b", "x", _cycle()), "'b'", "nested more than"),
    "NaN": (("ok", "fine", None), ("b", "x", {"v": float("nan")}), "'b'", "JSON"),
    "a set": (("ok", "fine", None), ("b", "x", {"v": {1, 2}}), "'b'", "JSON"),
    "bytes": (("ok", "fine", None), ("b", "x", {"v": b"raw"}), "'b'", "JSON"),
    "a tuple key": (("ok", "fine", None), ("b", "x", {(1, 2): "v"}), "'b'", "JSON"),
}


@pytest.mark.parametrize("case", list(BAD_ITEMS))
def test_a_bad_item_is_refused_before_the_model_is_called(collection, counting_model, case):
    first, bad, names, reason = BAD_ITEMS[case]
    with pytest.raises(ValueError) as raised:
        collection.embed_multi_with_metadata([first, bad])
    assert names in str(raised.value) and reason in str(raised.value), raised.value
    assert counting_model.batches == []
    assert collection.count() == 0


def test_metadata_at_the_documented_depth_is_stored_and_read_back(collection):
    metadata = _deep(ingest.MAX_METADATA_DEPTH)
    collection.embed("a", "hello", metadata=metadata)
    assert collection.similar("hello", number=1)[0].metadata == metadata


def test_a_query_with_a_lone_surrogate_is_refused_before_the_model(collection, counting_model):
    collection.embed("a", "hello")
    counting_model.batches.clear()
    for search in (lambda: collection.similar("he\ud800llo"),
                   lambda: collection.similar_by_id("a\ud800"),
                   lambda: collection.similar("hello", prefix="\udc00")):
        with pytest.raises(ValueError, match="UTF-8"):
            search()
    assert counting_model.batches == []


@pytest.mark.parametrize("cached", [False, True])
def test_one_number_rule_for_sql_and_cache(collection, cached):
    collection.embed_multi([("a", "hello"), ("b", "world")])
    vector = collection.model().embed("hello")
    if cached:
        cache.configure(enabled=True)
        collection.similar_by_vector(vector, number=2)  # loads the cache
    else:
        cache.configure(enabled=False)
    try:
        with pytest.raises(ValueError, match="at most"):
            collection.similar_by_vector(vector, number=2**63)
        with pytest.raises(ValueError, match="at most"):
            collection.similar_by_id("a", number=2**63)
        assert [e.id for e in collection.similar_by_vector(vector, number=2**63 - 1)] == ["a", "b"]
    finally:
        cache.configure(enabled=True)


def test_the_cli_refuses_a_bad_id_before_embedding_and_creates_nothing(tmp_path):
    path = tmp_path / "new.db"
    items = tmp_path / "items.ndjson"
    items.write_text('{"id": "a", "t": "x"}\n{"id": "b\\ud800", "t": "y"}\n')
    fails("embed-multi", "docs", str(items), "-m", "hashing", "-d", str(path), contains="item 2")
    assert not path.exists()


def test_json_input_nested_too_deeply_is_a_clear_error(tmp_path):
    items = tmp_path / "deep.json"
    items.write_text("[" * 200_000 + "]" * 200_000)
    fails("embed-multi", "docs", str(items), "-m", "hashing", "-d", str(tmp_path / "x.db"),
          contains="nested too deeply")
    lines = tmp_path / "deep.ndjson"
    lines.write_text('{"id": "a", "metadata": ' + '{"a": ' * 200_000 + "1" + "}" * 200_001 + "\n")
    fails("embed-multi", "docs", str(lines), "-m", "hashing", "-d", str(tmp_path / "x.db"),
          contains="nested too deeply")


# The command line's connections ------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["embed", "docs", "b", "-c", "more"],
    ["embed-multi", "docs", "-"],
    ["demo", "-m", "hashing", "-n", "5", "-q", "hello"],
])
def test_the_cli_writes_through_a_tuned_connection(tmp_path, monkeypatch, command):
    seen = []
    original = ingest.write_rows

    def spy(conn, *args):
        seen.append(tuple(conn.execute(f"pragma {name}").fetchone()[0] for name in
                          ("synchronous", "wal_autocheckpoint", "journal_size_limit", "journal_mode")))
        return original(conn, *args)

    monkeypatch.setattr(ingest, "write_rows", spy)
    path = tmp_path / "app.db"
    ok("embed", "docs", "a", "-c", "first", "-m", "hashing", "-d", str(path))
    ok(*command, "-d", str(path), input="id,t\nc,text\n")
    checkpoint = connection.WAL_AUTOCHECKPOINT_BYTES // connection.NEW_FILE_PAGE_SIZE
    expected = (1, checkpoint, connection.WAL_SIZE_LIMIT, "wal")
    assert seen == [expected, expected]


# Read-only media ---------------------------------------------------------------------

READ_SCRIPT = """
import sys
from click.testing import CliRunner
from embsqlite import Collection
from embsqlite.cli import cli
path = sys.argv[1]
print([e.id for e in Collection("docs", path).similar("hello world", number=2)])
result = CliRunner().invoke(cli, ["similar", "docs", "-c", "hello world", "-n", "2", "-p", "-d", path])
print(result.exit_code, result.output.replace(chr(10), " "), result.stderr.replace(chr(10), " "))
"""


def _read_only_mount(source: Path, target: Path, path: Path) -> subprocess.CompletedProcess:
    """Run READ_SCRIPT on `path` while `source` is bind-mounted read-only on `target`, in
    a private mount namespace that ends with the process."""
    script = (
        f"mount --bind '{source}' '{target}' && mount -o remount,bind,ro '{target}' && "
        f"exec '{sys.executable}' -c '{READ_SCRIPT}' '{path}'"
    )
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)


def _embsqlite_db(path: Path) -> None:
    collection = Collection("docs", str(path), model_id="hashing")
    collection.embed_multi([("a", "hello world"), ("b", "goodbye moon"), ("c", "hello moon")])
    collection.close()


def _llm_db(path: Path) -> None:
    import llm

    from embsqlite.hashing import HashingModel

    class LlmHashing(llm.EmbeddingModel):
        model_id = "hashing"

        def embed_batch(self, items):
            return HashingModel().embed_batch(list(items))

    collection = llm.Collection("docs", sqlite_utils.Database(path), model=LlmHashing())
    collection.embed_multi([("a", "hello world"), ("b", "goodbye moon"), ("c", "hello moon")])


def _assert_searched(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "['a', 'c']"
    assert re.match(r"0 a \((1\.0|0\.99999)", second), second


@pytest.mark.parametrize("maker", [_embsqlite_db, _llm_db], ids=["embsqlite WAL", "llm rollback journal"])
def test_a_copy_in_a_read_only_directory_can_be_searched(tmp_path, maker):
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    maker(source / "copy.db")
    assert sorted(os.listdir(source)) == ["copy.db"]
    _assert_searched(_read_only_mount(source, target, target / "copy.db"))


def test_a_read_only_file_in_a_writable_directory_can_be_searched(tmp_path):
    source = tmp_path / "source.db"
    _embsqlite_db(source)
    target = tmp_path / "copy.db"
    target.touch()
    _assert_searched(_read_only_mount(source, target, target))


def test_a_read_only_copy_with_its_wal_and_shm_reads_the_wal(tmp_path):
    """Copied while open: the -wal holds rows the main file does not; SQLite reads them
    through the copied -shm, and nothing is opened immutable (which would miss them)."""
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    writer = Collection("docs", str(source / "copy.db"), model_id="hashing")
    writer.conn.execute("pragma wal_autocheckpoint = 0")
    writer.embed_multi([("a", "hello world"), ("b", "goodbye moon"), ("c", "hello moon")])
    assert (source / "copy.db-wal").stat().st_size > 0
    _assert_searched(_read_only_mount(source, target, target / "copy.db"))
    writer.close()


def test_a_new_database_on_read_only_media_is_a_clear_error(tmp_path):
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    _embsqlite_db(source / "copy.db")
    result = _read_only_mount(source, target, target / "new.db")
    assert result.returncode != 0
    assert "directory" in result.stderr and "not writable" in result.stderr, result.stderr


def test_a_read_only_copy_whose_wal_cannot_be_read_says_what_to_do(tmp_path):
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    writer = Collection("docs", str(source / "live.db"), model_id="hashing")
    writer.conn.execute("pragma wal_autocheckpoint = 0")
    writer.embed_multi([("a", "hello world"), ("b", "goodbye moon")])
    shutil.copy(source / "live.db", source / "copy.db")
    shutil.copy(source / "live.db-wal", source / "copy.db-wal")  # but no -shm
    writer.close()
    result = _read_only_mount(source, target, target / "copy.db")
    assert result.returncode != 0
    assert "copy.db-wal holds changes" in result.stderr and "copy.db-shm" in result.stderr


@pytest.mark.parametrize("method, query", [
    ("embed_multi", "select 'x-' || id, content from embeddings"),
    ("embed_multi_with_metadata", "select 'x-' || id, content, null from embeddings"),
])
def test_a_cursor_on_the_collections_own_connection_is_refused(collection, counting_model, method, query):
    """Such a cursor also sees the rows each batch writes (item 301 would be 'x-x-000')."""
    collection.embed_multi([(f"{i:03d}", f"text {i}") for i in range(30)], store=True)
    counting_model.batches.clear()
    with pytest.raises(ValueError, match="own connection"):
        getattr(collection, method)(collection.conn.execute(query))
    assert counting_model.batches == [] and collection.count() == 30
    # what the message suggests writes each row once
    getattr(collection, method)(collection.conn.execute(query).fetchall(), store=True)
    assert collection.count() == 60


@pytest.mark.parametrize("option", [["similar", "docs", "-c", "hello", "-n"],
                                    ["embed-multi", "docs", "-", "-m", "hashing", "--batch-size"]])
def test_the_cli_refuses_counts_beyond_2_63_as_usage_errors(tmp_path, option):
    path = tmp_path / "app.db"
    ok("embed", "docs", "a", "-c", "hello", "-m", "hashing", "-d", str(path))
    before = digest(path)
    result = run(*option, str(2**63), "-d", str(path), input="id,t\nb,x\n")
    assert result.exit_code == 2 and str(2**63 - 1) in result.stderr, result.stderr
    assert digest(path) == before
    ok(*option, str(2**63 - 1), "-d", str(path), input="id,t\nb,x\n")


@pytest.mark.parametrize("depth, message", [(200_000, "nested too deeply"), (101, "nested more than 100")])
def test_cli_metadata_nested_too_deeply_is_a_clear_error(tmp_path, depth, message):
    path = tmp_path / "new.db"
    fails("embed", "docs", "a", "-c", "hello", "-m", "hashing", "-d", str(path),
          "--metadata", '{"a": ' * depth + "1" + "}" * depth, contains=message)
    assert not path.exists()


# Other connections writing while a batch is embedded ------------------------------------

class MeddlingModel(embsqlite.EmbeddingModel):
    """The built-in hashing model, but each embed_batch first runs `meddle` (another
    connection writing), as another process could during a slow model call."""

    model_id = "hashing"

    def __init__(self, meddle):
        self.inner = embsqlite.get_embedding_model("hashing")
        self.meddle = meddle
        self.calls = 0

    def embed_batch(self, items):
        self.calls += 1
        self.meddle(self.calls)
        yield from self.inner.embed_batch(items)


def _rows(path):
    hashing = embsqlite.get_embedding_model("hashing")
    conn = sqlite3.connect(path)
    try:
        return {
            id_: (content, bytes(digest) == ingest.content_hash(content),
                  bytes(vector) == embsqlite.encode(hashing.embed(content)))
            for id_, content, digest, vector in conn.execute(
                "select id, content, content_hash, embedding from embeddings")
        }
    finally:
        conn.close()


def _other_writes(path, sql, *params):
    def meddle(call):
        if call == 1:
            conn = sqlite3.connect(path)
            conn.execute(sql, params)
            conn.commit()
            conn.close()
    return meddle


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_row_changed_during_the_model_call_is_planned_again(tmp_path, change):
    """The batch's plan is checked again inside its write transaction: every row ends with
    content, hash and vector that agree, and no write is lost."""
    path = tmp_path / "x.db"
    Collection("c", str(path), model_id="hashing").embed("a", "hello", store=True)
    hashing = embsqlite.get_embedding_model("hashing")
    if change == "replaced":
        meddle = _other_writes(
            path, "update embeddings set content = 'bye', content_hash = ?, embedding = ? "
            "where id = 'a'", ingest.content_hash("bye"), embsqlite.encode(hashing.embed("bye")))
    else:
        meddle = _other_writes(path, "delete from embeddings where id = 'a'")
    collection = Collection("c", str(path), model=MeddlingModel(meddle))
    collection.embed_multi_with_metadata(
        [("a", "hello", {"v": 2}), ("z", "something new", None)], store=True)
    assert _rows(path) == {"a": ("hello", True, True), "z": ("something new", True, True)}


def test_a_batch_whose_rows_keep_changing_fails_clearly_writing_nothing(tmp_path):
    """Another connection changes row 'a' each time the batch is about to write (when
    BEGIN IMMEDIATE starts): after PLAN_ATTEMPTS plans the batch fails, writing nothing."""
    path = tmp_path / "x.db"
    Collection("c", str(path), model_id="hashing").embed("a", "hello", store=True)
    hashing = embsqlite.get_embedding_model("hashing")
    begins = []

    def on_statement(statement):
        if statement.strip().upper().startswith("BEGIN"):
            begins.append(statement)
            text = "hello" if len(begins) % 2 == 0 else f"other {len(begins)}"
            conn = sqlite3.connect(path)
            conn.execute("update embeddings set content = ?, content_hash = ?, embedding = ? "
                         "where id = 'a'", (text, ingest.content_hash(text),
                                            embsqlite.encode(hashing.embed(text))))
            conn.commit()
            conn.close()

    model = MeddlingModel(lambda call: None)
    collection = Collection("c", str(path), model=model)
    collection.conn.set_trace_callback(on_statement)
    with pytest.raises(ingest.StaleBatchError, match="kept changing"):
        collection.embed_multi([("a", "hello"), ("b", "new")])
    collection.conn.set_trace_callback(None)
    assert set(_rows(path)) == {"a"} and len(begins) == ingest.PLAN_ATTEMPTS
    assert model.calls <= 2  # each distinct content is embedded once across the attempts


@pytest.mark.parametrize("change", ["renamed", "deleted and replaced"])
def test_a_collection_renamed_or_replaced_elsewhere_is_never_written_or_searched(tmp_path, change):
    path = tmp_path / "x.db"
    collection = Collection("c", str(path), model_id="hashing")
    collection.embed("a", "hello")
    for _ in range(3):
        collection.similar("hello")
    other = sqlite3.connect(path, isolation_level=None)
    if change == "renamed":
        other.execute("update collections set name = 'renamed'")
    else:
        other.execute("delete from embeddings")
        other.execute("delete from collections")
        other.execute("insert into collections (id, name, model) values (1, 'other', 'hashing-3')")
        other.execute("insert into embeddings (collection_id, id, embedding) values (1, 'o', ?)",
                      (embsqlite.encode([1.0, 0.0, 0.0]),))
    before = other.execute("select * from embeddings").fetchall()
    with pytest.raises(Collection.DoesNotExist, match="renamed or deleted by another connection"):
        collection.embed("x", "text")
    with pytest.raises(Collection.DoesNotExist, match="renamed or deleted"):
        collection.similar_by_vector([1.0] * 256)
    with pytest.raises(Collection.DoesNotExist, match="renamed or deleted"):
        collection.delete()
    assert other.execute("select * from embeddings").fetchall() == before


# Text SQLite cannot store, in names and metadata -------------------------------------

@pytest.mark.parametrize("name", ["c\udcff", "\ud800"])
def test_a_collection_name_sqlite_cannot_store_is_refused_before_any_file(tmp_path, name):
    path = tmp_path / "x.db"
    with pytest.raises(UnicodeEncodeError, match="collection name"):
        Collection(name, str(path), model_id="hashing")
    fails("embed", name, "a", "-c", "hi", "-m", "hashing", "-d", str(path),
          contains="collection name")
    if name == "c\udcff":  # the byte 0xff on a real command line
        result = cli_subprocess("embed", name, "a", "-c", "hi", "-m", "hashing", "-d", str(path))
        assert result.returncode == 1 and result.stderr.startswith("Error: "), result.stderr
    assert os.listdir(tmp_path) == []


def test_metadata_with_a_lone_surrogate_is_refused_so_searches_can_print_it(tmp_path):
    path = tmp_path / "x.db"
    collection = Collection("c", str(path), model_id="hashing")
    for metadata in ({"\ud800": 1}, {"k": ["ok", "\udcff"]}):
        with pytest.raises(UnicodeEncodeError, match="metadata"):
            collection.embed("a", "hi", metadata=metadata)
    fails("embed", "c", "a", "-c", "hi", "--metadata", '{"\\ud800": 1}', "-d", str(path),
          contains="metadata")
    assert collection.count() == 0
    ok("embed", "c", "b", "-c", "hi", "--metadata", '{"\\u00e9": 1}', "-d", str(path))
    assert "\u00e9" in ok("similar", "c", "-c", "hi", "-d", str(path)).output


# One-line errors instead of tracebacks ------------------------------------------------

@pytest.mark.parametrize("command", [["similar", "c", "-c", "hi"], ["collections", "list"],
                                     ["collections", "delete", "c"], ["embed", "c", "a", "-c", "hi"]])
def test_every_command_on_a_foreign_table_prints_one_error_line(tmp_path, command):
    path = _foreign_db(tmp_path, "create table embeddings(x);")
    before = digest(path)
    result = cli_subprocess(*command, "-m" if command[0] == "embed" else "-d", *(
        ["hashing", "-d"] if command[0] == "embed" else []), str(path))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()] and \
        result.stderr.startswith("Error: table 'embeddings' is not llm's"), result.stderr
    assert digest(path) == before


@pytest.mark.parametrize("alias", ["main", "temp", "MAIN"])
def test_attach_under_a_reserved_alias_is_one_error_line_leaving_nothing(tmp_path, alias):
    other = _foreign_db(tmp_path, "create table t(a);")
    path = tmp_path / "x.db"
    result = cli_subprocess("embed-multi", "c", "--attach", alias, str(other),
                            "--sql", "select 1 as id, 'x' as t", "-m", "hashing", "-d", str(path))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "reserves that name" in result.stderr
    assert not path.exists()


def test_attaching_the_same_alias_twice_is_one_error_line(tmp_path):
    other = _foreign_db(tmp_path, "create table t(a);")
    path = tmp_path / "x.db"
    fails("embed-multi", "c", "--attach", "o", str(other), "--attach", "o", str(other),
          "--sql", "select 1 as id, 'x' as t", "-m", "hashing", "-d", str(path),
          contains="already in use")
    assert not path.exists()


@pytest.mark.slow
def test_creating_a_collection_on_a_locked_database_is_one_error_line(tmp_path):
    path = tmp_path / "x.db"
    ok("embed", "c", "a", "-c", "hi", "-m", "hashing", "-d", str(path))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin immediate")
    try:  # waits out the command's busy timeout
        result = cli_subprocess("embed", "newc", "a", "-c", "hi", "-m", "hashing", "-d", str(path))
    finally:
        holder.execute("rollback")
        holder.close()
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == ["Error: database error: database is locked"], result.stderr


SLOW_MODEL_CLI = """
import os, sys, time, embsqlite
from embsqlite.cli import cli
class Slow(embsqlite.EmbeddingModel):
    model_id = "slow"
    def embed_batch(self, items):
        open(os.environ["CALLS"], "a").write("call\\n")
        time.sleep(60)
        for item in items:
            yield [1.0, 0.5]
embsqlite.register_embedding_model(Slow())
cli(prog_name="embsqlite")
"""


def test_sigterm_during_the_model_call_cleans_up_like_ctrl_c(tmp_path):
    """The collection (and the file) a killed command created are removed, so the same
    command with another model works afterwards."""
    import signal
    import time

    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_MODEL_CLI)
    (tmp_path / "in.csv").write_text("id,text\na,one\n")
    path = tmp_path / "x.db"
    calls = tmp_path / "calls"
    process = subprocess.Popen(
        [sys.executable, str(script), "embed-multi", "c", str(tmp_path / "in.csv"), "-m", "slow",
         "-d", str(path)], env={**os.environ, "CALLS": str(calls)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not calls.exists():
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert not path.exists() and "Traceback" not in stderr, stderr
    ok("embed-multi", "c", str(tmp_path / "in.csv"), "-m", "hashing", "-d", str(path))


# Settings from the environment ---------------------------------------------------------

@pytest.mark.parametrize("value", ["", "abc", "nan", "inf", "-1"])
@pytest.mark.parametrize("name", ["EMBSQLITE_CACHE_MB", "EMBSQLITE_MMAP_MB"])
def test_a_bad_numeric_setting_warns_and_falls_back_without_breaking_import(name, value):
    result = subprocess.run(
        [sys.executable, "-c", "import embsqlite.cli; from embsqlite import cache, connection;"
         "print(cache.budget_bytes(), connection.MMAP_BYTES)"],
        capture_output=True, text=True, timeout=120, env={**os.environ, name: value})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(2048 * 2**20), "0"]
    assert f"{name}={value!r} is not a number" in result.stderr
    assert cli_subprocess("--help", **{name: value}).returncode == 0


def test_a_bad_minilm_thread_count_warns_and_uses_one(monkeypatch):
    from embsqlite import minilm

    monkeypatch.setenv(minilm.THREADS_ENV, "abc")
    with pytest.warns(RuntimeWarning, match=f"{minilm.THREADS_ENV}='abc' is not an integer"):
        model = minilm.MiniLMModel()
    assert model.threads == 1


def _llm_oldest_db(path: Path) -> None:
    """A database llm made before its m003 migration (no updated, no content_hash)."""
    db = sqlite_utils.Database(path)
    embeddings_migrations.apply(db, stop_before="m003_add_updated")
    db["collections"].insert({"id": 1, "name": "docs", "model": "hashing"})
    hashing = embsqlite.get_embedding_model("hashing")
    for id_, text in [("a", "hello world"), ("b", "goodbye moon"), ("c", "hello moon")]:
        db["embeddings"].insert({"collection_id": 1, "id": id_, "content": text,
                                 "embedding": embsqlite.encode(hashing.embed(text))})
    db.close()


def test_an_older_llm_database_on_read_only_media_is_searched_as_it_is(tmp_path):
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    _llm_oldest_db(source / "copy.db")
    before = digest(source / "copy.db")
    _assert_searched(_read_only_mount(source, target, target / "copy.db"))
    assert digest(source / "copy.db") == before


WRITE_SCRIPT = """
import sys
from click.testing import CliRunner
from embsqlite.cli import cli
path = sys.argv[1]
for args in (["embed", "newcoll", "a", "-c", "hi", "-m", "hashing"], ["embed", "docs", "z", "-c", "hi"],
             ["collections", "delete", "docs"], ["demo", "-m", "hashing", "-n", "3"]):
    result = CliRunner().invoke(cli, [*args, "-d", path])
    print(result.exit_code, repr(result.exception), result.stderr.replace(chr(10), " | "))
"""


@pytest.mark.slow
@pytest.mark.parametrize("maker", [_embsqlite_db, _llm_oldest_db], ids=["embsqlite", "llm m001"])
def test_writes_on_read_only_media_are_one_error_line(tmp_path, maker):
    source, target = tmp_path / "source", tmp_path / "mnt"
    source.mkdir(), target.mkdir()
    maker(source / "copy.db")
    before = digest(source / "copy.db")
    script = (
        f"mount --bind '{source}' '{target}' && mount -o remount,bind,ro '{target}' && "
        f"exec '{sys.executable}' -c '{WRITE_SCRIPT}' '{target / 'copy.db'}'"
    )
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout + result.stderr
    for line in lines:
        assert line.startswith("1 SystemExit(1) Error: ") and " | " not in line.strip(" |"), line
        assert "readonly" in line or "read-only" in line, line
    assert digest(source / "copy.db") == before


def test_a_failed_command_through_a_dangling_symlink_keeps_the_link_and_removes_its_file(tmp_path):
    folder = tmp_path / "dbs"
    folder.mkdir()
    (folder / "link.db").symlink_to(folder / "new.db")
    fails("embed", "c", "a", "-c", "hi", "-m", "nosuchmodel", "-d", str(folder / "link.db"),
          contains="nosuchmodel")
    assert sorted(os.listdir(folder)) == ["link.db"] and (folder / "link.db").is_symlink()
    ok("embed", "c", "a", "-c", "hi", "-m", "hashing", "-d", str(folder / "link.db"))
    assert _count(folder / "new.db", "c") == 1


@pytest.mark.parametrize("attempt", [
    lambda path: Collection("c", str(path), create=False),
    lambda path: Collection("c", str(path)),
    lambda path: Collection("c", str(path), model_id="nosuch"),
], ids=["create=False", "no model", "unknown model"])
def test_a_failed_collection_open_leaves_no_file_and_no_tables(tmp_path, attempt):
    folder = tmp_path / "dbs"
    folder.mkdir()
    with pytest.raises((Collection.DoesNotExist, ValueError, embsqlite.UnknownModelError)):
        attempt(folder / "x.db")
    assert os.listdir(folder) == []
    other = folder / "other.db"
    _foreign_db(folder, "create table notes(n);").rename(other)
    with pytest.raises((Collection.DoesNotExist, ValueError, embsqlite.UnknownModelError)):
        attempt(other)
    conn = sqlite3.connect(other)
    assert conn.execute("select name from sqlite_master").fetchall() == [("notes",)]
    conn.close()


def test_a_failed_command_on_an_empty_file_leaves_it_empty(tmp_path):
    folder = tmp_path / "dbs"
    folder.mkdir()
    path = folder / "x.db"
    path.touch()
    fails("embed", "c", "a", "-c", "hi", "-m", "nosuchmodel", "-d", str(path), contains="nosuchmodel")
    fails("embed-multi", "c", "-", "-m", "hashing", "-d", str(path), input="id,text\n,empty id\n")
    assert os.listdir(folder) == ["x.db"] and path.stat().st_size == 0
