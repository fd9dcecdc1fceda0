"""The vector file beside the database: the same answers as SQL, never stale, never required."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import llm
import numpy as np
import pytest
import sqlite_utils
from conftest import VectorModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llm.embeddings_migrations import embeddings_migrations

import embsqlite
from embsqlite import cache, changes, vectorfile


@pytest.fixture(autouse=True)
def vector_files_on():
    """Vector files on, the in-memory cache off: every search is the file's or SQL's."""
    vectorfile.configure(enabled=True)
    cache.configure(enabled=False)
    yield
    cache.configure(max_mb=64)


def filled(path, rows=300, dim=8, name="c", seed=0, zeros=0):
    """A collection written by embsqlite (so tracked), ids 'a0000', 'b0001', ..."""
    gen = np.random.default_rng(seed)
    collection = embsqlite.Collection(name, path, model=VectorModel())
    data = gen.standard_normal((rows, dim)).astype(np.float32)
    data[:zeros] = 0.0
    collection.embed_multi_with_metadata(
        ((f"{'ab'[i % 2]}{i:04d}", ",".join(map(str, row)), {"n": i}) for i, row in enumerate(data)),
        store=True,
    )
    return collection, data


def sql_answer(collection, query, number=10, prefix=None, skip_id=None):
    """[(id, score bits, content, metadata)] from the SQL statement alone."""
    vectorfile.configure(enabled=False)
    try:
        entries = collection.similar_by_vector(query, number, skip_id=skip_id, prefix=prefix)
    finally:
        vectorfile.configure(enabled=True)
    return [(e.id, e.score.hex(), e.content, e.metadata) for e in entries]


def answer(collection, query, number=10, prefix=None, skip_id=None):
    entries = collection.similar_by_vector(query, number, skip_id=skip_id, prefix=prefix)
    return [(e.id, e.score.hex(), e.content, e.metadata) for e in entries]


def file_of(collection):
    return Path(collection._vectors.path)


def replay_dump(path, *open_collections):
    """Re-create the database at `path` from its `.dump` (the sqlite3 shell), as a user
    restoring a backup would: the schema cookie and the tokens come back, rowids are
    numbered afresh. The collections given are closed first."""
    dump = subprocess.run(["sqlite3", str(path), ".dump"], check=True, capture_output=True, text=True).stdout
    for collection in open_collections:
        collection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    subprocess.run(["sqlite3", str(path)], input=dump, check=True, text=True)


def test_the_first_search_builds_the_file_and_answers_as_sql(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[3].tolist()
    assert not file_of(collection).exists()
    first = answer(collection, query)
    assert collection._vectors.builds == 1 and file_of(collection).exists()
    assert first == sql_answer(collection, query)
    # mapped, not loaded: nothing counts in the cache's budget
    assert vectorfile.mapped_bytes() >= os.path.getsize(file_of(collection)) and cache.loaded_bytes() == 0
    for kwargs in ({"prefix": "a"}, {"prefix": "b00"}, {"skip_id": "b0003"}, {"number": 1000},
                   {"number": 1}, {"prefix": "zz"}, {"prefix": "a", "skip_id": "a0002", "number": 3}):
        assert answer(collection, query, **kwargs) == sql_answer(collection, query, **kwargs), kwargs
    by_id = collection.similar_by_id("a0010")
    assert [(e.id, e.score.hex()) for e in by_id] == [
        (i, s) for i, s, _, _ in sql_answer(collection, data[10].tolist(), skip_id="a0010")]
    assert collection._vectors.builds == 1


def test_another_process_uses_the_file_without_reading_the_rows(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[7].tolist()
    want = answer(collection, query)
    script = (
        "import json, sys, embsqlite\n"
        "from conftest import VectorModel\n"
        "c = embsqlite.Collection('c', sys.argv[1], model=VectorModel())\n"
        "reads = []\n"
        "c.conn.set_trace_callback(lambda s: reads.append(s) if 'not indexed' in s else None)\n"
        "got = [(e.id, e.score.hex(), e.content, e.metadata) for e in c.similar_by_vector(json.loads(sys.argv[2]))]\n"
        "print(json.dumps([got, c._vectors.builds, len(reads)]))\n"
    )
    import json

    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db"), json.dumps(query)],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    got, builds, reads = json.loads(out)
    assert [tuple(row) for row in got] == want and builds == 0 and reads == 0


def test_a_search_from_the_file_runs_no_full_read_and_writes_nothing(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    answer(collection, data[0].tolist())
    trace: list[str] = []
    changed = collection.conn.total_changes
    collection.conn.set_trace_callback(trace.append)
    answer(collection, data[0].tolist(), prefix="a", skip_id="a0000")
    collection.conn.set_trace_callback(None)
    assert not [s for s in trace if "cosine_similarity" in s or "not indexed" in s], trace
    assert not [s for s in trace if s.split()[0].lower() in ("insert", "update", "delete", "create")]
    assert collection.conn.total_changes == changed


@pytest.mark.parametrize("zeros", [0, 40, 300])
def test_ties_at_the_kth_score_are_ordered_by_id(tmp_path, zeros, monkeypatch):
    """Zero vectors score 0.0 and tie massively; duplicates tie anywhere. Rows are kept in
    rowid order, which is not id order here (ids inserted in reverse)."""
    collection = embsqlite.Collection("t", tmp_path / "t.db", model=VectorModel())
    rows = [(f"id{n:03d}", "1,0,0" if n % 3 == 0 else "0,0,0" if n < zeros else "0,1,0")
            for n in range(300)]
    collection.embed_multi(reversed(rows))
    for query in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]):
        for number in (1, 5, 99, 100, 101, 150, 299, 400):
            assert answer(collection, query, number) == sql_answer(collection, query, number), (query, number)
    assert collection._vectors.builds == 1
    monkeypatch.setattr(vectorfile, "TIE_LIMIT", 10)  # more ties than that: SQL answers
    assert answer(collection, [0.0, 0.0, 1.0], 5) == sql_answer(collection, [0.0, 0.0, 1.0], 5)


def test_null_embeddings_are_left_out(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=50)
    collection.conn.execute("update embeddings set embedding = null where id in ('a0000', 'b0049')")
    collection.conn.commit()
    got = answer(collection, data[0].tolist(), 100)
    assert got == sql_answer(collection, data[0].tolist(), 100) and len(got) == 48
    assert collection._vectors.builds == 1


def test_a_subset_of_rowids_is_scanned_alone(tmp_path):
    """The narrow interface for filtered searches: a sorted list of the collection's rowids."""
    collection, data = filled(tmp_path / "a.db", rows=200)
    conn = collection.conn
    query = data[5].tolist()
    answer(collection, query)
    rowids = [r[0] for r in conn.execute(
        "select rowid from embeddings where json_extract(metadata, '$.n') % 7 = 0 order by rowid")]
    found = collection._vectors.search(embsqlite.encode(query), 6, None, None, "a0014",
                                       cache.change_token(conn), rowids=rowids)
    want = conn.execute(
        "select id, cosine_similarity(embedding, ?) as s from embeddings where"
        " json_extract(metadata, '$.n') % 7 = 0 and id != 'a0014' order by s desc, id limit 6",
        (embsqlite.encode(query),)).fetchall()
    assert [(row.id, row.score) for row in found] == want
    with pytest.raises(ValueError, match="ascend"):
        collection._vectors.search(embsqlite.encode(query), 6, None, None, None,
                                   cache.change_token(conn), rowids=rowids[::-1])


def test_an_untracked_database_is_searched_in_sql_without_a_file(tmp_path):
    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmVectors())
    theirs.embed_multi([(f"i{n}", f"{n},1,{n % 3}") for n in range(30)])
    ours = embsqlite.Collection("docs", path)
    for _ in range(3):
        assert answer(ours, [1.0, 2.0, 0.0]) == sql_answer(ours, [1.0, 2.0, 0.0])
    assert not changes.tracked(ours.conn) and ours._vectors.builds == 0
    assert not any(".vectors" in name for name in os.listdir(tmp_path))


def test_damaged_or_foreign_files_are_never_used(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    other, _ = filled(tmp_path / "b.db", seed=1)
    query = data[2].tolist()
    want = sql_answer(collection, query)
    answer(other, query)
    shutil.copy(file_of(other), file_of(collection))  # another database's file
    assert answer(collection, query) == want and collection._vectors.builds == 1
    with open(file_of(collection), "r+b") as f:
        f.truncate(os.path.getsize(file_of(collection)) - 8)
    assert answer(collection, query) == want and collection._vectors.builds == 2
    with open(file_of(collection), "r+b") as f:
        f.write(b"x")
    assert answer(collection, query) == want and collection._vectors.builds == 3
    file_of(collection).unlink()
    assert answer(collection, query) == want and collection._vectors.builds == 4
    collection.delete()
    assert not file_of(collection).exists()


def test_a_temp_table_shadowing_embeddings_is_searched_in_sql(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[1].tolist()
    answer(collection, query)
    collection.conn.execute("create temp table embeddings as select * from main.embeddings where id like 'b%'")
    got = answer(collection, query)
    assert got == sql_answer(collection, query) and all(row[0].startswith("b") for row in got)


@pytest.mark.parametrize("writer", ["own connection", "other process"])
def test_a_blob_write_to_a_returned_row_is_caught(tmp_path, writer):
    """Incremental blob I/O fires no trigger; every returned row's bytes are compared
    with the file's, so a row changed that way is never returned with the file's score:
    SQL answers, the file is dropped and built again by the next search."""
    collection, data = filled(tmp_path / "a.db")
    conn = collection.conn
    query = data[4].tolist()
    assert answer(collection, query)[0][0] == "a0004"
    flipped = embsqlite.encode([-v for v in data[4]])
    if writer == "own connection":
        rowid = conn.execute("select rowid from embeddings where id = 'a0004'").fetchone()[0]
        with conn.blobopen("embeddings", "embedding", rowid) as blob:
            blob.write(flipped)
        conn.commit()
    else:
        script = ("import sqlite3, sys\n"
                  "c = sqlite3.connect(sys.argv[1])\n"
                  "r = c.execute(\"select rowid from embeddings where id = 'a0004'\").fetchone()[0]\n"
                  "b = c.blobopen('embeddings', 'embedding', r)\n"
                  "b.write(bytes.fromhex(sys.argv[2])); b.close(); c.commit()\n")
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db"), flipped.hex()], check=True)
    got = answer(collection, query)
    assert got == sql_answer(collection, query) and got[0][0] != "a0004"
    assert not file_of(collection).exists() and collection._vectors.builds == 1
    assert answer(collection, query) == got and collection._vectors.builds == 2


def test_a_crashed_writer_leaves_the_file_valid_and_exact(tmp_path):
    collection, data = filled(tmp_path / "a.db")
    query = data[9].tolist()
    want = answer(collection, query)
    script = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('delete from embeddings')\n"
        "os._exit(1)\n"  # dies inside the transaction
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db")])
    assert answer(collection, query) == want == sql_answer(collection, query)
    assert collection._vectors.builds == 1


@pytest.mark.linux_only(reason="a read-only bind mount in a private mount namespace")
def test_read_only_media_search_exactly_without_a_file(tmp_path):
    source = tmp_path / "media"
    source.mkdir()
    collection, data = filled(source / "a.db", rows=60)
    query = data[3].tolist()
    want = [(i, s) for i, s, _, _ in sql_answer(collection, query)]
    collection.close()
    script = (
        "import json, logging, sys, embsqlite\n"
        "from embsqlite import vectorfile\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "c = embsqlite.Collection('c', sys.argv[1])\n"
        "runs = [[(e.id, e.score.hex()) for e in c.similar_by_vector(json.loads(sys.argv[2]))]"
        " for _ in range(3)]\n"
        "print(json.dumps([runs, c._vectors.builds]))\n"
    )
    import json

    shell = (f"mount --bind '{source}' '{source}' && mount -o remount,bind,ro '{source}' && "
             f"exec '{sys.executable}' -c \"$0\" '{source / 'a.db'}' '{json.dumps(query)}'")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell, script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs, builds = json.loads(result.stdout)
    assert all([tuple(r) for r in run] == want for run in runs) and builds == 0
    assert result.stderr.count("no vector files in") == 1  # one debug-level note
    assert not any(".vectors" in name for name in os.listdir(source))


class LlmVectors(llm.EmbeddingModel):
    """llm's side of VectorModel: 'x,y,z' text as that vector."""

    model_id = "test-literal-vectors"

    def embed_batch(self, items):
        for item in items:
            yield [float(v) for v in item.split(",")]


@pytest.mark.parametrize("stop_before", ["m002_foreign_key", "m004_store_content_hash", "m005_add_content_blob"])
def test_llm_upgrading_an_older_database_with_our_additions(tmp_path, stop_before):
    """An older llm file with our table, triggers and vector file: llm's own migrations
    rebuild the table (the triggers go), leave llm's tables exactly as they make them from
    the same file without our additions, and searches stay exact until our next write
    tracks the database again."""
    from test_llm_compat import schema_of

    original = tmp_path / "old.db"
    db = sqlite_utils.Database(original)
    embeddings_migrations.apply(db, stop_before=stop_before)
    db["collections"].insert({"name": "c", "model": "test-literal-vectors"})
    columns = set(db["embeddings"].columns_dict)
    for n in range(40):
        row = {"collection_id": 1, "id": f"i{n:02d}", "embedding": embsqlite.encode([n, 1, n % 5])}
        if "content_hash" in columns:
            row["content_hash"] = bytes([n]) * 16
        db["embeddings"].insert(row)
    db.close()
    plain = tmp_path / "plain.db"
    shutil.copy(original, plain)
    conn = sqlite3.connect(original, isolation_level=None)
    assert changes.install(conn)
    conn.close()
    ours = embsqlite.Collection("c", original)  # opening upgrades as llm would; tracking stays
    query = [3.0, 1.0, 2.0]
    answer(ours, query)
    ours.close()
    for path in (original, plain):
        llm.Collection("c", sqlite_utils.Database(path), model=LlmVectors()).embed("new", "9,9,9")
    assert schema_of(original) == schema_of(plain)
    ours = embsqlite.Collection("c", original, model=VectorModel())
    assert answer(ours, query) == sql_answer(ours, query) and "new" in [r[0] for r in answer(ours, query, 50)]
    ours.embed("ours", "3,1,2")
    assert changes.tracked(ours.conn)
    got = answer(ours, query)
    assert got == sql_answer(ours, query) and got[0][0] == "ours"
    (ours_file,) = [name for name in os.listdir(tmp_path) if name.endswith(".vectors")]
    os.unlink(tmp_path / ours_file)  # deleting it is harmless
    assert answer(ours, query) == got


# Random writes of every kind, from this connection and from other processes,
# interleaved with searches: every answer equals SQL's, ids and score bits.

DIM = 4
WRITES = ["insert", "update", "delete", "null", "our batch", "other connection", "sqlite3 shell",
          "llm subprocess", "blob write", "rollback", "vacuum", "drop triggers", "reinstall",
          "rename swap", "crash", "other collection"]

LLM_SCRIPT = r"""
import sys, llm, sqlite_utils
class LlmVectors(llm.EmbeddingModel):
    model_id = "test-literal-vectors"
    def embed_batch(self, items):
        for item in items:
            yield [float(v) for v in item.split(",")]
llm.Collection("c", sqlite_utils.Database(sys.argv[1]), model=LlmVectors()).embed(sys.argv[2], sys.argv[3])
"""


def random_write(collection, path, kind, rng, serial):
    conn = collection.conn
    ids = [row[0] for row in conn.execute("select id from embeddings order by id")]
    some = ids[int(rng.integers(len(ids)))] if ids else "none"
    vector = rng.standard_normal(DIM).astype(np.float32)
    if rng.integers(4) == 0:
        vector[:] = 0.0  # zero vectors tie
    blob = embsqlite.encode(vector)
    text = ",".join(map(str, vector))
    if kind == "insert":
        conn.execute("insert into embeddings (collection_id, id, embedding) values (?, ?, ?)",
                     (collection.id, f"n{serial:03d}", blob))
    elif kind == "update":
        conn.execute("update embeddings set embedding = ? where id = ?", (blob, some))
    elif kind == "delete":
        conn.execute("delete from embeddings where id = ?", (some,))
    elif kind == "null":
        conn.execute("update embeddings set embedding = null where id = ?", (some,))
    elif kind == "our batch":
        collection.embed_multi([(f"o{serial:03d}", text), (some, text)])
    elif kind == "other connection":
        other = sqlite3.connect(path)
        other.execute("update embeddings set embedding = ? where id = ?", (blob, some))
        other.execute("delete from embeddings where id > ? and id < ?", (some, some + "1"))
        other.commit()
        other.close()
    elif kind == "sqlite3 shell":
        subprocess.run(["sqlite3", str(path),
                        f"update embeddings set embedding = x'{blob.hex()}' where id = '{some}';"
                        f" insert into embeddings (collection_id, id, embedding)"
                        f" values ({collection.id}, 's{serial:03d}', x'{blob.hex()}')"],
                       check=True, timeout=60)
    elif kind == "llm subprocess":
        subprocess.run([sys.executable, "-c", LLM_SCRIPT, str(path), f"l{serial:03d}", text],
                       check=True, timeout=120)
    elif kind == "other collection":  # rows of another collection, added and deleted
        other = embsqlite.Collection("z", path, model=VectorModel())
        other.embed_multi([(f"z{serial:03d}{i}", text) for i in range(int(rng.integers(1, 4)))])
        zs = [row[0] for row in conn.execute(
            "select id from embeddings where collection_id = ?", (other.id,))]
        if rng.integers(2):
            other.conn.execute("delete from embeddings where collection_id = ? and id = ?",
                               (other.id, zs[int(rng.integers(len(zs)))]))
            other.conn.commit()
        other.close()
    elif kind == "blob write":
        row = conn.execute("select rowid from embeddings where id = ? and embedding is not null",
                           (some,)).fetchone()
        if row:
            with conn.blobopen("embeddings", "embedding", row[0]) as handle:
                handle.write(blob)
            conn.commit()
            collection._vectors.remove()  # no trigger saw it: as README says, delete the file
    elif kind == "rollback":
        conn.commit()
        conn.execute("begin")
        conn.execute("delete from embeddings")
        conn.rollback()
    elif kind == "vacuum":
        conn.commit()
        conn.execute("delete from embeddings where id = ?", (some,))
        conn.commit()
        conn.execute("vacuum")
    elif kind == "drop triggers":
        conn.commit()
        changes.forget(conn)
        conn.execute("update embeddings set embedding = ? where id = ?", (blob, some))
    elif kind == "reinstall":
        conn.commit()
        changes.install(conn)
    elif kind == "rename swap":
        conn.commit()
        sqlite_utils.Database(conn)["embeddings"].transform()  # as llm's migrations do
        conn.execute("update embeddings set embedding = ? where id = ?", (blob, some))
    elif kind == "crash":
        subprocess.run([sys.executable, "-c", "import os, sqlite3, sys\n"
                        "c = sqlite3.connect(sys.argv[1]); c.execute('delete from embeddings')\n"
                        "os._exit(1)", str(path)], timeout=60)
    conn.commit()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(WRITES + ["search"] * 5), st.integers(0, 2**32 - 1)),
        min_size=4, max_size=14,
    )
)
def test_random_writes_of_every_kind_never_leave_a_stale_answer(steps):
    import tempfile

    vectorfile.configure(enabled=True)
    cache.configure(max_mb=64)  # both copies on, as by default
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.db"
        collection, _ = filled(path, rows=30, dim=DIM, zeros=4)
        served = 0
        for serial, (kind, seed) in enumerate([("search", 0)] + steps):
            rng = np.random.default_rng(seed)
            if kind != "search":
                random_write(collection, path, kind, rng, serial)
            query = rng.standard_normal(DIM).astype(np.float32).tolist()
            number = int(rng.integers(1, 40))
            prefix = ["", "a", "b0", "n"][int(rng.integers(4))] or None
            for _ in range(2):
                builds = collection._vectors.builds
                got = answer(collection, query, number, prefix=prefix)
                cache.configure(enabled=False)
                want = sql_answer(collection, query, number, prefix=prefix)
                cache.configure(max_mb=64)
                assert got == want, kind
                served += collection._vectors.builds == builds and changes.tracked(collection.conn)
        collection.close()
    cache.configure(enabled=False)
    assert served > 0


def test_a_few_random_writes_from_every_source(tmp_path):
    """The property above, on one fixed sequence, in the fast tier."""
    path = tmp_path / "p.db"
    collection, _ = filled(path, rows=30, dim=DIM, zeros=4)
    for serial, kind in enumerate(WRITES):
        rng = np.random.default_rng(serial)
        random_write(collection, path, kind, rng, serial)
        query = rng.standard_normal(DIM).astype(np.float32).tolist()
        for prefix in (None, "a"):
            assert answer(collection, query, 12, prefix=prefix) == sql_answer(
                collection, query, 12, prefix=prefix), kind


def test_the_vector_file_command_tracks_an_llm_database_and_writes_the_file(tmp_path):
    from click.testing import CliRunner

    from embsqlite.cli import cli

    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmVectors())
    theirs.embed_multi([(f"i{n:02d}", f"{n},1,{n % 3}") for n in range(30)])
    result = CliRunner().invoke(cli, ["vector-file", "docs", "-d", str(path)])
    assert result.exit_code == 0, result.output
    written = Path(result.output.strip())
    assert written.exists() and written.name == "llm.db-embsqlite-1.vectors"
    ours = embsqlite.Collection("docs", path)
    assert answer(ours, [1.0, 2.0, 0.0]) == sql_answer(ours, [1.0, 2.0, 0.0])
    assert ours._vectors.builds == 0  # the command's file
    theirs.embed("i05", "-5,-1,0")  # llm's write, seen by the triggers
    for builds in (0, 1):  # answered by SQL, then built at the second search of the state
        got = answer(ours, [5.0, 1.0, 2.0], 40)
        assert got == sql_answer(ours, [5.0, 1.0, 2.0], 40) and ours._vectors.builds == builds
    empty = CliRunner().invoke(cli, ["vector-file", "docs", "-d", ":memory:"])
    assert empty.exit_code == 1
    missing = CliRunner().invoke(cli, ["vector-file", "nope", "-d", str(path)])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_a_file_written_before_a_reboot_is_built_again(tmp_path, monkeypatch):
    """Files are not fsynced: they record the kernel's boot, and one from another boot
    (perhaps a crash that lost some of its pages) is never trusted."""
    collection, data = filled(tmp_path / "a.db")
    query = data[6].tolist()
    answer(collection, query)
    assert vectorfile.boot_id() != bytes(16)  # Linux: /proc/sys/kernel/random/boot_id
    monkeypatch.setattr(vectorfile, "_boot", os.urandom(16))  # as after a reboot,
    monkeypatch.setattr(vectorfile, "_mapped", {})  # in a new process
    assert answer(collection, query) == sql_answer(collection, query)
    assert collection._vectors.builds == 2
    monkeypatch.setattr(vectorfile, "_boot", bytes(16))  # no boot id: fsynced, durable
    file_of(collection).unlink()
    assert answer(collection, query) == sql_answer(collection, query)
    monkeypatch.setattr(vectorfile, "_boot", os.urandom(16))
    monkeypatch.setattr(vectorfile, "_mapped", {})
    assert answer(collection, query) == sql_answer(collection, query)
    assert collection._vectors.builds == 3  # the durable file is trusted in any boot


def test_a_query_of_another_dimension_leaves_the_file_to_later_searches(tmp_path):
    """Callers without a Collection (Datasette) do not check the query's dimension first:
    such a query is answered by SQL (its error), and the file still serves the next one."""
    collection, data = filled(tmp_path / "a.db")
    conn = collection.conn
    assert vectorfile.search_collection(conn, "c", embsqlite.encode([1.0, 2.0]), 5, "", "UTF-8") is None
    found = vectorfile.search_collection(conn, "c", embsqlite.encode(data[0]), 5, "b", "UTF-8")
    assert found is not None and [(r.id, r.score.hex()) for r in found] == [
        (i, s) for i, s, _, _ in sql_answer(collection, data[0].tolist(), 5, prefix="b")]
    assert vectorfile.search_collection(conn, "nope", embsqlite.encode(data[0]), 5, "", "UTF-8") is None


@pytest.mark.parametrize("kind", ["apsw", "pysqlite3"])
def test_other_connection_kinds(tmp_path, kind):
    """apsw (built through the cursor) and pysqlite3 both search from the file."""
    if kind == "apsw":
        import apsw

        conn = apsw.Connection(str(tmp_path / "k.db"))
    else:
        import pysqlite3.dbapi2

        conn = pysqlite3.dbapi2.connect(str(tmp_path / "k.db"))
    collection = embsqlite.Collection("k", conn, model=VectorModel())
    data = np.random.default_rng(4).standard_normal((50, 4)).astype(np.float32)
    collection.embed_multi((f"{i:02d}", ",".join(map(str, row))) for i, row in enumerate(data))
    for number in (3, 60):
        assert answer(collection, data[7].tolist(), number) == sql_answer(collection, data[7].tolist(), number)
    assert collection._vectors.builds == 1


def test_writes_and_searches_in_turn_do_not_rebuild_for_every_search(tmp_path):
    """A process that writes and searches in turn gets SQL's answer after each write (as
    without a file); the file is built again when two searches find the same state, and
    at once by a process that has not searched from it yet."""
    collection, data = filled(tmp_path / "a.db", rows=100)
    path = tmp_path / "a.db"
    answer(collection, data[0].tolist())
    assert collection._vectors.builds == 1
    for n in range(4):
        collection.embed(f"new{n}", ",".join(map(str, data[n])))
        assert answer(collection, data[n].tolist()) == sql_answer(collection, data[n].tolist())
    assert collection._vectors.builds == 1
    fresh = embsqlite.Collection("c", path, model=VectorModel())
    assert answer(fresh, data[1].tolist()) == sql_answer(fresh, data[1].tolist())
    assert fresh._vectors.builds == 1
    # the second search at this state: the other's file is current and is used
    assert answer(collection, data[2].tolist()) == sql_answer(collection, data[2].tolist())
    assert collection._vectors.builds == 1


def test_a_database_rebuilt_from_a_dump_never_maps_scores_to_wrong_ids(tmp_path):
    """`.dump` keeps the schema cookie and the tokens but renumbers rowids (gaps close):
    the re-created file is another file (device, inode), and every returned row's bytes
    are compared with the file's."""
    path = tmp_path / "a.db"
    collection, data = filled(path, rows=20, dim=4)
    collection.conn.execute("delete from embeddings where id in ('b0007', 'a0008', 'b0009')")
    collection.conn.commit()
    query = data[12].tolist()
    before = answer(collection, query, 5)
    assert collection._vectors.builds == 1 and file_of(collection).exists()
    dump = subprocess.run(["sqlite3", str(path), ".dump"], check=True, capture_output=True, text=True).stdout
    # the old collection stays open (its inode is not reused); its files go
    for name in ("a.db", "a.db-wal", "a.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    subprocess.run(["sqlite3", str(path)], input=dump, check=True, text=True)
    rebuilt = embsqlite.Collection("c", path, model=VectorModel())
    got = answer(rebuilt, query, 5)
    assert got == sql_answer(rebuilt, query, 5) == before
    assert rebuilt._vectors.builds == 1  # the old file was not used
    for prefix in ("a", "b001"):
        assert answer(rebuilt, query, 5, prefix=prefix) == sql_answer(rebuilt, query, 5, prefix=prefix)


def test_rows_with_a_null_id_are_left_out_as_sql_leaves_them_out(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=30)
    collection.conn.execute("update embeddings set id = null where id = 'b0003'")
    collection.conn.commit()
    query = data[3].tolist()
    got = answer(collection, query, 40)
    assert got == sql_answer(collection, query, 40) and len(got) == 29
    assert collection._vectors.builds == 1
    # the row without an id is the best match: it takes no place of the top k either way
    for number in (1, 3):
        got = answer(collection, query, number, skip_id="a0000")
        assert got == sql_answer(collection, query, number, skip_id="a0000") and len(got) == number
    for where in ("1", "id != 'zzz'"):
        found = collection.similar_by_vector(query, 2, where=where)
        vectorfile.configure(enabled=False)
        assert [(e.id, e.score) for e in collection.similar_by_vector(query, 2, where=where)] == [
            (e.id, e.score) for e in found] and len(found) == 2
        vectorfile.configure(enabled=True)
    # a NaN in the row without an id: no path ranks it, so none raises
    collection.conn.execute("update embeddings set embedding = ? where id is null",
                            (struct.pack("<2f", float("nan"), 1.0) * 4,))
    collection.conn.commit()
    assert answer(collection, query, 2) == sql_answer(collection, query, 2)


def test_deleted_tokens_read_as_untracked(tmp_path):
    """Someone empties `embsqlite_changes`: no token is no state, so no file is trusted,
    even when the rows are emptied again after a write."""
    path = tmp_path / "a.db"
    collection, data = filled(path, rows=40)
    query = data[5].tolist()
    answer(collection, query)
    other = sqlite3.connect(path)
    other.execute("delete from embsqlite_changes")
    other.commit()
    assert changes.state(collection.conn, collection.id) is None
    assert answer(collection, query) == sql_answer(collection, query)
    other.execute("update embeddings set embedding = ? where id = 'b0011'", (embsqlite.encode(data[5]),))
    other.commit()
    assert changes.state(collection.conn, collection.id) is not None  # the trigger's new token
    answer(collection, query)
    answer(collection, query)  # the file at this state
    other.execute("update embeddings set embedding = ? where id = 'a0020'", (embsqlite.encode(data[5]),))
    other.execute("delete from embsqlite_changes")
    other.commit()
    got = answer(collection, query)
    assert got == sql_answer(collection, query) and {"a0020", "b0011"} <= {row[0] for row in got[:3]}
    other.close()


def test_a_fifo_or_a_directory_at_the_files_path_is_left_alone(tmp_path):
    import json

    collection, data = filled(tmp_path / "a.db", rows=40)
    query = data[1].tolist()
    want = sql_answer(collection, query)
    os.mkfifo(file_of(collection))
    script = (
        "import json, sys, embsqlite\n"
        "from conftest import VectorModel\n"
        "c = embsqlite.Collection('c', sys.argv[1], model=VectorModel())\n"
        "got = [(e.id, e.score.hex(), e.content, e.metadata) for e in c.similar_by_vector(json.loads(sys.argv[2]))]\n"
        "print(json.dumps(got))\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db"), json.dumps(query)],
                             check=True, capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).parent).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("a search hung on a FIFO at the vector file's path")
    assert [tuple(row) for row in json.loads(out)] == want
    assert stat.S_ISFIFO(os.lstat(file_of(collection)).st_mode)
    file_of(collection).unlink()
    file_of(collection).mkdir()
    for _ in range(2):
        assert answer(collection, query) == want
    assert file_of(collection).is_dir() and collection._vectors.builds == 0
    file_of(collection).rmdir()
    file_of(collection).symlink_to(tmp_path / "elsewhere")
    assert answer(collection, query) == want
    assert file_of(collection).is_symlink() and not (tmp_path / "elsewhere").exists()


def test_a_stale_or_foreign_file_is_never_mapped(tmp_path, monkeypatch):
    """The header is read and compared before mapping: a crafted header claiming 2**24
    rows (a sparse file of that size) costs nothing."""
    import mmap

    collection, data = filled(tmp_path / "a.db", rows=20)
    query = data[2].tolist()
    answer(collection, query)
    header = bytearray(file_of(collection).read_bytes()[:vectorfile.HEADER_BYTES])
    rows, dims = 2**24, 8
    fields = list(vectorfile._HEADER.unpack_from(header))
    assert fields[5] != 0 and fields[11:13] == [dims, 20]  # token; dimensions, rows
    fields[5] ^= 1  # another state
    fields[12] = rows
    vectorfile._HEADER.pack_into(header, 0, *fields)
    file_of(collection).unlink()
    with open(file_of(collection), "wb") as f:
        f.write(header)
        f.truncate(vectorfile._offsets(rows, dims).size)  # the size the header implies, sparse
    mapped_sizes: list[int] = []
    real = mmap.mmap

    def spy(fd, size, *args, **kwargs):
        mapped_sizes.append(size)
        return real(fd, size, *args, **kwargs)

    monkeypatch.setattr(mmap, "mmap", spy)
    assert answer(collection, query) == sql_answer(collection, query)
    # only the rebuilt file (under 1 MiB) is mapped: to write its sketch, then to search
    assert mapped_sizes and max(mapped_sizes) == os.path.getsize(file_of(collection)) < 2**20


def test_a_commit_to_another_table_does_not_rebuild_the_file(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=50)
    collection.conn.execute("create table notes (x)")
    collection.conn.commit()
    query = data[9].tolist()
    answer(collection, query)
    for n in range(3):
        collection.conn.execute("insert into notes values (?)", (n,))
        collection.conn.commit()
        assert answer(collection, query) == sql_answer(collection, query)
    assert collection._vectors.builds == 1


@pytest.mark.linux_only(reason="a small tmpfs in a private mount namespace")
@pytest.mark.parametrize("kind", ["sqlite3", "apsw"])
def test_no_file_is_built_without_room_and_the_failure_is_remembered(tmp_path, kind):
    """A build needs twice the file's size free plus a margin; a directory without it gets
    no file, and no search in the process tries again at the same state."""
    import json

    script = (
        "import json, os, sys\n"
        "sys.path.insert(0, sys.argv[3])\n"
        "import embsqlite\n"
        "from embsqlite import cache, vectorfile\n"
        "from conftest import VectorModel\n"
        "cache.configure(enabled=False)\n"
        "tries = []\n"
        "real = vectorfile.VectorFile._build\n"
        "vectorfile.VectorFile._build = lambda self, *a, **k: tries.append(1) or real(self, *a, **k)\n"
        "path = os.path.join(sys.argv[1], 'a.db')\n"
        "def conn():\n"
        "    if sys.argv[2] == 'apsw':\n"
        "        import apsw\n"
        "        return apsw.Connection(path)\n"
        "    return path\n"
        "c = embsqlite.Collection('c', conn(), model=VectorModel())\n"
        "c.embed_multi((f'i{n}', f'{n},1,2') for n in range(200))\n"
        "runs = []\n"
        "for _ in range(3):\n"
        "    fresh = embsqlite.Collection('c', conn(), model=VectorModel())\n"
        "    runs.append([e.id for e in fresh.similar_by_vector([5.0, 1.0, 2.0], 3)])\n"
        "vectorfile.configure(enabled=False)\n"
        "want = [e.id for e in fresh.similar_by_vector([5.0, 1.0, 2.0], 3)]\n"
        "print(json.dumps([runs, want, len(tries), sorted(os.listdir(sys.argv[1]))]))\n"
    )
    mount = tmp_path / "small"
    mount.mkdir()
    shell = (f"mount -t tmpfs -o size=16m tmpfs '{mount}' && "
             f"exec '{sys.executable}' -c \"$0\" '{mount}' {kind} '{Path(__file__).parent}'")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell, script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    runs, want, tries, names = json.loads(result.stdout)
    assert runs == [want] * 3 and len(want) == 3
    assert tries == 1 and not [name for name in names if "vectors" in name]


def test_temporary_files_of_dead_builders_are_removed(tmp_path):
    collection, data = filled(tmp_path / "a.db", rows=30)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = file_of(collection).name
    host = vectorfile._HOST
    stale = [tmp_path / f".{base}.{host}-{dead.pid}-{'ab' * 6}.tmp",
             tmp_path / f".{base}.{dead.pid}-{'cd' * 6}.tmp"]  # the name before hosts
    kept = [tmp_path / f".{base}.{host}-{os.getpid()}-{'ef' * 6}.tmp",  # a live builder
            tmp_path / f".{base}.{'0' * 8 if host != '0' * 8 else '1' * 8}-{dead.pid}-{'ab' * 6}.tmp",
            tmp_path / f".{base}.{host}-{dead.pid}-zz.tmp",  # not our pattern
            tmp_path / f".other.db-embsqlite-1.vectors.{host}-{dead.pid}-{'ab' * 6}.tmp"]
    for name in stale + kept:
        name.write_bytes(b"x" * 100)
    directory = tmp_path / f".{base}.{host}-{dead.pid}-{'12' * 6}.tmp"
    directory.mkdir()
    assert answer(collection, data[0].tolist()) == sql_answer(collection, data[0].tolist())
    assert collection._vectors.builds == 1
    assert not any(name.exists() for name in stale)
    assert all(name.exists() for name in kept) and directory.is_dir()


def test_deleted_collections_leave_no_file_and_no_mapping(tmp_path):
    path = tmp_path / "a.db"
    collection, data = filled(path, rows=30)
    answer(collection, data[0].tolist())
    size = os.path.getsize(file_of(collection))
    before = vectorfile.mapped_bytes()
    assert str(file_of(collection)) in vectorfile._mapped
    collection.delete()
    assert not file_of(collection).exists() and str(file_of(collection)) not in vectorfile._mapped
    assert vectorfile.mapped_bytes() == before - size
    # deleted by llm: our next write to the database removes the file
    kept, _ = filled(path, rows=30, name="kept")
    gone, _ = filled(path, rows=30, name="gone", seed=2)
    answer(kept, data[0].tolist())
    answer(gone, data[0].tolist())
    llm.Collection("gone", sqlite_utils.Database(path)).delete()
    assert file_of(gone).exists()
    kept.embed("new", "1,2,3,4,5,6,7,8")
    assert not file_of(gone).exists() and file_of(kept).exists()


def test_the_forget_command_removes_tokens_triggers_and_files(tmp_path):
    from click.testing import CliRunner

    from embsqlite.cli import cli

    path = tmp_path / "a.db"
    collection, data = filled(path, rows=30)
    answer(collection, data[0].tolist())
    collection.close()
    result = CliRunner().invoke(cli, ["vector-file", "--forget", "-d", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(file_of(collection))]
    conn = sqlite3.connect(path)
    assert conn.execute("select count(*) from sqlite_master where name like 'embsqlite%'").fetchone() == (0,)
    conn.close()
    assert not any(".vectors" in name for name in os.listdir(tmp_path))
    llm.Collection("c", sqlite_utils.Database(path), model=LlmVectors()).embed("x", "1,2,3,4,5,6,7,8")
    neither = CliRunner().invoke(cli, ["vector-file", "-d", str(path)])
    assert neither.exit_code != 0 and "COLLECTION" in neither.output


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_datasette_does_not_retry_a_build_abandoned_at_its_time_limit(tmp_path, monkeypatch, anyio_backend):
    """A build longer than `sql_time_limit_ms` is abandoned once per state, not per request."""
    from datasette.app import Datasette

    from embsqlite import registry
    from embsqlite.hashing import HashingModel

    model = HashingModel(4)
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))  # registered for this test
    embsqlite.register_embedding_model(model)
    path = tmp_path / "big.db"
    collection = embsqlite.Collection("big", path, model=model)
    collection.conn.execute(
        "insert into embeddings (collection_id, id, embedding) "
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < 200000) "
        "select ?, printf('item-%06d', i), zeroblob(16) from n", (collection.id,))
    collection.conn.commit()
    changes.install(collection.conn)
    collection.close()
    builds: list[str] = []
    real = vectorfile._temporary
    monkeypatch.setattr(vectorfile, "_temporary", lambda p: builds.append(p) or real(p))
    ds = Datasette([str(path)], settings={"sql_time_limit_ms": 1})
    for _ in range(3):
        response = await ds.client.get("/-/embsqlite/search.json?collection=big&q=happy")
        assert "time limit" in response.json()["error"]
    assert len(builds) == 1
    assert not any(".vectors" in name for name in os.listdir(tmp_path))


def test_a_dump_at_a_reused_inode_never_uses_the_old_file(tmp_path, monkeypatch):
    """Should the re-created database get the old one's device and inode, the state still
    differs (the dump renumbered the rows, so the largest rowid moved): the old file is
    never used, for unfiltered, prefix and filtered searches alike (the row check alone
    covers only the rows returned, not a subset's)."""
    monkeypatch.setattr(vectorfile, "_database_identity", lambda database: (1, 1))
    path = tmp_path / "a.db"
    collection, data = filled(path, rows=20, dim=4)
    # a gap just before the last row: the dump moves only that row, the best match of the
    # query, so a subset's rows before the gap would pass the check of returned rows
    collection.conn.execute("delete from embeddings where id = 'a0018'")
    collection.conn.commit()
    query = data[19].tolist()
    before = answer(collection, query, 5)
    for prefix in ("a001", "b001", "b"):
        answer(collection, query, 3, prefix=prefix)
    replay_dump(path, collection)
    rebuilt = embsqlite.Collection("c", path, model=VectorModel())
    for prefix in ("b", "b001", "a", None):
        assert answer(rebuilt, query, 3, prefix=prefix) == sql_answer(rebuilt, query, 3, prefix=prefix)
    got = rebuilt.similar_by_vector(query, 3, where="id >= ?", where_args=["b0010"])
    expected = rebuilt.conn.execute(
        "select id, cosine_similarity(embedding, ?) as s from embeddings where id >= 'b0010'"
        " order by s desc, id limit 3", (embsqlite.encode(query),)).fetchall()
    assert [(e.id, e.score) for e in got] == expected
    assert answer(rebuilt, query, 5) == before


def test_rows_added_to_another_collection_keep_the_file(tmp_path):
    """Another collection's inserts (by embsqlite, raw SQL or llm) take rowids after the
    file's rows: the file stays valid, no rebuild, answers as SQL."""
    path = tmp_path / "a.db"
    collection, data = filled(path, rows=60, dim=4)
    query = data[7].tolist()
    assert answer(collection, query) == sql_answer(collection, query)
    inode = os.stat(file_of(collection)).st_ino
    other = embsqlite.Collection("d", path, model=VectorModel())
    other.embed_multi([(f"x{i}", "1,2,3,4") for i in range(5)])
    other.conn.execute("insert into embeddings (collection_id, id, embedding) values (?, 'raw', ?)",
                       (other.id, embsqlite.encode([4, 3, 2, 1])))
    other.conn.commit()
    fresh = embsqlite.Collection("c", path, model=VectorModel())
    assert answer(fresh, query) == sql_answer(fresh, query)
    assert answer(fresh, query, 3, prefix="b") == sql_answer(fresh, query, 3, prefix="b")
    assert fresh._vectors.builds == 0 and os.stat(file_of(fresh)).st_ino == inode
    # a write to this collection still makes it stale
    collection.conn.execute("update embeddings set embedding = ? where collection_id = ? and id = 'a0000'",
                            (embsqlite.encode(data[7] * 2), collection.id))
    collection.conn.commit()
    assert answer(fresh, query) == sql_answer(fresh, query)
    assert answer(fresh, query)[0][0] in ("a0000", "b0007") and fresh._vectors.builds == 1


def test_a_dump_after_another_collection_changed_never_uses_the_old_file(tmp_path, monkeypatch):
    """The file stays valid through other collections' inserts, so the table's largest
    rowid moves past the one it recorded; a dump that renumbers the collection's rows
    (another collection's row deleted just before its last row) must still invalidate it,
    even at the same inode, where the check of returned rows cannot: a prefix search would
    silently miss the renumbered last row."""
    monkeypatch.setattr(vectorfile, "_database_identity", lambda database: (1, 1))
    path = tmp_path / "a.db"
    gen = np.random.default_rng(8)
    data = gen.standard_normal((20, 4)).astype(np.float32)
    text = [",".join(map(str, row)) for row in data]
    other = embsqlite.Collection("d", path, model=VectorModel())
    collection = embsqlite.Collection("c", path, model=VectorModel())
    other.embed_multi([(f"x{i}", "1,0,1,0") for i in range(10)])  # rowids 1..10
    collection.embed_multi([(f"b{i:04d}", text[i]) for i in range(19)])  # 11..29
    other.embed("gap", "0,1,0,1")  # 30
    collection.embed("b0019", text[19])  # 31: the collection's last row
    query = data[19].tolist()
    want = sql_answer(collection, query, 3, prefix="b")
    assert want[0][0] == "b0019" and answer(collection, query, 3, prefix="b") == want
    other.embed_multi([(f"y{i}", "0,0,1,1") for i in range(5)])  # 32..36: the file stays valid
    assert answer(collection, query, 3, prefix="b") == want and collection._vectors.builds == 1
    other.conn.execute("delete from embeddings where collection_id = ? and id = 'gap'", (other.id,))
    other.conn.commit()
    replay_dump(path, collection, other)
    rebuilt = embsqlite.Collection("c", path, model=VectorModel())
    assert rebuilt.conn.execute("select rowid from embeddings where id = 'b0019'").fetchone()[0] == 30
    assert answer(rebuilt, query, 3, prefix="b") == sql_answer(rebuilt, query, 3, prefix="b") == want
    assert rebuilt._vectors.builds == 1  # the old file was not used


def test_the_sketch_is_written_in_chunks_and_stops_at_the_deadline(tmp_path, monkeypatch):
    """A build with a deadline (Datasette's time limit) checks it between chunks of the
    sketch too, not only while copying rows; without one, every chunk is written and the
    file is the one a single chunk writes."""
    collection, data = filled(tmp_path / "a.db", rows=200, dim=8)
    answer(collection, data[1].tolist())
    path = file_of(collection)
    whole = path.read_bytes()
    at = vectorfile._offsets(200, 8)
    monkeypatch.setattr(vectorfile, "SKETCH_CHUNK_BYTES", 8 * 7)  # 7 rows a chunk
    copy = tmp_path / "copy"
    copy.write_bytes(whole[:at.codes] + bytes(at.size - at.codes))
    fd = os.open(copy, os.O_RDWR)
    try:
        assert vectorfile._write_sketch(fd, 200, 8, deadline=time.monotonic() - 1) is None
        assert copy.read_bytes()[at.codes:] == bytes(at.size - at.codes)  # nothing written
        assert vectorfile._write_sketch(fd, 200, 8, deadline=time.monotonic() + 60) is True
    finally:
        os.close(fd)
    assert copy.read_bytes() == whole


def test_a_disk_full_while_writing_the_sketch_falls_back_to_sql(tmp_path, monkeypatch):
    """The sketch is written with pwrite: a full disk is an OSError (the search answers
    from SQL, no temporary file stays), never a SIGBUS in a mapping."""
    collection, data = filled(tmp_path / "a.db", rows=50)
    real = os.pwrite

    def full(fd, data, offset):
        if offset >= vectorfile._offsets(50, 8).codes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(vectorfile.os, "pwrite", full)
    query = data[4].tolist()
    assert answer(collection, query) == sql_answer(collection, query)
    assert not file_of(collection).exists() and collection._vectors.builds == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_another_collections_row_put_back_by_a_dump_never_vouches_for_the_file(tmp_path, monkeypatch):
    """The file records its own last row, not the table's: another collection's rows can
    be deleted and re-added freely (as llm's re-embedding does), so one of them landing
    again at a recorded rowid after a renumbering dump must prove nothing."""
    monkeypatch.setattr(vectorfile, "_database_identity", lambda database: (1, 1))
    path = tmp_path / "a.db"
    other = embsqlite.Collection("d", path, model=VectorModel())
    collection = embsqlite.Collection("c", path, model=VectorModel())
    other.embed("g", "1,0,0,0")  # rowid 1
    collection.embed_multi([(f"a{i}", f"{i + 1},1,0,{i}") for i in range(5)])  # 2..6
    other.embed("x", "0,0,1,1")  # 7: the table's last row when the file is built
    query = [5.0, 1.0, 0.0, 4.0]
    want = sql_answer(collection, query, 3, prefix="a0")
    assert answer(collection, query, 3, prefix="a0") == want and collection._vectors.builds == 1
    other.conn.execute("delete from embeddings where collection_id = ? and id = 'g'", (other.id,))
    other.conn.commit()
    other.embed("z", "0,1,1,0")  # 8
    other.embed("x", "0,0,2,1")  # re-embedded: rowid 9; a dump puts it back at 7
    replay_dump(path, collection, other)
    rebuilt = embsqlite.Collection("c", path, model=VectorModel())
    assert rebuilt.conn.execute("select id from embeddings where rowid = 7").fetchone()[0] == "x"
    assert answer(rebuilt, query, 3, prefix="a0") == sql_answer(rebuilt, query, 3, prefix="a0") == want
    assert rebuilt._vectors.builds == 1


@pytest.mark.parametrize("copy", ["vector file", "index"])
def test_a_dump_that_moves_only_the_rows_between_the_first_and_the_last_is_seen(tmp_path, monkeypatch, copy):
    """A row at rowid 0 moves up to 1 in a dump, a gap above it moves the rows after it
    down: the rows between shift while the last row keeps its rowid. The first copied
    row moved, so the copy reads as changed."""
    monkeypatch.setattr(vectorfile, "_database_identity", lambda database: (1, 1))
    path = tmp_path / "a.db"
    docs = embsqlite.Collection("c", path, model=VectorModel())
    docs.embed_multi([(f"a{i:02d}", f"{i + 1},1,0,{i % 7}") for i in range(40)])  # 1..40
    docs.conn.execute("insert into embeddings (rowid, collection_id, id, embedding) values (0, ?, 'z', ?)",
                      (docs.id, embsqlite.encode([0.0, 0.0, 1.0, 5.0])))
    docs.conn.execute("delete from embeddings where collection_id = ? and id = 'a10'", (docs.id,))
    docs.conn.commit()
    if copy == "index":
        docs.build_index()
    else:
        docs.build_vector_file()
    replay_dump(path, docs)
    again = embsqlite.Collection("c", path, model=VectorModel())
    assert again.conn.execute("select rowid from embeddings where id = 'a09'").fetchone()[0] == 11  # was 10
    assert again.conn.execute("select rowid from embeddings where id = 'a39'").fetchone()[0] == 40  # kept
    query = [10.0, 1.0, 0.0, 2.0]  # a09's own vector
    if copy == "index":
        assert again.index_status() == "stale"
        vectorfile.configure(enabled=False)
        try:
            assert [e.id for e in again.similar_by_vector(query, 3)] == [e.id for e in again.similar_by_vector(
                query, 3, exact=True)]
        finally:
            vectorfile.configure(enabled=True)
    else:
        assert answer(again, query, 3, prefix="a09") == sql_answer(again, query, 3, prefix="a09")
        assert again._vectors.builds == 1
