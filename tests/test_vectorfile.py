"""The vector file beside the database: the same answers as SQL, never stale, never required."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
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


def test_blob_writes_on_the_own_connection_rebuild_the_file(tmp_path):
    """Incremental blob I/O fires no trigger; the connection's own commits are seen."""
    collection, data = filled(tmp_path / "a.db")
    conn = collection.conn
    query = data[4].tolist()
    assert answer(collection, query)[0][0] == "a0004"
    rowid = conn.execute("select rowid from embeddings where id = 'a0004'").fetchone()[0]
    with conn.blobopen("embeddings", "embedding", rowid) as blob:
        blob.write(embsqlite.encode([-v for v in data[4]]))
    conn.commit()
    got = answer(collection, query)
    assert got == sql_answer(collection, query) and got[0][0] != "a0004"
    assert collection._vectors.builds == 2


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
          "rename swap", "crash"]

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
    elif kind == "blob write":
        row = conn.execute("select rowid from embeddings where id = ? and embedding is not null",
                           (some,)).fetchone()
        if row:
            with conn.blobopen("embeddings", "embedding", row[0]) as handle:
                handle.write(blob)
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


def test_own_commits_are_read_from_every_shape_of_change_token(tmp_path):
    """Only tokens with a file data version per database tell this connection's commits."""
    conn = embsqlite.connect(tmp_path / "o.db")
    conn.execute("create table t (x)")
    conn.commit()
    for alias in ("x1", "x2", "x3"):
        conn.execute(f"attach ':memory:' as {alias}")
    token = cache.change_token(conn)
    assert vectorfile.own_commits(token) == 1
    conn.execute("insert into t values (1)")
    conn.commit()
    assert vectorfile.own_commits(cache.change_token(conn)) == 2
    without_versions = token[: 1 + 3 * 4]  # 4 databases, as pysqlite3's token
    assert len(without_versions) == 13 and vectorfile.own_commits(without_versions) is None
    assert vectorfile.own_commits((-5,)) is None and vectorfile.own_commits(None) is None


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
    """apsw tells its file data version (the file is used, built through the cursor);
    pysqlite3 does not (own blob writes could not be seen): it searches in SQL."""
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
    assert collection._vectors.builds == (1 if kind == "apsw" else 0)


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
    # the second search at this state: the other's file is current, but this connection
    # committed since it last used a file (as incremental blob I/O would): it rebuilds
    assert answer(collection, data[2].tolist()) == sql_answer(collection, data[2].tolist())
    assert collection._vectors.builds == 2
