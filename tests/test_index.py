"""The approximate-search index: exact scores from SQL, recall, and never used once stale."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path

import llm
import numpy as np
import pytest
import sqlite_utils
from click.testing import CliRunner

import embsqlite
from embsqlite import changes, index
from embsqlite.cli import cli

DIM = 32
ROWS = 3000


class Unused(embsqlite.EmbeddingModel):
    """The collection's model: a clustered vector for any item (tests search by vector)."""

    model_id = "hashing"

    def embed_batch(self, items):
        for item in items:
            yield clustered(1, len(item))[0].tolist()


class LlmUnused(llm.EmbeddingModel):
    """The same model for llm, so llm writes into the collection."""

    model_id = "hashing"

    def embed_batch(self, items):
        return [clustered(1, len(item))[0].tolist() for item in items]


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors of a Gaussian mixture of 30 centres (the same centres for any seed)."""
    centres = np.random.default_rng(0).standard_normal((30, DIM))
    gen = np.random.default_rng(seed)
    points = centres[gen.integers(0, 30, count)] + 0.5 * gen.standard_normal((count, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def make_db(path: Path, rows: int = ROWS) -> None:
    """An llm-format database with collection 'docs' of `rows` clustered vectors."""
    collection = embsqlite.Collection("docs", path, model=Unused())
    with embsqlite.transaction.transaction(collection.conn):
        collection.conn.executemany(
            "insert into embeddings (collection_id, id, embedding, updated) values (?, ?, ?, 0)",
            [(collection.id, f"doc{i:05d}", vector.tobytes()) for i, vector in enumerate(clustered(rows, 1))],
        )
    collection.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A database and its index, built once; tests copy both."""
    path = tmp_path_factory.mktemp("index") / "docs.db"
    make_db(path)
    collection = embsqlite.Collection("docs", path, model=Unused())
    collection.build_index(probes=8)
    collection.close()
    return path


@pytest.fixture
def db(built, tmp_path) -> Path:
    """A private copy of the indexed database, with its index file beside it."""
    path = tmp_path / "docs.db"
    shutil.copy(built, path)
    shutil.copy(index.path_for(str(built), 1), index.path_for(str(path), 1))
    return path


def open_docs(path: Path) -> embsqlite.Collection:
    return embsqlite.Collection("docs", path, model=Unused(), create=False)


def queries(count: int = 20) -> list[list[float]]:
    return clustered(count, 99).tolist()


@pytest.fixture
def index_calls(monkeypatch) -> list:
    """Records every answer of index.candidates: a list (used) or None (not used)."""
    answers: list = []
    original = index.candidates

    def spy(*args, **kwargs):
        answers.append(original(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(index, "candidates", spy)
    return answers


def sql_score(conn, id_: str, query: list[float]) -> float:
    return conn.execute(
        "select cosine_similarity(embedding, ?) from embeddings where id = ?",
        (struct.pack(f"<{len(query)}f", *query), id_),
    ).fetchone()[0]


def pairs(entries) -> list[tuple[str, float]]:
    return [(entry.id, entry.score) for entry in entries]


def test_every_score_is_sqls_bits_and_the_order_is_score_then_id(db, index_calls):
    docs = open_docs(db)
    assert docs.index_status() == "current"
    for query in queries(10):
        found = docs.similar_by_vector(query, 15)
        assert len(found) == 15
        for entry in found:
            assert entry.score.hex() == sql_score(docs.conn, entry.id, query).hex()
        assert pairs(found) == sorted(pairs(found), key=lambda pair: (-pair[1], pair[0]))
    assert index_calls and all(answer is not None for answer in index_calls)


def test_ties_are_broken_by_id_as_sql_does(tmp_path, index_calls):
    path = tmp_path / "ties.db"
    make_db(path, rows=400)
    docs = open_docs(path)
    vector = clustered(1, 5)[0].tobytes()
    docs.conn.execute("update embeddings set embedding = ? where id in ('doc00007', 'doc00003', 'doc00250')",
                      (vector,))
    docs.build_index()
    query = np.frombuffer(vector, dtype=np.float32).tolist()
    found = docs.similar_by_vector(query, 3)
    assert [entry.id for entry in found] == ["doc00003", "doc00007", "doc00250"]
    assert pairs(found) == pairs(docs.similar_by_vector(query, 3, exact=True))
    assert len(index_calls) == 1 and index_calls[0] is not None


def test_recall_on_a_clustered_set_against_the_exact_scan(db):
    docs = open_docs(db)
    hits = 0
    for query in queries(40):
        approximate = {entry.id for entry in docs.similar_by_vector(query, 10)}
        exact = {entry.id for entry in docs.similar_by_vector(query, 10, exact=True)}
        hits += len(approximate & exact)
    assert hits / 400 >= 0.95


def test_exact_true_never_asks_the_index(db, monkeypatch):
    docs = open_docs(db)
    monkeypatch.setattr(index, "candidates", lambda *a, **k: pytest.fail("the index was asked"))
    query = queries(1)[0]
    assert len(docs.similar_by_vector(query, 5, exact=True)) == 5
    assert len(docs.similar_by_id("doc00001", 5, exact=True)) == 5


def test_similar_by_id_leaves_the_item_out(db, index_calls):
    docs = open_docs(db)
    found = docs.similar_by_id("doc00042", 10)
    assert "doc00042" not in [entry.id for entry in found] and len(found) == 10
    assert index_calls[-1] is not None


def test_a_prefix_search_is_the_exact_scan(db, index_calls):
    docs = open_docs(db)
    query = queries(1)[0]
    assert pairs(docs.similar_by_vector(query, 5, prefix="doc001")) == pairs(
        docs.similar_by_vector(query, 5, prefix="doc001", exact=True)
    )
    assert all(entry.id.startswith("doc001") for entry in docs.similar_by_vector(query, 5, prefix="doc001"))
    assert index_calls == []


@pytest.mark.parametrize("search_filter", [
    {"where": "id >= ? and id < ?", "where_args": ["doc00100", "doc00400"]},
    {"metadata": {"kind": "odd"}},
])
def test_a_filtered_search_is_the_exact_scan_of_the_rows_kept(db, index_calls, search_filter):
    docs = open_docs(db)
    docs.conn.execute("update embeddings set metadata = json_object('kind', 'odd') where rowid % 2")
    docs.build_index(probes=8)  # current again after the update
    index_calls.clear()
    query = queries(1)[0]
    found = docs.similar_by_vector(query, 10, **search_filter)
    kept = "id >= 'doc00100' and id < 'doc00400'" if "where" in search_filter else "rowid % 2"
    expected = docs.conn.execute(
        f"select id, cosine_similarity(embedding, ?) as score from embeddings where {kept}"
        " order by score desc, id limit 10", (struct.pack(f"<{DIM}f", *query),),
    ).fetchall()
    assert [(entry.id, entry.score.hex()) for entry in found] == [(id_, score.hex()) for id_, score in expected]
    assert index_calls == []  # the index was never asked
    assert docs.similar_by_vector(query, 10) and index_calls  # while an unfiltered search asks it


def check_falls_back(path: Path, index_calls: list) -> None:
    """A search of a changed collection is the exact scan, and the index answered None."""
    docs = open_docs(path)
    assert docs.index_status() in ("stale", "none")
    for query in queries(3):
        assert pairs(docs.similar_by_vector(query, 10)) == pairs(docs.similar_by_vector(query, 10, exact=True))
    assert index_calls and all(answer is None for answer in index_calls)
    docs.close()


def test_stale_after_a_write_by_embsqlite(db, index_calls):
    open_docs(db).embed("new", "a new item")
    check_falls_back(db, index_calls)


def test_stale_after_a_write_by_llm(db, index_calls):
    theirs = llm.Collection("docs", sqlite_utils.Database(db), model=LlmUnused())
    theirs.embed("from-llm", "a bird", store=True)
    check_falls_back(db, index_calls)


def test_stale_after_a_write_by_the_sqlite3_shell(db, sqlite3_shell, index_calls):
    subprocess.run([sqlite3_shell, str(db), "delete from embeddings where id = 'doc00001'"], check=True)
    check_falls_back(db, index_calls)


def test_stale_after_a_table_rebuild(db, index_calls):
    sqlite_utils.Database(db)["embeddings"].transform()  # loses the triggers: state() is None
    check_falls_back(db, index_calls)


def test_vacuum_and_other_tables_ddl_keep_the_index(db, index_calls):
    """VACUUM keeps rowids here (had it renumbered them, the first or last indexed row
    would have moved); sqlite-utils' upsert creates and drops a probe table: neither
    changes the collection, so the index stays in use, its scores SQL's."""
    conn = sqlite3.connect(db)
    conn.execute("vacuum")
    conn.close()
    notes = sqlite_utils.Database(db)["notes"]
    notes.upsert({"id": 1, "text": "x"}, pk="id")
    notes.db.conn.close()
    docs = open_docs(db)
    assert docs.index_status() == "current"
    for query in queries(3):
        assert pairs(docs.similar_by_vector(query, 10)) == pairs(docs.similar_by_vector(query, 10, exact=True))
    assert index_calls and all(answer is not None for answer in index_calls)


def test_uncommitted_writes_of_the_searching_connection_are_seen(db, index_calls):
    docs = open_docs(db)
    query = queries(1)[0]
    best = docs.similar_by_vector(query, 1)[0].id
    docs.conn.execute("begin")
    docs.conn.execute("delete from embeddings where id = ?", (best,))
    assert best not in [entry.id for entry in docs.similar_by_vector(query, 10)]
    assert index_calls[-1] is None
    docs.conn.execute("rollback")
    assert docs.similar_by_vector(query, 1)[0].id == best
    assert index_calls[-1] is not None


def test_no_index_searches_exactly(tmp_path, index_calls):
    path = tmp_path / "plain.db"
    make_db(path, rows=200)
    docs = open_docs(path)
    assert docs.index_status() == "none"
    assert len(docs.similar_by_vector(queries(1)[0], 5)) == 5
    assert index_calls == []  # no file: not even asked
    assert not os.path.exists(index.path_for(str(path), docs.id))


@pytest.mark.parametrize("damage", ["truncate", "flip-head", "garbage", "empty", "trailer"])
def test_a_damaged_index_file_is_ignored_with_a_warning(db, damage, index_calls):
    file = Path(index.path_for(str(db), 1))
    data = bytearray(file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip-head":
        data[100] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(os.urandom(5000))
    elif damage == "empty":
        data = bytearray()
    else:
        data[-20] ^= 0xFF  # inside the JSON trailer
    file.write_bytes(bytes(data))
    docs = open_docs(db)
    assert docs.index_status().startswith("invalid: ")
    query = queries(1)[0]
    with pytest.warns(RuntimeWarning, match="index is not used"):
        found = docs.similar_by_vector(query, 10)
    assert pairs(found) == pairs(docs.similar_by_vector(query, 10, exact=True))
    assert docs.build_index()  # and a rebuild replaces it
    assert docs.index_status() == "current"


def test_a_deleted_and_recreated_collection_does_not_use_the_old_index(db, index_calls):
    docs = open_docs(db)
    file = index.path_for(str(db), docs.id)
    shutil.copy(file, str(file) + ".kept")
    docs.delete()
    assert not os.path.exists(file)  # deleting a collection deletes its index
    os.replace(str(file) + ".kept", file)  # as if it had been left behind
    again = embsqlite.Collection("docs", db, model=Unused())
    assert again.id == docs.id
    again.conn.execute(
        "insert into embeddings (collection_id, id, embedding) values (?, 'only', ?)",
        (again.id, clustered(1, 3)[0].tobytes()),
    )
    assert again.index_status() == "stale"
    assert [entry.id for entry in again.similar_by_vector(queries(1)[0], 10)] == ["only"]
    assert index_calls[-1] is None


def test_building_without_faiss_is_a_clear_error(db, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(index.IndexUnavailable, match=r"pip install 'embsqlite\[index\]'"):
        open_docs(db).build_index()


def test_an_index_needs_a_file_and_one_dimension(tmp_path):
    memory = embsqlite.Collection("docs", None, model=Unused())
    memory.conn.execute("insert into embeddings (collection_id, id, embedding) values (?, 'a', x'0000803f')",
                        (memory.id,))
    with pytest.raises(index.IndexBuildError, match="no file"):
        memory.build_index()
    path = tmp_path / "mixed.db"
    make_db(path, rows=50)
    docs = open_docs(path)
    docs.conn.execute("insert into embeddings (collection_id, id, embedding) values (?, 'odd', x'0000803f')",
                      (docs.id,))
    with pytest.raises(index.IndexBuildError, match="one dimension"):
        docs.build_index()
    assert docs.index_status() == "none"


def test_the_index_file_has_the_databases_permissions(tmp_path):
    path = tmp_path / "perm.db"
    make_db(path, rows=100)
    os.chmod(path, 0o644)
    built = open_docs(path).build_index()
    assert os.stat(built).st_mode & 0o777 == 0o644


def test_the_trailer_records_the_state_read_with_the_vectors(db):
    docs = open_docs(db)
    trailer = index.read_trailer(index.path_for(str(db), docs.id))
    first, last = docs.conn.execute("select min(rowid), max(rowid) from embeddings where collection_id = ?",
                                    (docs.id,)).fetchone()
    assert trailer.state == changes.recorded(docs.conn, changes.state(docs.conn, docs.id), first, last)
    assert changes.unchanged(docs.conn, trailer.state, changes.state(docs.conn, docs.id))
    assert (trailer.dimensions, trailer.count, trailer.collection_id) == (DIM, ROWS, docs.id)


def test_cli_index_shows_progress_and_collections_list_notes_a_stale_index(tmp_path):
    path = tmp_path / "cli.db"
    make_db(path, rows=500)
    primary, replica = pty.openpty()  # the bar draws only on a terminal, of some width
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    done = subprocess.run([sys.executable, "-m", "embsqlite", "index", "docs", "-d", str(path)],
                          stdout=subprocess.PIPE, stderr=replica, timeout=120)
    os.close(replica)
    shown = b""
    while True:
        try:
            part = os.read(primary, 65536)
        except OSError:
            break
        if not part:
            break
        shown += part
    os.close(primary)
    assert done.returncode == 0
    assert done.stdout.decode().strip() == index.path_for(str(path), 1)
    assert b"Indexing" in shown and b"500/500" in shown
    listed = CliRunner().invoke(cli, ["collections", "list", "-d", str(path)])
    assert "index: current" in listed.output
    conn = sqlite3.connect(path)
    conn.execute("delete from embeddings where id = 'doc00001'")
    conn.commit()
    conn.close()
    listed = CliRunner().invoke(cli, ["collections", "list", "-d", str(path)])
    assert "index: stale, searches scan every row; rebuild with: embsqlite index docs" in listed.output
    assert json.loads(CliRunner().invoke(cli, ["collections", "list", "--json", "-d", str(path)]).output) == [
        {"name": "docs", "model": "hashing", "num_embeddings": 499}
    ]
    missing = CliRunner().invoke(cli, ["index", "nope", "-d", str(path)])
    assert missing.exit_code == 1 and "Collection does not exist" in missing.output


READ_ONLY_SCRIPT = """
import sys, json
import embsqlite
from embsqlite import index
path = sys.argv[1]
docs = embsqlite.Collection("docs", path, create=False)
query = json.loads(sys.argv[2])
print(docs.index_status())
print([e.id for e in docs.similar_by_vector(query, 5)] == [e.id for e in docs.similar_by_vector(query, 5, exact=True)])
try:
    docs.build_index()
except index.IndexBuildError as error:
    print("refused:", error)
"""


@pytest.mark.slow
@pytest.mark.linux_only(reason="a read-only bind mount in a private mount namespace")
def test_read_only_directory_uses_the_index_and_refuses_a_build(db, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    script = (
        f"mount --bind '{db.parent}' '{target}' && mount -o remount,bind,ro '{target}' && "
        f"exec '{sys.executable}' -c '{READ_ONLY_SCRIPT}' '{target / db.name}' '{json.dumps(queries(1)[0])}'"
    )
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "current" and lines[1] == "True"
    assert lines[2].startswith("refused: cannot write the index in") and "not writable" in lines[2]


def test_an_index_is_used_from_a_new_process_without_loading_it(db):
    code = (
        "import embsqlite, time, resource, json, sys\n"
        "from embsqlite import index\n"
        f"docs = embsqlite.Collection('docs', {str(db)!r}, create=False)\n"
        f"q = {queries(1)[0]!r}\n"
        "found = docs.similar_by_vector(q, 10)\n"
        "print(json.dumps([len(index._opened), [e.id for e in found] == [e.id for e in docs.similar_by_vector(q, 10, exact=True)]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EMBSQLITE_DEFAULT_MODEL": "hashing"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, True]


def test_cli_similar_exact_never_asks_the_index(db, monkeypatch):
    calls = []
    monkeypatch.setattr(index, "candidates", lambda *a, **k: calls.append(1))
    for extra in (["--exact"], []):
        done = CliRunner().invoke(cli, ["similar", "docs", "doc00005", "-n", "3", "-d", str(db), *extra])
        assert done.exit_code == 0, done.output
        assert len(done.output.splitlines()) == 3
    assert calls == [1]


def test_cli_index_remove_deletes_the_file_and_searches_scan(db):
    assert os.path.exists(index.path_for(str(db), 1))
    done = CliRunner().invoke(cli, ["index", "docs", "--remove", "-d", str(db)])
    assert done.exit_code == 0 and "index removed" in done.output
    assert not os.path.exists(index.path_for(str(db), 1))
    assert open_docs(db).index_status() == "none"
    again = CliRunner().invoke(cli, ["index", "docs", "--remove", "-d", str(db)])
    assert again.exit_code == 0 and "no index" in again.output


def test_cli_index_without_faiss_is_one_line(db, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    done = CliRunner().invoke(cli, ["index", "docs", "-d", str(db)])
    assert done.exit_code == 1
    assert done.output.strip() == "Error: building an index needs faiss: pip install 'embsqlite[index]'"


def test_a_database_rebuilt_from_a_dump_never_uses_the_old_index(db, sqlite3_shell, index_calls):
    """A dump replayed at the same path keeps the schema cookie and the tokens but numbers
    the rows afresh: the index's rowids would name other rows, so it reads as stale."""
    docs = open_docs(db)
    docs.conn.execute("delete from embeddings where rowid % 3 = 0")
    docs.conn.commit()
    docs.build_index(probes=8)
    docs.close()
    dump = subprocess.run([sqlite3_shell, str(db), ".dump"], check=True, capture_output=True, text=True).stdout
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    subprocess.run([sqlite3_shell, str(db)], input=dump, check=True, text=True)
    index_calls.clear()
    check_falls_back(db, index_calls)


def test_a_fifo_at_the_index_path_never_blocks_a_search(db):
    """Run in a child with a time limit: a blocking open would hang it."""
    path = index.path_for(str(db), 1)
    os.remove(path)
    os.mkfifo(path)
    script = (
        "import sys, embsqlite\n"
        "from tests.test_index import Unused, queries\n"
        "docs = embsqlite.Collection('docs', sys.argv[1], model=Unused(), create=False)\n"
        "print(len(docs.similar_by_vector(queries(1)[0], 5)), docs.index_status())\n"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script, str(db)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "5" and "invalid" in done.stdout and "regular file" in done.stdout


def test_candidates_that_are_not_rows_of_the_collection_give_the_exact_scan(db, monkeypatch):
    """Damage the digest cannot see (past the first MiB) may turn candidates into other
    collections' rowids: fewer rows than asked means the exact scan answers."""
    docs = open_docs(db)
    monkeypatch.setattr(index, "candidates", lambda *args, **kwargs: [10**9 + i for i in range(200)])
    query = queries(1)[0]
    assert pairs(docs.similar_by_vector(query, 10)) == pairs(docs.similar_by_vector(query, 10, exact=True))
    assert len(docs.similar_by_vector(query, 10)) == 10


def test_rows_added_to_another_collection_keep_the_index_current(db, index_calls):
    """Another collection's inserts (by embsqlite or llm) do not touch this one: the index
    stays in use, and every score is still SQL's."""
    theirs = llm.Collection("notes", sqlite_utils.Database(db), model=LlmUnused())
    theirs.embed("from-llm", "a bird", store=True)
    docs = open_docs(db)
    assert docs.index_status() == "current"
    query = queries(1)[0]
    found = docs.similar_by_vector(query, 10)
    assert [entry.score.hex() for entry in found] == [sql_score(docs.conn, entry.id, query).hex() for entry in found]
    assert index_calls and all(answer is not None for answer in index_calls)
    docs.embed("new", "a new item")  # this collection's write still makes it stale
    assert docs.index_status() == "stale"


def test_a_dump_after_another_collection_rewrote_its_rows_makes_the_index_stale(tmp_path, sqlite3_shell):
    """The index records its own last row: another collection deleting a row below the
    collection's and re-adding its own last row (llm's re-embedding) stays harmless until a
    dump renumbers the rows, and then the index reads as stale (it records no database
    identity, so this is its only defence)."""
    from embsqlite import vectorfile
    from tests.conftest import VectorModel

    vectorfile.configure(enabled=False)  # the index alone
    try:
        path = tmp_path / "a.db"
        other = embsqlite.Collection("d", path, model=VectorModel())
        docs = embsqlite.Collection("c", path, model=VectorModel())
        other.embed("g", "1,0,0,0")  # rowid 1
        docs.embed_multi([(f"a{i}", f"{i + 1},1,0,{i}") for i in range(40)])  # 2..41
        other.embed("x", "0,0,1,1")  # 42
        docs.build_index()
        other.conn.execute("delete from embeddings where collection_id = ? and id = 'g'", (other.id,))
        other.conn.commit()
        other.embed("z", "0,1,1,0")
        other.embed("x", "0,0,2,1")  # a new rowid; the dump puts x back at 42
        assert docs.index_status() == "current"
        docs.close()
        other.close()
        dump = subprocess.run([sqlite3_shell, str(path), ".dump"], check=True, capture_output=True, text=True).stdout
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        subprocess.run([sqlite3_shell, str(path)], input=dump, check=True, text=True)
        again = embsqlite.Collection("c", path, model=VectorModel())
        assert again.conn.execute("select id from embeddings where rowid = 42").fetchone()[0] == "x"
        assert again.index_status() == "stale"
        query = [1.0, 1.0, 0.0, 0.0]
        assert pairs(again.similar_by_vector(query, 3)) == pairs(again.similar_by_vector(query, 3, exact=True))
    finally:
        vectorfile.configure(enabled=True)


def test_a_temporary_embeddings_table_keeps_the_index_out(db, index_calls):
    """A temporary `embeddings` of the searching connection is what SQL ranks; the index
    holds main's rowids, so it must not answer (its rows would be scored from the other
    table)."""
    docs = open_docs(db)
    docs.conn.execute("create temp table embeddings as select * from main.embeddings")
    docs.conn.execute("update temp.embeddings set embedding = (select embedding from temp.embeddings"
                      " where id = 'doc00002') where id = 'doc00001'")
    query = queries(1)[0]
    assert pairs(docs.similar_by_vector(query, 10)) == pairs(docs.similar_by_vector(query, 10, exact=True))
    assert index_calls and all(answer is None for answer in index_calls)
