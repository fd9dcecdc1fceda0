"""Reliability: SIGKILL mid-ingestion, concurrent processes and
threads on one file, and bad input that must raise clearly and write nothing.

The subprocess tests print their figures (rows written and verified, searches, errors);
run with `-s` to see them.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import CountingModel

import embsqlite
from embsqlite import Collection, ingest
from embsqlite.hashing import HashingModel

# Crash safety: SIGKILL during embed_multi

BATCH = 100

# The child: the hashing model (id "hashing") appending every item it is sent to a log,
# flushed before the vectors are returned, so the log is a superset of what was embedded.
CRASH_CHILD = r"""
import sys
import embsqlite
from embsqlite.hashing import HashingModel

class LoggingHashing(HashingModel):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def embed_batch(self, items):
        items = list(items)
        with open(self.log, "a") as out:
            out.write("".join(item + "\n" for item in items))
        return super().embed_batch(items)

path, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
collection = embsqlite.Collection("crash", path, model=LoggingHashing(log), model_id="hashing")
items = ((f"b{i // 100:05d}-{i % 100:02d}", f"item {i} word{i % 997} topic{i % 13}")
         for i in range(n))
collection.embed_multi(items, store=True, batch_size=100)
print(collection.count())
"""


def _crash_text(i: int) -> str:
    return f"item {i} word{i % 997} topic{i % 13}"


def _start_child(path, log, n) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(path), str(log), str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _committed_rows(path) -> int:
    """Rows committed so far, read through a separate read-only connection (0 until the
    child has created the tables)."""
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("select count(*) from embeddings").fetchone()[0]
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return 0
        raise
    finally:
        conn.close()


def _kill_after(path, log, n, min_rows, rng) -> int:
    """Run the ingestion until at least `min_rows` are committed, then SIGKILL it after a
    random few milliseconds (so the kill lands anywhere: model call, insert, commit).
    Returns the rows committed when the kill was decided."""
    child = _start_child(path, log, n)
    deadline = time.monotonic() + 60
    try:
        while (seen := _committed_rows(path)) < min_rows:
            assert child.poll() is None, f"the child ended before the kill: {child.communicate()}"
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, child.returncode
    return seen


def _verify_batches(path, n) -> set[str]:
    """Integrity check, then every row: committed batches are whole, form a prefix
    (embed_multi writes in order), and each row holds exactly its content, hash and
    vector. Returns the committed ids."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        assert conn.execute("pragma foreign_key_check").fetchall() == []
        rows = conn.execute(
            "select e.id, e.embedding, e.content, e.content_hash from embeddings e "
            "join collections c on c.id = e.collection_id where c.name = 'crash'"
        ).fetchall()
    finally:
        conn.close()
    per_batch = collections.Counter(id_[:6] for id_, *_ in rows)
    assert set(per_batch.values()) <= {BATCH}, "a batch is half present"
    batches = sorted(int(key[1:]) for key in per_batch)
    assert batches == list(range(len(batches))), "committed batches are not a prefix"
    model = HashingModel()
    indexes = [int(id_[1:6]) * BATCH + int(id_[7:]) for id_, *_ in rows]
    texts = [_crash_text(i) for i in indexes]
    assert all(0 <= i < n for i in indexes)
    assert [row[2] for row in rows] == texts
    assert [bytes(row[3]) for row in rows] == [hashlib.md5(t.encode()).digest() for t in texts]
    want = [embsqlite.encode(v) for v in model.embed_multi(texts)]
    assert [bytes(row[1]) for row in rows] == want
    return {row[0] for row in rows}


def _logged(log) -> list[str]:
    """Items the model was sent in one run, mapped back to their ids."""
    if not os.path.exists(log):
        return []
    with open(log) as handle:
        lines = handle.read().splitlines()
    return [f"b{int(line.split()[1]) // BATCH:05d}-{int(line.split()[1]) % BATCH:02d}" for line in lines]


@pytest.mark.slow
def test_sigkill_mid_ingestion_loses_no_committed_batch_and_resumes_without_re_embedding(
    tmp_path,
):
    # a generator far larger than what is written before each kill: a round may see up to
    # a group (50,000 rows) committed before its kill, and the child must still be running
    n = 300_000
    path = tmp_path / "crash.db"
    rng = random.Random(7)
    committed: set[str] = set()
    figures = []
    for round_, min_rows in enumerate((300, 2_000, 6_000)):
        log = tmp_path / f"model-{round_}.log"
        seen = _kill_after(path, log, n, len(committed) + min_rows, rng)
        after = _verify_batches(path, n)
        sent = _logged(log)
        # the model saw each item once, never one already stored before this run,
        # every row committed in this run, and beyond that at most the group of batches
        # in flight (written, not yet committed) and the batch being embedded
        assert len(sent) == len(set(sent))
        assert not set(sent) & committed
        assert after - committed <= set(sent)
        assert len(set(sent) - after) <= ingest.GROUP_ROWS + BATCH
        assert committed <= after and len(after) >= seen
        figures.append((round_, seen, len(after), len(set(sent) - after)))
        committed = after

    log = tmp_path / "model-final.log"
    child = _start_child(path, log, n)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert int(out) == n
    final = _verify_batches(path, n)
    sent = _logged(log)
    # the re-run embeds exactly what was missing, each item once
    assert len(sent) == len(set(sent)) == n - len(committed)
    assert set(sent) == final - committed
    assert len(final) == n
    for round_, seen, rows, lost in figures:
        print(f"\ncrash round {round_}: killed at >= {seen} rows; {rows} rows verified "
              f"({rows // BATCH} whole batches); {lost} embedded items lost with the kill "
              "(the open group)")
    print(f"crash final: {n} rows written and verified, the model sent "
          f"{len(sent)} items (only the missing ones)")


# Concurrency: WAL, busy timeout, processes


def test_file_databases_use_wal_and_a_busy_timeout_and_keep_a_callers_timeout(tmp_path):
    path = tmp_path / "c.db"
    collection = Collection("docs", str(path), model_id="hashing")
    assert collection.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert collection.conn.execute("pragma busy_timeout").fetchone()[0] == 5000
    # a caller's own connection: its timeout is kept, and llm/sqlite-utils open it as usual
    mine = sqlite3.connect(path, timeout=12.5)
    Collection("docs", mine)
    assert mine.execute("pragma busy_timeout").fetchone()[0] == 12500
    import sqlite_utils

    assert sqlite_utils.Database(path)["embeddings"].count == 0


def test_a_writer_waits_for_another_writers_lock_instead_of_failing(tmp_path):
    path = str(tmp_path / "c.db")
    collection = Collection("docs", path, model_id="hashing")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("begin immediate")
    holder.execute("insert into collections (name, model) values ('other', 'hashing')")
    release = threading.Timer(0.5, holder.execute, ("commit",))
    release.start()
    started = time.monotonic()
    collection.embed_multi([("a", "one"), ("b", "two")])  # blocks on the lock, then writes
    release.join()
    assert time.monotonic() - started >= 0.4
    assert collection.count() == 2
    assert Collection.exists(path, "other")


WRITER = r"""
import json, random, sys, time
import embsqlite

path, k, log, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
collection = embsqlite.Collection("conc", path)  # model from the collections table
rng = random.Random(k)
inserted = updates = 0
end = time.monotonic() + seconds
with open(log, "a") as out:
    while time.monotonic() < end:
        size = rng.randint(1, 40)
        batch = [(f"w{k}-{inserted + j:06d}", f"writer{k} item{inserted + j} t{rng.randrange(10**9)}")
                 for j in range(size)]
        collection.embed_multi(batch, store=True, batch_size=15)
        inserted += size
        moving = (f"moving-{k}", f"moving{k} version{updates} t{rng.randrange(10**9)}")
        collection.embed(*moving, store=True)  # same id, new content: replaced
        updates += 1
        # reported only once committed
        out.write("".join(f"{i}\t{t}\n" for i, t in batch + [moving]))
        out.flush()
        time.sleep(rng.uniform(0, 0.08))
print(json.dumps({"inserted": inserted, "updates": updates}))
"""

READER = r"""
import json, random, sys, time
import embsqlite
from embsqlite.hashing import HashingModel

path, k, seconds, logs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
collection = embsqlite.Collection("conc", path)
model = HashingModel()
rng = random.Random(100 + k)
stats = {"searches": 0, "cached": 0, "fresh_checks": 0, "moved_on": 0, "counts": 0}

def counting(search):  # the vector cache's or the vector file's, counting its answers
    def counted(*args, **kwargs):
        found = search(*args, **kwargs)
        stats["cached"] += found is not None
        return found
    return counted

collection._cache.search = counting(collection._cache.search)
collection._vectors.search = counting(collection._vectors.search)

def committed(log):
    with open(log) as handle:
        text = handle.read()
    return [line.split("\t") for line in text[: text.rfind("\n") + 1].splitlines()]

def check_ranked(got, number):
    stats["searches"] += 1
    assert len(got) == number, (len(got), number)
    assert len({e.id for e in got}) == number
    for a, b in zip(got, got[1:]):
        assert (-a.score, a.id) < (-b.score, b.id), (a, b)

last = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    count = collection.count()
    stats["counts"] += 1
    assert count >= last, f"count went down: {last} -> {count}"
    last = count
    query = [rng.gauss(0, 1) for _ in range(256)]
    for _ in range(rng.randint(1, 4)):  # repeats let the vector cache load and serve
        check_ranked(collection.similar_by_vector(query, number=10), 10)
    # a row some writer reported committed must be found, with its current vector
    log = rng.choice(logs)
    lines = committed(log)
    if not lines:
        continue
    id_, text = lines[-1] if rng.random() < 0.5 else rng.choice(lines)
    if id_.startswith("moving"):
        text = [t for i, t in lines if i == id_][-1]  # its latest committed version
    got = collection.similar_by_vector(model.embed(text), number=5)
    check_ranked(got, 5)
    found = {e.id: e.score for e in got}
    if id_ in found and found[id_] > 0.999:
        stats["fresh_checks"] += 1
        continue
    # only a moving row may have changed since the log was read; a writer logs a version
    # after committing it, so ask the database, not the log, whether it moved on
    (current,) = collection.conn.execute(
        "select content from embeddings where collection_id = ? and id = ?",
        (collection.id, id_),
    ).fetchone()
    assert id_.startswith("moving") and current != text, f"stale search: {id_} missing in {got}"
    stats["moved_on"] += 1
print(json.dumps(stats))
"""


@pytest.mark.slow
def test_two_writers_and_three_readers_on_one_file(tmp_path):
    seconds = 8.0
    path = str(tmp_path / "conc.db")
    seed = Collection("conc", path, model_id="hashing")
    seed.embed_multi(((f"seed-{i:03d}", f"seed text {i}") for i in range(50)), store=True)
    seed.close()
    logs = [str(tmp_path / f"writer{k}.log") for k in range(2)]
    for log in logs:
        open(log, "w").close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, str(k), logs[k], str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(2)
    ] + [
        subprocess.Popen(
            [sys.executable, "-c", READER, path, str(k), str(seconds), *logs],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for k in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    errors = [err for code, _, err in results if code != 0]
    assert not errors, "\n".join(errors)  # a `database is locked` would land here
    writers = [json.loads(out) for _, out, _ in results[:2]]
    readers = [json.loads(out) for _, out, _ in results[2:]]

    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
    stored = dict(conn.execute("select id, content from embeddings").fetchall())
    expected = {f"seed-{i:03d}": f"seed text {i}" for i in range(50)}
    for log in logs:
        with open(log) as handle:
            for line in handle.read().splitlines():
                id_, text = line.split("\t")
                expected[id_] = text  # a moving row: its last version wins
    assert stored == expected  # no row lost, none extra, every content current
    inserted = sum(w["inserted"] for w in writers)
    assert len(stored) == 50 + inserted + 2
    total = {key: sum(r[key] for r in readers) for key in readers[0]}
    # both kinds of search ran: from a copy (the vector file or cache) and from SQL
    assert total["cached"] > 0 and total["fresh_checks"] > 0
    print(f"\nconcurrency: {seconds:.0f} s, 2 writers wrote {inserted} rows and "
          f"{sum(w['updates'] for w in writers)} updates; {len(stored)} rows verified; "
          f"3 readers: {total['searches']} searches ({total['cached']} from the vector "
          f"file or cache), {total['fresh_checks']} just-committed rows found, "
          f"{total['moved_on']} moved on before the check, {total['counts']} counts; "
          f"errors: {len(errors)}")


# Threads


def test_a_collection_used_from_another_thread_fails_clearly(tmp_path, counting_model):
    collection = Collection("docs", str(tmp_path / "c.db"), model=counting_model)
    collection.embed("a", "first text")
    failures = []

    def use():
        for call in (lambda: collection.embed("b", "second text"),
                     lambda: collection.similar("text"), collection.count):
            try:
                call()
            except sqlite3.ProgrammingError as error:
                failures.append(str(error))

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    assert len(failures) == 3
    assert all("same thread" in message for message in failures)
    assert collection.count() == 1 and [e.id for e in collection.similar("text")] == ["a"]


def _threads(work, count=4):
    errors = []

    def run(k):
        try:
            work(k)
        except BaseException as error:  # reported below, with the thread's number
            errors.append(f"thread {k}: {error!r}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _check_whole_batches(conn, threads, calls, errors=()):
    """Each thread made `calls` embed_multi calls of 4 batches of 10: all present, whole."""
    ids = [row[0] for row in conn.execute("select id from embeddings")]
    per_batch = collections.Counter(id_.rsplit("-", 1)[0] for id_ in ids)
    half = sorted(key for key, count in per_batch.items() if count != 10)
    assert not half, f"half-written batches {half[:5]}; thread errors {errors}"
    assert not errors
    assert len(ids) == threads * calls * 40


def test_one_collection_per_thread_on_one_file(tmp_path):
    path = str(tmp_path / "c.db")
    Collection("docs", path, model_id="hashing").close()

    def work(k):
        collection = Collection("docs", path)
        for call in range(15):
            collection.embed_multi(
                ((f"t{k}-{call}.{j // 10}-{j}", f"thread {k} call {call} item {j}")
                 for j in range(40)),
                batch_size=10,
            )
            assert len(collection.similar(f"thread {k}", number=5)) == 5
        collection.close()

    assert _threads(work) == []
    _check_whole_batches(sqlite3.connect(path), 4, 15)


def test_threads_sharing_one_collection_on_a_shared_connection(tmp_path):
    # check_same_thread=False is the caller's choice to share the connection; the
    # Collection then serialises its own batches and searches, so no thread's COMMIT
    # can end another thread's batch half-way.
    conn = sqlite3.connect(tmp_path / "c.db", check_same_thread=False, isolation_level=None)
    collection = Collection("docs", conn, model_id="hashing")

    def work(k):
        for call in range(15):
            collection.embed_multi(
                ((f"t{k}-{call}.{j // 10}-{j}", f"thread {k} call {call} item {j}")
                 for j in range(40)),
                batch_size=10,
            )
            got = collection.similar(f"thread {k}", number=5)
            assert len(got) == 5 and got == sorted(got, key=lambda e: (-e.score, e.id))

    errors = _threads(work)
    assert not conn.in_transaction
    _check_whole_batches(sqlite3.connect(tmp_path / "c.db"), 4, 15, errors)


# Bad input not covered by test_collection.py: a clear exception and nothing written


def _snapshot(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("These are my notes, not a database.\n" * 20)
    before = _snapshot(path)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        Collection("docs", str(path), model_id="hashing")
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        Collection.exists(str(path), "docs")
    assert _snapshot(path) == before
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # no -wal/-journal left


def test_a_truncated_database_is_refused(tmp_path, counting_model):
    path = tmp_path / "c.db"
    collection = Collection("docs", str(path), model=counting_model)
    collection.embed_multi((str(i), f"text {i}") for i in range(500))
    collection.conn.execute("pragma wal_checkpoint(truncate)")
    collection.close()
    data = _snapshot(path)
    path.write_bytes(data[:100])  # the header survives, the pages do not
    with pytest.raises(sqlite3.DatabaseError):
        Collection("docs", str(path), model=counting_model).count()


@pytest.mark.parametrize("how", ["uri mode=ro", "pragma query_only"])
def test_a_read_only_database_refuses_writes_and_still_searches(tmp_path, how):
    # Tests run as root, and root ignores file permissions: a chmod 0444 file stays
    # writable to it. A read-only URI connection or PRAGMA query_only makes SQLite itself
    # refuse, which is what a read-only file gives an ordinary user.
    path = tmp_path / "c.db"
    Collection("docs", str(path), model_id="hashing").embed("a", "some text", store=True)
    if how == "uri mode=ro":
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(path)
        conn.execute("pragma query_only = 1")
    before = _snapshot(path)
    collection = Collection("docs", conn)
    for write in (
        lambda: collection.embed("b", "other text"),
        lambda: collection.embed("a", "some text", metadata={"k": 1}),  # metadata update
        lambda: collection.embed_multi([("c", "more"), ("d", "words")]),
        collection.delete,
        lambda: Collection("new", conn, model_id="hashing"),
    ):
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            write()
        assert not conn.in_transaction
    assert collection.count() == 1
    assert [e.id for e in collection.similar("some text")] == ["a"]
    assert _snapshot(path) == before
    if os.geteuid() != 0:  # only an ordinary user is stopped by the mode bits
        conn.close()
        os.chmod(path, 0o444)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            Collection("docs", str(path)).embed("b", "other text")


@pytest.mark.parametrize(
    "vector, message",
    [
        ([float("inf")] + [0.0] * 63, "infinity"),
        ([0.0] * 63 + [float("-inf")], "infinity"),
        ([1e39] + [0.0] * 63, "overflow|infinity"),  # finite in Python, not in float32
        (["1"] + [0.0] * 63, "numbers"),
        ([], "empty"),
    ],
)
def test_bad_query_vectors(tmp_path, counting_model, vector, message):
    collection = Collection("docs", str(tmp_path / "c.db"), model=counting_model)
    collection.embed("a", "text")
    with pytest.raises(ValueError, match=message):
        collection.similar_by_vector(vector)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((None, "text"), TypeError, "None"),
        (("", "text"), ValueError, "empty"),
        (("x", 3.5), TypeError, "str or bytes"),
        (("x", ["a", "list"]), TypeError, "str or bytes"),
        (("x", "text", "meta"), TypeError, "dict"),
        (("x", "text", {"when": object()}), ValueError, "JSON"),
        (("x", "text", {"inf": float("inf")}), ValueError, "JSON"),
    ],
)
def test_bad_input_to_embed_writes_nothing(tmp_path, counting_model, args, error, message):
    collection = Collection("docs", str(tmp_path / "c.db"), model=counting_model)
    collection.embed("kept", "already here", metadata={"v": 1})
    before = collection.conn.execute("select * from embeddings").fetchall()
    with pytest.raises(error, match=message):
        collection.embed(*args)
    assert collection.conn.execute("select * from embeddings").fetchall() == before
    assert counting_model.items == ["already here"]


def test_a_bad_item_in_a_later_batch_keeps_earlier_batches_only(tmp_path, counting_model):
    collection = Collection("docs", str(tmp_path / "c.db"), model=counting_model)
    entries = [(str(i), f"text {i}") for i in range(25)] + [("bad", None)]
    with pytest.raises(TypeError, match="str or bytes"):
        collection.embed_multi(entries, batch_size=10)
    assert collection.count() == 20  # the third batch (20-24 and the bad item) is not written
    assert counting_model.items == [f"text {i}" for i in range(20)]


# A malformed row written by something else: every search says what is wrong


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x00" * 5, "5-byte blob"),
        (b"", "different dimensions \\(0 and 4\\)"),
        (embsqlite.encode([1, 1, 1, 1]) + embsqlite.encode([1]), "different dimensions \\(5 and 4\\)"),
        (b"\x00\x00\xc0\x7f" + b"\x00" * 12, "not finite"),  # a NaN
        (b"\x00\x00\x80\x7f" + b"\x00" * 12, "not finite"),  # infinity
        ("text!", "must be a float32 BLOB"),
    ],
)
def test_a_malformed_stored_row_fails_every_search_clearly(tmp_path, blob, message):
    collection = Collection("docs", str(tmp_path / "c.db"), model=CountingModel("m4", 4))
    collection.embed_multi([("a", "red apple"), ("b", "blue sky")])
    writer = sqlite3.connect(tmp_path / "c.db")
    with writer:
        writer.execute(
            "insert into embeddings (collection_id, id, embedding) values (?, 'bad', ?)",
            (collection.id, blob),
        )
    for _ in range(3):  # the SQL path, then the cache's turn: it never loads such rows
        with pytest.raises(sqlite3.OperationalError, match=message):
            collection.similar_by_vector([1.0, 0.0, 0.0, 1.0])
        with pytest.raises(sqlite3.OperationalError, match=message):
            collection.similar_by_id("a")
    writer.execute("delete from embeddings where id = 'bad'")
    writer.commit()
    assert [e.id for e in collection.similar("red apple", number=1)] == ["a"]
