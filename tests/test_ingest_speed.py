"""The fast write path: batches committed in time-bounded groups, one bulk INSERT per
batch, models yielding float32 directly; with the same rows, crash safety, deduplication
and llm compatibility as one transaction per batch."""
from __future__ import annotations

import array
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import llm
import numpy as np
import pytest
import sqlite_utils
from conftest import CountingModel

import embsqlite
from embsqlite import Collection, ingest
from embsqlite.hashing import HashingModel


def _text(i: int) -> str:
    return f"item {i} word{i % 97} topic{i % 13}"


def _count(path) -> int:
    conn = sqlite3.connect(path, timeout=5)
    try:
        return conn.execute("select count(*) from embeddings").fetchone()[0]
    finally:
        conn.close()


# Crash safety with groups: a real process, SIGKILL while a group is open

KILL_CHILD = r"""
import os, sys, time
import embsqlite
from embsqlite.hashing import HashingModel

class Logging(HashingModel):
    # the hashing model; logs each item it is sent; on batch `stall` it tells the parent
    # and waits to be killed, with the batches before it in the open group
    def __init__(self, log, stall, ready):
        super().__init__()
        self.log, self.stall, self.ready, self.calls = log, stall, ready, 0

    def embed_batch_encoded(self, items):
        items = list(items)
        self.calls += 1
        with open(self.log, "a") as out:
            out.write("".join(item + "\n" for item in items))
        if self.calls == self.stall:
            open(self.ready, "w").close()
            time.sleep(60)
        return super().embed_batch_encoded(items)

path, log, n, stall, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
collection = embsqlite.Collection("crash", path, model=Logging(log, stall, ready), model_id="hashing")
items = ((f"id{i:06d}", f"item {i} word{i % 97} topic{i % 13}") for i in range(n))
collection.embed_multi(items, store=True, batch_size=100)
print(collection.count())
"""


def _run_child(tmp_path, path, log, n, stall, group_rows):
    ready = tmp_path / f"ready-{stall}"
    env = dict(os.environ, EMBSQLITE_GROUP_SECONDS="600", EMBSQLITE_GROUP_ROWS=str(group_rows))
    return subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(path), str(log), str(n), str(stall), str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ), ready


def _logged(log) -> list[str]:
    with open(log) as handle:
        return [f"id{int(line.split()[1]):06d}" for line in handle.read().splitlines()]


def test_a_run_killed_inside_a_group_leaves_whole_groups_and_a_rerun_embeds_only_the_missing(tmp_path):
    """Groups of 10 batches; the model stalls on batch 25, when batches 21-24 are written
    in the open group: SIGKILL leaves exactly the 20 batches of the committed groups, the
    file intact, and a re-run sends the model only the items that are missing."""
    path, n = tmp_path / "kill.db", 3000
    child, ready = _run_child(tmp_path, path, tmp_path / "first.log", n, 25, 1000)
    deadline = time.monotonic() + 60
    try:
        while not ready.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never reached batch 25"
            time.sleep(0.01)
        # a reader meanwhile sees the committed groups only, and is never blocked
        assert _count(path) == 2000
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
    ids = [row[0] for row in conn.execute("select id from embeddings order by id")]
    conn.close()
    assert ids == [f"id{i:06d}" for i in range(2000)]
    assert len(_logged(tmp_path / "first.log")) == 2500  # batches 21-25 were lost with the kill

    rerun, _ = _run_child(tmp_path, path, tmp_path / "second.log", n, 0, 1000)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert int(out) == n
    assert _logged(tmp_path / "second.log") == [f"id{i:06d}" for i in range(2000, n)]
    stored = Collection("crash", str(path), model_id="hashing")
    model = HashingModel()
    for id_, blob, content, digest in stored.conn.execute(
        "select id, embedding, content, content_hash from embeddings"
    ):
        text = _text(int(id_[2:]))
        assert content == text and bytes(digest) == hashlib.md5(text.encode()).digest()
        assert bytes(blob) == embsqlite.encode(model.embed(text))


# Groups: what other connections see, when the lock is held


def test_groups_commit_whole_and_a_concurrent_reader_sees_each_group(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)
    monkeypatch.setattr(ingest, "GROUP_ROWS", 300)
    path = tmp_path / "groups.db"
    collection = Collection("docs", str(path), model_id="hashing")
    reader = sqlite3.connect(path)
    seen = []

    def items():
        for i in range(1000):
            if i % 50 == 0:
                seen.append(reader.execute("select count(*) from embeddings").fetchone()[0])
            yield f"id{i:04d}", _text(i)

    reports = []
    collection.embed_multi_with_metadata(
        ((id_, text, None) for id_, text in items()), batch_size=100, progress=reports.append
    )
    # the reader sees whole groups of 3 batches, as soon as each commits
    assert seen == sorted(seen) and set(seen) == {0, 300, 600, 900}
    assert reports == [100] * 10 and collection.count() == 1000
    assert not collection.conn.in_transaction


def test_a_slow_model_runs_outside_the_write_lock(tmp_path, monkeypatch):
    """With model calls longer than the group's time bound, the group is committed before
    each call: another connection can write meanwhile and sees every earlier batch."""
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 0.05)
    path = tmp_path / "slow.db"
    during = []

    class Slow(CountingModel):
        def embed_batch(self, items):
            items = list(items)
            other = sqlite3.connect(path, timeout=0)
            try:
                other.execute("begin immediate")  # fails if the lock were held
                during.append(other.execute("select count(*) from embeddings").fetchone()[0])
                other.execute("rollback")
            finally:
                other.close()
            time.sleep(0.1)
            return super().embed_batch(items)

    collection = Collection("docs", str(path), model=Slow())
    collection.embed_multi(((f"i{i}", _text(i)) for i in range(40)), batch_size=10)
    assert during == [0, 10, 20, 30] and collection.count() == 40


def test_a_failing_batch_inside_a_group_keeps_the_batches_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)

    class FailsOnFourth(CountingModel):
        def embed_batch(self, items):
            items = list(items)
            if len(self.batches) == 3 and not getattr(self, "failed", False):
                self.failed = True
                raise RuntimeError("model down")
            return super().embed_batch(items)

    path = tmp_path / "fail.db"
    collection = Collection("docs", str(path), model=FailsOnFourth())
    with pytest.raises(RuntimeError, match="model down"):
        collection.embed_multi(((f"i{i:03d}", _text(i)) for i in range(100)), batch_size=10)
    assert not collection.conn.in_transaction
    assert _count(path) == 30  # committed: the three batches before the failing one
    # a failure in the write itself (a trigger refusing a row) rolls back only its batch
    collection.conn.execute(
        "create trigger refuse after insert on embeddings when new.id = 'j055' "
        "begin select raise(abort, 'refused j055'); end")
    with pytest.raises(sqlite3.IntegrityError, match="refused j055"):
        collection.embed_multi(((f"j{i:03d}", _text(1000 + i)) for i in range(100)), batch_size=10)
    assert not collection.conn.in_transaction
    assert _count(path) == 30 + 50


def test_deduplication_is_exact_inside_and_across_groups(tmp_path, monkeypatch):
    """A content written by an earlier batch of the same open group, or of an earlier
    group, is copied, never sent to the model again; unchanged ids get only their new
    metadata."""
    monkeypatch.setattr(ingest, "GROUP_ROWS", 40)
    model = CountingModel()
    collection = Collection("docs", str(tmp_path / "dedup.db"), model=model)
    entries = [(f"a{i:03d}", _text(i % 25), None) for i in range(100)]
    entries += [(f"a{i:03d}", _text(i % 25), {"again": i}) for i in range(0, 100, 7)]
    collection.embed_multi_with_metadata(entries, batch_size=10)
    assert sorted(model.items) == sorted(_text(i) for i in range(25))  # each content once
    rows = {
        id_: (bytes(blob), metadata)
        for id_, blob, metadata in collection.conn.execute("select id, embedding, metadata from embeddings")
    }
    assert len(rows) == 100
    want = {text: embsqlite.encode(CountingModel().embed(text)) for text in map(_text, range(25))}
    assert all(rows[f"a{i:03d}"][0] == want[_text(i % 25)] for i in range(100))
    assert {id_ for id_, (_, meta) in rows.items() if meta} == {f"a{i:03d}" for i in range(0, 100, 7)}


# The bulk statement stores what executemany stores


TRICKY = [
    ("plain", "hello world", None),
    ("unicode é😀", "naïve café 😀 ünïcödé", {"k": "välue 😀", "n": [1, 2.5, None]}),
    ("quotes\"\\", "a \"quoted\" \\ back\\slash\n\ttabs\x01\x1f", {"a\"b": "c\\d"}),
    ("nul", "before\x00after", {"x": "nul\x00inside"}),
    ("empty-text", "", {}),
    ("bytes", b"\x00\x01binary\xff", {"bin": True}),
    ("empty-bytes", b"", None),
    ("line sep", "\u2028\u2029\ufeff", None),
]


def _stored(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select collection_id, id, typeof(id), hex(embedding), typeof(content), hex(content), "
            "typeof(content_blob), hex(content_blob), hex(content_hash), typeof(metadata), "
            "hex(metadata), typeof(updated), updated from embeddings order by id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("store", [False, True])
def test_the_bulk_insert_stores_exactly_what_executemany_stores(tmp_path, monkeypatch, store):
    monkeypatch.setattr(ingest.time, "time", lambda: 1_700_000_000.5)
    statements = {}
    for way in ("bulk", "executemany"):
        if way == "executemany":
            monkeypatch.setattr(ingest, "bulk_insert_supported", lambda conn: False)
        path = tmp_path / f"{way}.db"
        conn = embsqlite.connect(path)
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        Collection("docs", conn, model=CountingModel()).embed_multi_with_metadata(
            TRICKY, store=store, batch_size=3
        )
        conn.close()
        statements[way] = seen
    assert any("json_each" in s for s in statements["bulk"])
    assert not any("json_each" in s for s in statements["executemany"])
    bulk, many = _stored(tmp_path / "bulk.db"), _stored(tmp_path / "executemany.db")
    for a, b in zip(bulk, many):
        assert a == b, [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    assert bulk == many
    assert len(_stored(tmp_path / "bulk.db")) == len(TRICKY)


def test_llm_reads_and_extends_a_file_loaded_in_groups(tmp_path):
    path = tmp_path / "shared.db"
    ours = Collection("docs", str(path), model_id="hashing")
    ours.embed_multi_with_metadata(
        ((f"d{i:05d}", _text(i), {"i": i} if i % 3 == 0 else None) for i in range(5000)), store=True
    )
    ours.close()

    class Hashing(llm.EmbeddingModel):
        model_id = "hashing"
        supports_binary = True

        def embed_batch(self, items):
            return HashingModel().embed_batch(items)

    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=Hashing())
    assert theirs.count() == 5000
    query = _text(123)
    ours = Collection("docs", str(path), model_id="hashing")
    want = [(e.id, e.score) for e in ours.similar(query, number=5)]
    got = [(e.id, e.score) for e in theirs.similar(query, number=5)]
    assert [id_ for id_, _ in got] == [id_ for id_, _ in want]
    assert all(abs(a[1] - b[1]) < 1e-12 for a, b in zip(got, want))
    best = theirs.similar(query, number=1)[0]
    assert (best.id, best.content, best.metadata) == ("d00123", query, {"i": 123})
    theirs.embed("from-llm", "added by llm afterwards", store=True)
    assert ours.count() == 5001 and ours.similar_by_id("from-llm", number=1)


# The connection while a run writes, and after it


def test_a_run_tunes_its_connection_and_restores_it(tmp_path):
    path = tmp_path / "tune.db"
    conn = embsqlite.connect(path)
    before = [conn.execute(f"pragma {name}").fetchone()[0] for name in ("cache_size", "temp_store")]
    during = []

    class Observing(CountingModel):
        def embed_batch(self, items):
            during.append([conn.execute(f"pragma {name}").fetchone()[0] for name in ("cache_size", "temp_store")])
            return super().embed_batch(items)

    collection = Collection("docs", conn, model=Observing())
    collection.embed_multi((f"i{i}", _text(i)) for i in range(30))
    assert during[0] == [-ingest.WRITE_CACHE_KIB, ingest.TEMP_STORE_MEMORY]
    assert [conn.execute(f"pragma {name}").fetchone()[0] for name in ("cache_size", "temp_store")] == before
    # a temporary table of the caller's survives a run (changing temp_store would drop it)
    conn.execute("create temp table mine (x)")
    conn.execute("insert into mine values (1)")
    during.clear()
    collection.embed_multi((f"j{i}", _text(100 + i)) for i in range(30))
    assert during[0][1] == before[1]
    assert conn.execute("select x from mine").fetchall() == [(1,)]
    conn.close()


# Models that yield float32 directly


@pytest.mark.parametrize("kind", ["bytes", "array", "numpy32", "numpy64", "list"])
def test_a_model_may_yield_float32_bytes_arrays_or_numpy(tmp_path, kind):
    vectors = np.random.default_rng(3).standard_normal((20, 8))

    class Direct(embsqlite.EmbeddingModel):
        model_id = "direct"

        def embed_batch(self, items):
            for item in items:
                v = vectors[int(item)]
                yield {
                    "bytes": v.astype("<f4").tobytes(),
                    "array": array.array("f", v.astype(np.float32).tolist()),
                    "numpy32": v.astype(np.float32),
                    "numpy64": v,
                    "list": v.tolist(),
                }[kind]

    collection = Collection("docs", str(tmp_path / "d.db"), model=Direct())
    collection.embed_multi((f"i{i}", str(i)) for i in range(20))
    stored = dict(collection.conn.execute("select id, embedding from embeddings"))
    assert all(bytes(stored[f"i{i}"]) == vectors[i].astype("<f4").tobytes() for i in range(20))
    embedded = Direct().embed("4")  # the public API still gives a list of floats
    assert list(embedded) == pytest.approx(vectors[4].astype(np.float32).tolist())
    assert collection.similar("4", number=1)[0].id == "i4"


def test_encode_takes_float32_forms_and_refuses_bad_ones():
    values = [0.5, -1.25, 3.0]
    blob = embsqlite.encode(values)
    assert embsqlite.encode(blob) == blob
    assert embsqlite.encode(array.array("f", values)) == blob
    assert embsqlite.encode(np.array(values, dtype=np.float32)) == blob
    assert embsqlite.encode(np.array(values)) == blob
    with pytest.raises(ValueError, match="multiple of 4"):
        embsqlite.encode(b"\x00\x00\x80")
    with pytest.raises(ValueError, match="NaN or infinity"):
        embsqlite.encode(np.array([1.0, np.nan], dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match="NaN or infinity"):
        embsqlite.encode(np.array([1e39]))
    with pytest.raises(ValueError, match="numbers"):
        embsqlite.encode(np.array(["a", "b"]))


def test_the_hashing_model_stores_the_bytes_its_float_lists_encode_to():
    model = HashingModel()
    items = [_text(i) for i in range(300)] + ["", "!!!", "a a a b", "ÉCOLE école", b"", b"abcdefg" * 9]
    assert list(model.embed_multi_encoded(items)) == [embsqlite.encode(v) for v in model.embed_multi(items)]

    class Shifted(HashingModel):  # a subclass changing embed_batch gets its own vectors stored
        def embed_batch(self, items):
            for vector in super().embed_batch(items):
                yield [x + 1.0 for x in vector]

    shifted = Shifted()
    assert list(shifted.embed_multi_encoded(items[:3])) == [
        embsqlite.encode(v) for v in shifted.embed_multi(items[:3])
    ]


def test_a_model_yielding_non_finite_float32_bytes_is_refused_writing_nothing(tmp_path):
    class Broken(embsqlite.EmbeddingModel):
        model_id = "broken"

        def embed_batch(self, items):
            for item in items:
                yield np.array([1.0, np.inf if item == "bad" else 2.0], dtype="<f4").tobytes()

    collection = Collection("docs", str(tmp_path / "b.db"), model=Broken())
    collection.embed_multi([("a", "good")], batch_size=10)
    with pytest.raises(ValueError, match="NaN or infinity"):
        collection.embed_multi([("b", "fine"), ("c", "bad")], batch_size=10)
    assert collection.count() == 1


SIGTERM_CLI = """
import os, sys, time, embsqlite
from embsqlite.cli import cli
class SlowSecond(embsqlite.EmbeddingModel):
    model_id = "slow-second"
    calls = 0
    def embed_batch(self, items):
        items = list(items)
        SlowSecond.calls += 1
        if SlowSecond.calls == 2:
            open(os.environ["READY"], "w").close()
            time.sleep(60)
        return [[1.0, float(len(item))] for item in items]
embsqlite.register_embedding_model(SlowSecond())
cli(prog_name="embsqlite")
"""


@pytest.mark.slow
def test_sigterm_inside_an_open_group_commits_the_batches_before_it(tmp_path):
    """The first batch is written in the open group when the second batch's model call
    is interrupted by SIGTERM: the command exits 143 and the first batch is committed."""
    script = tmp_path / "cli.py"
    script.write_text(SIGTERM_CLI)
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"i{i},text {i}\n" for i in range(250)))
    path, ready = tmp_path / "x.db", tmp_path / "ready"
    process = subprocess.Popen(
        [sys.executable, str(script), "embed-multi", "c", str(tmp_path / "in.csv"), "-m",
         "slow-second", "-d", str(path)],
        env={**os.environ, "READY": str(ready), "EMBSQLITE_GROUP_SECONDS": "600"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _count(path) == 0  # batch 1 is written but its group is still open
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    conn = sqlite3.connect(path)
    assert [row[0] for row in conn.execute("select id from embeddings order by rowid")] == [
        f"i{i}" for i in range(100)]
    conn.close()


def test_an_input_that_waits_is_read_outside_the_group_once_seen_waiting(tmp_path):
    """Once reading a batch from the input has been slow, the group commits before each
    read, so a pipe or a network source never holds the write lock while it waits."""
    collection = embsqlite.Collection("c", tmp_path / "c.db", model_id="hashing")
    open_while_waiting = []

    def slow_source():
        for i in range(60):
            if i and i % 10 == 0:
                open_while_waiting.append(collection.conn.in_transaction)
                time.sleep(0.2)  # a tenth of the group's time or more (1 s by default)
            yield (f"id{i:03d}", f"text {i}")

    collection.embed_multi(slow_source(), batch_size=10)
    assert collection.count() == 60
    # the first wait is not foreseen (the group is open); every later one is outside it
    assert open_while_waiting[1:] == [False] * (len(open_while_waiting) - 1)
