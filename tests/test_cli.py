"""The `embsqlite` command line, through click's CliRunner and through real subprocesses.

Most tests use the built-in `hashing` model (fast, deterministic); those marked slow use
all-MiniLM-L6-v2, the real default.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time

import pytest
from click.testing import CliRunner

import embsqlite
from embsqlite import demo
from embsqlite.cli import cli
from embsqlite.collection import Collection


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch):
    """The hashing model as the default (user files are under tmp_path: see conftest.py)."""
    monkeypatch.setenv("EMBSQLITE_DEFAULT_MODEL", "hashing")
    monkeypatch.delenv("EMBSQLITE_DATABASE", raising=False)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "embeddings.db")


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def ok(*args: str, input: str | bytes | None = None):
    result = run(*args, input=input)
    assert result.exit_code == 0, result.output
    return result


def fails(*args: str, input: str | bytes | None = None, contains: str = "", code: int | None = None):
    """The command fails with exactly one line on stderr, containing `contains`."""
    result = run(*args, input=input)
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines
    assert contains.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def rows(db: str, collection: str = "items") -> dict:
    conn = sqlite3.connect(db)
    found = {
        r[0]: {"content": r[1], "metadata": json.loads(r[2]) if r[2] else None, "blob": r[3],
               "dims": r[4]}
        for r in conn.execute(
            "select e.id, e.content, e.metadata, e.content_blob, length(e.embedding) / 4 "
            "from embeddings e join collections c on c.id = e.collection_id where c.name = ?",
            (collection,),
        )
    }
    conn.close()
    return found


# embed


def test_embed_without_collection_prints_the_vector_in_every_format():
    expected = embsqlite.get_embedding_model("hashing").embed("my happy hound")
    vector = json.loads(ok("embed", "-c", "my happy hound").stdout)
    assert vector == pytest.approx(expected, abs=1e-7)
    blob = embsqlite.encode(expected)
    assert ok("embed", "-c", "my happy hound", "-f", "hex").stdout.strip() == blob.hex()
    assert base64.b64decode(ok("embed", "-c", "my happy hound", "-f", "base64").stdout) == blob
    assert ok("embed", "-c", "my happy hound", "-f", "blob").stdout_bytes == blob + b"\n"  # as llm


def test_embed_reads_a_file_stdin_and_binary(tmp_path):
    model = embsqlite.get_embedding_model("hashing")
    path = tmp_path / "note.txt"
    path.write_text("héllo wörld", encoding="utf-8")
    assert json.loads(ok("embed", "-i", str(path)).stdout) == pytest.approx(model.embed("héllo wörld"))
    assert json.loads(ok("embed", "-i", "-", input="from stdin").stdout) == pytest.approx(model.embed("from stdin"))
    assert json.loads(ok("embed", input="implicit stdin").stdout) == pytest.approx(model.embed("implicit stdin"))
    data = bytes(range(256))
    path.write_bytes(data)
    assert json.loads(ok("embed", "-i", str(path), "--binary").stdout) == pytest.approx(model.embed(data))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    assert json.loads(ok("embed", "-i", str(latin)).stdout) == pytest.approx(model.embed("café"))


def test_embed_stores_into_a_collection(db):
    ok("embed", "items", "hound", "-c", "my happy hound", "--store",
       "--metadata", '{"kind": "pet"}', "-d", db)
    ok("embed", "items", "crash", "-c", "stock market crash", "-d", db)
    stored = rows(db)
    assert stored["hound"] == {"content": "my happy hound", "metadata": {"kind": "pet"},
                               "blob": None, "dims": 256}
    assert stored["crash"]["content"] is None and stored["crash"]["metadata"] is None
    collection = Collection("items", db, create=False)
    assert collection.model_id == "hashing"
    # -f with a collection prints the stored vector.
    printed = json.loads(ok("embed", "items", "dog", "-c", "a happy dog", "-f", "json", "-d", db).stdout)
    assert printed == pytest.approx(embsqlite.get_embedding_model("hashing").embed("a happy dog"), abs=1e-7)


def test_embed_uses_the_database_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("EMBSQLITE_DATABASE", str(path))
    ok("embed", "items", "a", "-c", "alpha")
    assert rows(str(path))["a"]["dims"] == 256
    assert ok("collections", "path").stdout.strip() == str(path)
    assert ok("collections").stdout == "items: hashing\n  1 embedding\n"


def test_embed_defaults_to_the_user_path(user_path):
    ok("embed", "items", "a", "-c", "alpha")
    default = user_path / "embeddings.db"
    assert default.exists()
    assert ok("collections", "path").stdout.strip() == str(default)
    assert "items: hashing" in ok("collections").stdout


@pytest.mark.linux_only(reason="platformdirs follows XDG_* there")
def test_without_user_path_embed_uses_the_platform_data_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBSQLITE_USER_PATH")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    ok("embed", "items", "a", "-c", "alpha")
    default = tmp_path / "xdg-data" / "embsqlite" / "embeddings.db"
    assert default.exists()
    assert ok("collections", "path").stdout.strip() == str(default)


def test_user_path_that_is_a_file_is_one_line_naming_it(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("EMBSQLITE_USER_PATH", str(not_a_dir))
    for args in (["embed", "items", "a", "-c", "alpha"], ["collections", "path"], ["models", "default", "hash"]):
        fails(*args, contains=f"cannot use {not_a_dir}: EMBSQLITE_USER_PATH must name a directory")
    assert not_a_dir.read_text() == "x"


def test_embed_into_a_collection_of_another_model_is_refused(db):
    ok("embed", "items", "a", "-c", "alpha", "-d", db)
    fails("embed", "items", "b", "-c", "beta", "-m", "hashing-64", "-d", db, contains="was made with model")


def test_embed_usage_errors(db):
    fails("embed", "items", "-c", "x", "-d", db, contains="Must provide both collection and id", code=1)
    fails("embed", "-c", "x", "--store", contains="Must provide collection when using --store", code=1)
    fails("embed", "-c", "x", "--metadata", "{}", contains="Must provide collection when using --metadata")
    fails("embed", "-c", "", contains="No content provided")


# embed-multi


def test_embed_multi_csv_with_metadata_prefix_prepend_and_store(db, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        'id,title,body,metadata\n'
        '1,Hound,"my happy hound",{"n": 1}\n'
        '2,Crash,"stock, market crash",\n',
        encoding="utf-8",
    )
    ok("embed-multi", "items", str(path), "--store", "--prefix", "doc-", "--prepend", "passage: ", "-d", db)
    stored = rows(db)
    assert stored["doc-1"]["content"] == "passage: Hound my happy hound"
    assert stored["doc-1"]["metadata"] == {"n": 1}
    assert stored["doc-2"] == {"content": "passage: Crash stock, market crash", "metadata": None,
                               "blob": None, "dims": 256}


@pytest.mark.parametrize(
    "name, text, format_",
    [
        ("items.tsv", "id\tcontent\na\talpha beta\nb\tgamma\n", None),
        ("items.json", '[{"id": "a", "content": "alpha beta"}, {"id": "b", "content": "gamma"}]', None),
        ("items.jsonl", '{"id": "a", "content": "alpha beta"}\n\n{"id": "b", "content": "gamma"}\n', None),
        ("items.txt", '{"content": "alpha beta", "id": "a"}\n{"id": "b", "content": "gamma"}\n', "nl"),
        ("items.dat", "id,content\na,alpha beta\nb,gamma\n", "csv"),
        ("items.json", '[{"key": "a", "content": "alpha beta"}, {"key": "b", "content": "gamma"}]', "json"),
    ],
)
def test_embed_multi_formats(db, tmp_path, name, text, format_):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    extra = ["--format", format_] if format_ else []
    ok("embed-multi", "items", str(path), "--store", "-d", db, *extra)
    stored = rows(db)
    assert {k: v["content"] for k, v in stored.items()} == {"a": "alpha beta", "b": "gamma"}


def test_embed_multi_json_metadata_and_non_text_values(db, tmp_path):
    path = tmp_path / "items.json"
    path.write_text(json.dumps([
        {"id": 7, "title": "seven", "year": 2024, "tags": ["x"], "metadata": {"a": [1, 2]}},
        {"id": "s", "title": None, "body": "text", "metadata": '{"b": true}'},
    ]), encoding="utf-8")
    ok("embed-multi", "items", str(path), "--store", "-d", db)
    stored = rows(db)
    assert stored["7"]["content"] == 'seven 2024 ["x"]'
    assert stored["7"]["metadata"] == {"a": [1, 2]}
    assert stored["s"]["content"] == " text" and stored["s"]["metadata"] == {"b": True}


def test_embed_multi_from_stdin(db):
    ok("embed-multi", "items", "-", "--store", "-d", db, input='{"id": "a", "text": "from stdin"}\n')
    assert rows(db)["a"]["content"] == "from stdin"
    ok("embed-multi", "items", "-", "--store", "-d", db, input="id,text\nb,csv on stdin\n")
    assert rows(db)["b"]["content"] == "csv on stdin"


def test_embed_multi_files_utf8_then_latin1_and_binary(db, tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("ünïcode text", encoding="utf-8")
    (root / "sub" / "b.txt").write_bytes("café crème".encode("latin-1"))
    (root / "skip.md").write_text("not matched")
    (root / "dir.txt").mkdir()  # a directory matching the glob is skipped
    ok("embed-multi", "items", "--files", str(root), "**/*.txt", "--store", "-d", db)
    stored = rows(db)
    assert {k: v["content"] for k, v in stored.items()} == {"a.txt": "ünïcode text", "sub/b.txt": "café crème"}
    ok("embed-multi", "bin", "--files", str(root), "**/*.txt", "--binary", "--store", "-d", db)
    binary = rows(db, "bin")
    assert binary["sub/b.txt"]["blob"] == "café crème".encode("latin-1")
    assert binary["sub/b.txt"]["content"] is None
    # Only utf-8 allowed: the latin-1 file is skipped with a warning.
    result = ok("embed-multi", "strict", "--files", str(root), "**/*.txt", "--encoding", "utf-8", "-d", db)
    assert result.stderr == f"Could not decode text in file {root / 'sub' / 'b.txt'}\n"
    assert set(rows(db, "strict")) == {"a.txt"}


def test_embed_multi_repeated_files_options(db, tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(f"text {name}")
    ok("embed-multi", "items", "--files", str(tmp_path / "one"), "*.txt",
       "--files", str(tmp_path / "two"), "*.txt", "-d", db)
    assert set(rows(db)) == {"one.txt", "two.txt"}


def test_embed_multi_sql_with_attach(db, tmp_path):
    other = tmp_path / "blog.db"
    conn = sqlite3.connect(other)
    conn.execute("create table posts (id integer primary key, title text, body text, picture blob)")
    conn.executemany("insert into posts values (?, ?, ?, ?)",
                     [(1, "Dogs", "my happy hound", b"\x01\x02\x03\x04\x05"),
                      (2, "Money", "stock market crash", b"\x09\x08\x07\x06\x05")])
    conn.commit()
    conn.close()
    ok("embed-multi", "items", "--attach", "blog", str(other),
       "--sql", "select id, title, body from blog.posts", "--store", "-d", db)
    assert rows(db)["1"]["content"] == "Dogs my happy hound"
    ok("embed-multi", "pictures", "--attach", "blog", str(other),
       "--sql", "select id, picture from blog.posts", "--binary", "--store", "-d", db)
    assert rows(db, "pictures")["2"]["blob"] == b"\x09\x08\x07\x06\x05"


def test_embed_multi_batches_and_dedup(db, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("id,text\n" + "".join(f"{i},text number {i % 7}\n" for i in range(250)))
    ok("embed-multi", "items", str(path), "--batch-size", "16", "-d", db)
    assert len(rows(db)) == 250
    ok("embed-multi", "items", str(path), "--batch-size", "1000", "-d", db)  # again: no change
    assert len(rows(db)) == 250


# similar


@pytest.fixture
def filled(db, tmp_path) -> str:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([
        {"id": "dog-1", "text": "my happy hound", "metadata": {"pet": True}},
        {"id": "dog-2", "text": "a happy dog barks"},
        {"id": "cat-1", "text": "a happy cat sleeps"},
        {"id": "money", "text": "stock market crash"},
    ]))
    ok("embed-multi", "items", str(path), "--store", "-d", db)
    return db


def test_similar_json_lines_match_the_library(filled):
    lines = ok("similar", "items", "-c", "happy hound", "-d", filled).stdout.splitlines()
    got = [json.loads(line) for line in lines]
    expected = Collection("items", filled, create=False).similar("happy hound")
    assert [g["id"] for g in got] == [e.id for e in expected]
    assert [g["score"] for g in got] == [e.score for e in expected]
    assert got[0] == {"id": "dog-1", "score": expected[0].score, "content": "my happy hound",
                      "metadata": {"pet": True}}


def test_similar_by_id_number_prefix_and_plain(filled):
    by_id = [json.loads(x)["id"] for x in ok("similar", "items", "dog-1", "-d", filled).stdout.splitlines()]
    assert "dog-1" not in by_id and len(by_id) == 3
    assert len(ok("similar", "items", "dog-1", "-n", "1", "-d", filled).stdout.splitlines()) == 1
    prefixed = ok("similar", "items", "-c", "happy", "--prefix", "dog-", "-d", filled).stdout.splitlines()
    assert {json.loads(x)["id"] for x in prefixed} == {"dog-1", "dog-2"}
    plain = ok("similar", "items", "-c", "happy hound", "-n", "1", "--plain", "-d", filled).stdout
    score = Collection("items", filled, create=False).similar("happy hound", number=1)[0].score
    assert plain == f'dog-1 ({score})\n\n  my happy hound\n  {{"pet": true}}\n\n'
    from_stdin = ok("similar", "items", "-i", "-", "-n", "1", "-d", filled, input="stock crash").stdout
    assert json.loads(from_stdin)["id"] == "money"


# collections and models


def test_collections_list_on_a_new_machine_says_there_are_none_yet(tmp_path):
    default = tmp_path / "embsqlite-user" / "embeddings.db"
    for args in (["collections"], ["collections", "list"]):
        result = ok(*args)
        assert result.stdout == ""
        assert result.stderr == f"No collections yet (no database at {default})\n"
    assert ok("collections", "list", "--json").stdout == "[]\n"
    missing = tmp_path / "missing.db"
    assert "No collections yet" in ok("collections", "-d", str(missing)).stderr
    assert not default.exists() and not missing.exists()  # listing creates nothing
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert ok("collections", "-d", str(empty)).stderr == f"No collections yet in {empty}\n"


def test_collections_list_json_and_delete(filled):
    assert ok("collections", "list", "-d", filled).stdout == "items: hashing\n  4 embeddings\n"
    assert ok("collections", "-d", filled).stdout == "items: hashing\n  4 embeddings\n"
    listed = json.loads(ok("collections", "list", "--json", "-d", filled).stdout)
    assert listed == [{"name": "items", "model": "hashing", "num_embeddings": 4}]
    ok("collections", "delete", "items", "-d", filled)
    assert json.loads(ok("collections", "list", "--json", "-d", filled).stdout) == []
    assert rows(filled) == {}


def test_models_list_and_default(monkeypatch, user_path):
    listed = ok("models", "list").stdout.splitlines()
    assert ok("models").stdout.splitlines() == listed
    assert "hashing (aliases: hash, hashing-256) [default]" in listed
    as_json = json.loads(ok("models", "list", "--json").stdout)
    hashing = next(m for m in as_json if m["model_id"] == "hashing")
    assert hashing == {"model_id": "hashing", "aliases": ["hash", "hashing-256"],
                       "supports_text": True, "supports_binary": True, "default": True}
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL")
    ok("models", "default", "hash")
    assert ok("models", "default").stdout.strip() == "hashing"
    assert (user_path / "default_model.txt").read_text() == "hashing\n"
    ok("models", "default", "--remove")
    assert ok("models", "default").stdout.strip() in ("all-MiniLM-L6-v2", "hashing")
    fails("models", "default", "no-such-model", contains="no-such-model")


# error paths: one line on stderr, non-zero exit, no traceback


def test_error_missing_collection(filled):
    fails("similar", "nope", "-c", "x", "-d", filled, contains="Collection does not exist", code=1)
    fails("collections", "delete", "nope", "-d", filled, contains="Collection does not exist", code=1)


def test_error_missing_database(tmp_path):
    missing = str(tmp_path / "missing.db")
    fails("similar", "items", "-c", "x", "-d", missing, contains="no database at")
    assert not os.path.exists(missing)


def test_error_not_a_database(tmp_path):
    path = tmp_path / "text.db"
    path.write_text("this is not SQLite " * 100)
    fails("similar", "items", "-c", "x", "-d", str(path), contains="not a database")
    fails("embed", "items", "a", "-c", "x", "-d", str(tmp_path), contains="is a directory")


def test_error_unknown_id(filled):
    fails("similar", "items", "no-such-id", "-d", filled, contains="ID not found in collection", code=1)


def test_error_unknown_model(db, tmp_path):
    fails("embed", "-c", "x", "-m", "no-such-model", contains="Unknown embedding model: 'no-such-model'")
    fails("embed", "items", "a", "-c", "x", "-m", "no-such-model", "-d", db, contains="no-such-model")
    path = tmp_path / "items.csv"
    path.write_text("id,text\na,b\n")
    fails("embed-multi", "items", str(path), "-m", "no-such-model", "-d", db, contains="no-such-model")


def test_error_bad_metadata_json(db, tmp_path):
    fails("embed", "items", "a", "-c", "x", "--metadata", "{bad", "-d", db,
          contains="metadata must be valid JSON", code=2)
    fails("embed", "items", "a", "-c", "x", "--metadata", "[1, 2]", "-d", db,
          contains="metadata must be a JSON object", code=2)
    path = tmp_path / "items.csv"
    path.write_text('id,text,metadata\na,b,"{oops"\n')
    fails("embed-multi", "items", str(path), "-d", db, contains="line 2: metadata is not valid JSON")
    path.write_text('{"id": "a", "text": "b", "metadata": [1]}\n')
    fails("embed-multi", "items", str(path), "-d", db, contains="metadata must be a JSON object")


def test_error_bad_input_data(db, tmp_path):
    path = tmp_path / "items.json"
    path.write_text('[{"id": "a", "text": "b"}, ')
    fails("embed-multi", "items", str(path), "-d", db, contains="invalid JSON")
    path.write_text('{"id": "a"}\nnot json\n')
    fails("embed-multi", "items", str(path), "--format", "nl", "-d", db, contains="line 2: invalid JSON")
    path.write_text('{"a": 1}')
    fails("embed-multi", "items", str(path), "--format", "json", "-d", db, contains="expected a JSON array")
    path.write_bytes(b"id,text\na,\xff\xfe\n")
    fails("embed-multi", "items", str(path), "--encoding", "utf-8", "-d", db, contains="not utf-8 text")
    message = fails("embed-multi", "items", str(path), "-d", db, contains="not UTF-8 text")
    assert "sig" not in message and "--encoding latin-1" in message
    path.write_text('[{"id": null, "text": "b"}]')
    fails("embed-multi", "items", str(path), "-d", db, contains="item 1: the id is empty")


def test_error_unreadable_file(db, tmp_path):
    missing = str(tmp_path / "missing.txt")
    fails("embed", "-i", missing, contains=f"Path '{missing}' does not exist", code=2)
    fails("embed", "-i", str(tmp_path), contains="cannot read")  # a directory
    fails("similar", "items", "-i", missing, "-d", db, contains="does not exist", code=2)
    fails("embed-multi", "items", missing, "-d", db, contains="does not exist", code=2)
    fails("embed-multi", "items", str(tmp_path), "-d", db, contains="is a directory", code=2)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("fine")
    (docs / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    fails("embed-multi", "items", "--files", str(docs), "*.txt", "-d", db, contains="cannot read")


def test_error_bad_directory(db, tmp_path):
    fails("embed-multi", "items", "--files", str(tmp_path / "nope"), "*.txt", "-d", db,
          contains=f"Invalid directory: {tmp_path / 'nope'}", code=2)
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    fails("embed-multi", "items", "--files", str(afile), "*.txt", "-d", db,
          contains=f"Invalid directory: {afile}", code=2)


def test_error_bad_sql_and_attach(db, tmp_path):
    fails("embed-multi", "items", "--sql", "select nonsense from nowhere", "-d", db, contains="--sql")
    fails("embed-multi", "items", "--attach", "x", str(tmp_path / "nope.db"), "--sql", "select 1", "-d", db,
          contains="no database at")


def test_error_embed_multi_usage(db, tmp_path):
    fails("embed-multi", "items", "-d", db, contains="exactly one of", code=2)
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("id,text\na,b\n")
    fails("embed-multi", "items", str(csv_path), "--binary", "-d", db, contains="--binary works with", code=2)
    fails("embed-multi", "items", "--files", str(tmp_path), "*", "--binary", "--encoding", "utf-8",
          "-d", db, contains="exclude each other", code=2)
    fails("embed-multi", "items", "--batch-size", "0", str(csv_path), "-d", db, code=2)
    fails("embed-multi", "-d", db, contains="Missing argument 'COLLECTION'", code=2)


@pytest.mark.parametrize("error", [RuntimeError, TypeError, ValueError])
def test_a_bug_shows_its_traceback(monkeypatch, db, error):
    """Only known user errors are one line: an exception from a bug, even a TypeError or
    ValueError, propagates (click prints its traceback)."""
    def boom(*args, **kwargs):
        raise error("something odd")

    monkeypatch.setattr("embsqlite.cli._print_vector", boom)
    result = CliRunner().invoke(cli, ["embed", "-c", "x"])
    assert isinstance(result.exception, error), result.output
    assert "Error:" not in result.stderr


def test_a_bug_prints_a_traceback_in_a_real_process(tmp_path):
    script = ("import sys, embsqlite.cli as c\n"
              "c._print_vector = lambda *a: int('not a number')\n"
              "c.cli()\n")
    done = subprocess.run([sys.executable, "-c", script, "embed", "-c", "x"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "EMBSQLITE_DEFAULT_MODEL": "hashing"})
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValueError: invalid literal" in done.stderr


# the main job


@pytest.mark.slow
def test_demo_with_the_hashing_model(tmp_path):
    path = tmp_path / "demo.db"
    out = ok("demo", "-d", str(path), "-m", "hashing", "-n", "400",
             "-q", "Filename matching with shell patterns").stdout
    assert "Corpus: 400 docstrings of the Python" in out
    assert "Embedded 400 docstrings (400 new, 0 already stored)" in out
    hits = out.split("Search: 'Filename matching with shell patterns'")[1].splitlines()[1:4]
    assert hits[0].split()[1] == "fnmatch", hits
    again = ok("demo", "-d", str(path), "-n", "400").stdout  # the stored model, all deduplicated
    assert "(0 new, 400 already stored)" in again and "Model: hashing" in again
    assert "nothing new to embed" in again and "items/s" not in again  # no rate for 0 items
    more = ok("demo", "-d", str(path), "-n", "500").stdout
    assert "(0 new" not in more and " new items/s with hashing" in more
    corpus = demo.stdlib_docstrings()
    union = {i[0] for i in demo.select(corpus, 400)} | {i[0] for i in demo.select(corpus, 500)}
    assert Collection("python-stdlib", str(path), create=False).count() == len(union)


def test_demo_help_says_what_it_does():
    shown = ok("demo", "--help").stdout
    assert "main job" not in shown.lower()
    assert "Embed the docstrings of this machine's Python standard library" in shown
    assert "Embed the docstrings" in ok("--help").stdout


@pytest.mark.slow
def test_demo_corpus_selection():
    items = list(demo.stdlib_docstrings())
    assert len(items) > 1000
    assert len({item[0] for item in items}) == len(items)
    assert all(demo.MIN_CHARS <= len(text) <= demo.MAX_CHARS + 4 for _, text, _ in items)
    chosen = demo.select(items, 300)
    assert len(chosen) == 300
    assert {m["kind"] for _, _, m in chosen} == {"module", "class", "function"}
    assert [i for i in items if i in chosen] == chosen  # original order kept


@pytest.mark.slow
def test_demo_main_job_with_minilm(tmp_path):
    """The README's main job, on the default model: finds the right modules by meaning."""
    env = {**os.environ, "EMBSQLITE_DEFAULT_MODEL": ""}
    env.pop("EMBSQLITE_DEFAULT_MODEL")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "embsqlite", "demo", "-d", str(tmp_path / "demo.db")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Model: all-MiniLM-L6-v2" in out and "Embedded 1500 docstrings (1500 new" in out
    top = {}
    for block in out.split("Search: ")[1:]:
        lines = block.splitlines()
        top[lines[0].split("'")[1]] = lines[1].split()[1]
    assert top["measure how long code takes to run"] == "timeit"
    assert top["parse command-line options"] in ("getopt", "optparse", "argparse")
    assert top["find files matching a wildcard pattern"].startswith("fnmatch")
    assert top["store Python objects on disk"] == "pickle"
    assert elapsed < 120, f"the main job took {elapsed:.0f}s"


# real subprocesses


def _module(*args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embsqlite", *args], input=input, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "EMBSQLITE_DEFAULT_MODEL": "hashing",
                                                      **(env or {})})


@pytest.mark.slow
def test_subprocess_round_trip(tmp_path):
    db = str(tmp_path / "e.db")
    done = _module("embed-multi", "items", "-", "--store", "-d", db,
                   input='{"id": "dog", "text": "my happy hound"}\n{"id": "money", "text": "stock market crash"}\n')
    assert done.returncode == 0 and done.stderr == "", done.stderr  # no progress bar off a terminal
    done = _module("similar", "items", "-c", "happy hound", "-n", "1", "-d", db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == "dog"
    assert "embed-multi" in _module("--help").stdout
    assert _module("--version").stdout.strip() == f"embsqlite, version {embsqlite.__version__}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["similar", "nope", "-c", "x"], "Collection does not exist"),
        (["similar", "items", "no-such-id"], "ID not found in collection"),
        (["embed", "-c", "x", "-m", "no-such-model"], "Unknown embedding model"),
        (["embed", "items", "a", "-c", "x", "--metadata", "{bad"], "metadata must be valid JSON"),
        (["embed", "-i", "/nonexistent/file.txt"], "Path '/nonexistent/file.txt' does not exist"),
        (["embed-multi", "items", "--files", "/nonexistent-dir", "*"], "Invalid directory"),
        (["embed-multi"], "Missing argument"),
    ],
)
@pytest.mark.slow
def test_subprocess_errors_are_one_line(tmp_path, args, message):
    db = str(tmp_path / "e.db")
    assert _module("embed", "items", "a", "-c", "alpha", "-d", db).returncode == 0
    done = _module(*args, "-d", db) if args != ["embed-multi"] else _module(*args)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: "), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_console_script_is_installed(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "embsqlite")
    done = subprocess.run([script, "models", "list"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EMBSQLITE_DEFAULT_MODEL": "hashing"})
    assert done.returncode == 0 and "hashing (aliases: hash, hashing-256) [default]" in done.stdout


def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal, embed-multi shows a bar with items/s and, the total being known, an ETA."""
    path = tmp_path / "items.csv"
    path.write_text("id,text\n" + "".join(f"{i},text {i}\n" for i in range(300)))
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "embsqlite", "embed-multi", "items", str(path), "--batch-size", "50",
         "-d", str(tmp_path / "e.db")],
        stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL,
        env={**os.environ, "EMBSQLITE_DEFAULT_MODEL": "hashing"},
    )
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=60) == 0
    os.close(main)
    text = shown.decode("utf-8", "replace")
    assert "Embedding: 100%" in text and "300/300" in text, text
    assert " items/s]" in text and "<00:00" in text, text
