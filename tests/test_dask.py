"""Embedding on a Dask cluster: real LocalClusters and a real `dask scheduler` with two
`dask worker` processes, all on 127.0.0.1 and stopped at the end; workers killed and this
process killed mid-run."""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed  # the `dask` extra, part of the test extra; never skipped
import pytest

import embsqlite
from embsqlite import Collection, cluster
from embsqlite.hashing import HashingModel

WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def local_client():
    """A LocalCluster of 2 one-thread worker processes on 127.0.0.1, for this module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local, distributed.Client(local) as client:
        yield client


class LoggingModel(embsqlite.EmbeddingModel):
    """The hashing model's vectors under its own id (known only to this process, so it is
    pickled to the workers), appending every item it is sent to `log` before returning,
    and sleeping `pause` seconds per batch."""

    supports_binary = True

    def __init__(self, log: Path, model_id: str = "logging", pause: float = 0.0):
        self.model_id, self.log, self.pause = model_id, str(log), pause
        self.inner = HashingModel(64)

    def embed_batch(self, items):
        items = list(items)
        with open(self.log, "a") as out:
            out.write("".join(json.dumps(item) + "\n" for item in items))
        time.sleep(self.pause)
        return self.inner.embed_batch(items)


def logged(log: Path) -> list[str]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def table(collection: Collection) -> list[tuple]:
    """Every stored column but the timestamp, by id."""
    return collection.conn.execute(
        "select id, embedding, content, content_hash, metadata from embeddings "
        "where collection_id = ? order by id", (collection.id,)
    ).fetchall()


def count_commits(collection: Collection) -> list[str]:
    """A list that fills with every COMMIT the collection's connection executes."""
    commits: list[str] = []
    collection.conn.set_trace_callback(
        lambda statement: commits.append(statement) if statement.strip().upper() == "COMMIT" else None
    )
    return commits


def messy_items(n: int) -> list[tuple]:
    """Items with contents repeated within and across batches, ids repeated with new
    content in the next batches and much later, and metadata."""
    items = []
    for i in range(n):
        items.append((f"id{i:04d}", f"text {i % 37}", {"i": i} if i % 3 else None))
        if i >= 25 and i % 7 == 0:  # an id of the previous batch, with new content
            items.append((f"id{i - 25:04d}", f"changed {i}", None))
    items += [(f"id{i:04d}", f"text {i % 37}", {"again": i}) for i in range(0, n, 11)]
    return items


# With a LocalCluster of 2 worker processes


@pytest.mark.slow
def test_a_local_cluster_stores_exactly_what_one_process_stores(tmp_path, local_client):
    items = messy_items(600)
    one = Collection("c", tmp_path / "one.db", model_id="hashing")
    one.embed_multi_with_metadata(items, store=True, batch_size=40)
    both = Collection("c", tmp_path / "cluster.db", model_id="hashing")
    both.embed_multi_with_metadata(items, store=True, batch_size=40, dask=local_client)
    assert table(both) == table(one)
    assert len(table(one)) == 600


@pytest.mark.slow
def test_stored_content_never_reaches_the_workers_and_each_batch_commits_once(
    tmp_path, local_client
):
    log = tmp_path / "model.log"
    model = LoggingModel(log)
    path = tmp_path / "c.db"
    first = [(str(i), f"text {i}") for i in range(0, 500, 2)]
    Collection("c", path, model=LoggingModel(tmp_path / "local.log")).embed_multi(first)
    collection = Collection("c", path, model=model)
    commits = count_commits(collection)
    items = [(str(i), f"text {i % 500}") for i in range(1000)]  # each content twice
    collection.embed_multi(items, batch_size=50, dask=local_client)
    sent = logged(log)
    # only the contents never stored, each once, although they arrive twice
    assert sorted(sent) == sorted(f"text {i}" for i in range(1, 500, 2))
    assert len(commits) == 1000 // 50
    reference = Collection("c", tmp_path / "ref.db", model=LoggingModel(tmp_path / "ref.log"))
    reference.embed_multi(items, batch_size=50)
    assert table(collection) == table(reference)
    # a content in flight in one batch is not sent again by the next ones
    log.unlink()
    again = [(f"n{i}", f"new {i % 60}") for i in range(400)]
    collection.embed_multi(again, batch_size=50, dask=local_client)
    assert sorted(logged(log)) == sorted(f"new {i}" for i in range(60))
    assert collection.count() == 1400


@pytest.mark.slow
def test_progress_counts_committed_items(tmp_path, local_client):
    path = tmp_path / "c.db"
    collection = Collection("c", path, model_id="hashing")
    reader = embsqlite.connect(path)
    seen = []

    def on_commit(count):
        seen.append((count, reader.execute("select count(*) from embeddings").fetchone()[0]))

    items = [(str(i), f"text {i}", None) for i in range(430)]
    cluster.embed(collection, items, False, 100, local_client, on_commit=on_commit)
    reader.close()
    assert sorted(count for count, _ in seen) == [30, 100, 100, 100, 100]
    totals = [sum(count for count, _ in seen[: k + 1]) for k in range(len(seen))]
    assert [rows for _, rows in seen] == totals  # each call follows its commit


@pytest.mark.slow
def test_minilm_on_a_local_cluster_stores_the_vectors_of_one_process(tmp_path, local_client):
    texts = [f"sentence number {i} about {('cats', 'markets', 'rain')[i % 3]}" for i in range(120)]
    items = list(enumerate(texts))
    one = Collection("c", tmp_path / "one.db", model_id="minilm")
    one.embed_multi(items, batch_size=32)
    both = Collection("c", tmp_path / "cluster.db", model_id="minilm")
    both.embed_multi(items, batch_size=32, dask=local_client)
    assert table(both) == table(one)


PLUGINS = {
    "llm_vowels.py": (
        "import llm\n"
        "class VowelCounts(llm.EmbeddingModel):\n"
        "    model_id = 'vowel-counts'\n"
        "    def embed_batch(self, items):\n"
        "        for text in items:\n"
        "            yield [text.lower().count(v) for v in 'aeiou'] + [len(text)]\n"
        "@llm.hookimpl\n"
        "def register_embedding_models(register):\n"
        "    register(VowelCounts())\n"
    ),
}

PLUGIN_CHILD = r"""
import json, sys
import distributed
from embsqlite import Collection, cluster
path = sys.argv[1]
items = [(str(i), f"Some text {i} with vowels " * (i % 4 + 1)) for i in range(300)]
out = {}
local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                 dashboard_address=None)
client = distributed.Client(local)
for model_id in ("letter-counts", "llm:vowel-counts"):
    one = Collection(model_id + " one", path, model_id=model_id)
    one.embed_multi(items, batch_size=25)
    both = Collection(model_id + " cluster", path, model_id=model_id)
    both.embed_multi(items, batch_size=25, dask=client)
    rows = [
        c.conn.execute("select id, embedding from embeddings where collection_id = ? order by id",
                       (c.id,)).fetchall()
        for c in (one, both)
    ]
    out[model_id] = [rows[0] == rows[1], len(rows[0]), both.model_id,
                     cluster.model_spec(both.model()).by_name]
client.close()
local.close()
print(json.dumps(out))
"""


def install_fake(site: Path, name: str, module: str, source: str, group: str) -> None:
    """Install one module as a distribution with an entry point, as pip would lay it out."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{module} = {module}\n")


@pytest.mark.slow
def test_plugin_models_and_llm_models_are_loaded_by_name_on_the_workers(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    plugin = Path(__file__).parent / "plugin_pkg" / "embsqlite_test_plugin.py"
    install_fake(site, "embsqlite_test_plugin", "embsqlite_test_plugin", plugin.read_text(), "embsqlite")
    install_fake(site, "llm_vowels", "llm_vowels", PLUGINS["llm_vowels.py"], "llm")
    env = {**os.environ, **WORKER_ENV, "LLM_USER_PATH": str(tmp_path / "llm"),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", PLUGIN_CHILD, str(tmp_path / "c.db")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "letter-counts": [True, 300, "letter-counts", True],
        "llm:vowel-counts": [True, 300, "vowel-counts", True],
    }


@pytest.mark.slow
def test_a_model_error_names_the_item_and_keeps_earlier_batches(tmp_path, local_client):
    class Failing(LoggingModel):
        def embed_batch(self, items):
            items = list(items)
            if any("boom" in item for item in items):
                raise ValueError("the model cannot embed this")
            return super().embed_batch(items)

    collection = Collection("c", tmp_path / "c.db", model=Failing(tmp_path / "log"))
    items = [(str(i), "boom" if i == 57 else f"text {i}") for i in range(60)]
    with pytest.raises(ValueError, match=r"item 58 \(id '57'\): the model cannot embed this"):
        collection.embed_multi(items, batch_size=10, dask=local_client)
    stored = collections.Counter(int(row[0]) // 10 for row in table(collection))
    assert 5 not in stored and set(stored.values()) <= {10}  # whole batches, not the failing one
    # one batch at a time, the batches before the failing one are all committed
    collection.delete()
    collection = Collection("c", tmp_path / "c.db", model=Failing(tmp_path / "log"))
    with pytest.raises(ValueError, match=r"item 58 \(id '57'\)"):
        cluster.embed(collection, [(i, v, None) for i, v in items], False, 10, local_client,
                      window=1)
    assert sorted(int(row[0]) for row in table(collection)) == list(range(50))


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried_and_every_batch_written_once(tmp_path):
    model = LoggingModel(tmp_path / "model.log", pause=0.15)
    collection = Collection("c", tmp_path / "c.db", model=model)
    embsqlite.changes.install(collection.conn)  # its own commit, once, before the batches'
    commits = count_commits(collection)
    items = [(str(i), f"text {i}") for i in range(1500)]
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local, distributed.Client(local) as client:
        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_when_started():
            deadline = time.monotonic() + 60
            while len(commits) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        collection.embed_multi(items, batch_size=50, dask=client)
        killer.join()
        client.wait_for_workers(2, timeout=60)
        assert killed and pids[0] not in client.run(os.getpid).values()
    assert len(commits) == 1500 // 50  # each batch committed exactly once
    want = [embsqlite.encode(v) for v in HashingModel(64).embed_multi([t for _, t in items])]
    stored = dict((row[0], row[1]) for row in table(collection))
    assert [stored[id_] for id_, _ in items] == want
    assert set(logged(tmp_path / "model.log")) == {t for _, t in items}


# This process killed mid-run

KILLED_CHILD = r"""
import json, sys, time
import embsqlite
from embsqlite.hashing import HashingModel

class Logging(HashingModel):
    def __init__(self, log):
        super().__init__(64)
        self.model_id = "logging-hashing"
        self.log = log

    def embed_batch(self, items):
        items = list(items)
        with open(self.log, "a") as out:
            out.write("".join(item + "\n" for item in items))
        time.sleep(0.05)
        return super().embed_batch(items)

path, log, address, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
collection = embsqlite.Collection("crash", path, model=Logging(log))
items = ((f"b{i // 100:04d}-{i % 100:02d}", f"item {i}") for i in range(n))
collection.embed_multi(items, batch_size=100, dask=address)
print(collection.count())
"""


def committed_ids(path: Path) -> set[str]:
    import sqlite3

    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return {row[0] for row in conn.execute("select id from embeddings")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


@pytest.mark.slow
def test_this_process_killed_mid_run_leaves_whole_batches_and_a_rerun_embeds_the_rest(
    tmp_path, local_client
):
    n = 6000
    path, address = tmp_path / "crash.db", local_client.scheduler.address
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), str(tmp_path / "one.log"), address, str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    try:
        while len(committed_ids(path)) < 600:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    before = committed_ids(path)
    per_batch = collections.Counter(id_[:5] for id_ in before)
    assert set(per_batch.values()) == {100}, "a batch is half written"
    assert len(before) < n

    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(path), str(tmp_path / "two.log"), address, str(n)],
        capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) == n
    sent = (tmp_path / "two.log").read_text().splitlines()
    missing = {f"item {i}" for i in range(n) if f"b{i // 100:04d}-{i % 100:02d}" not in before}
    assert sorted(sent) == sorted(missing)  # only what was missing, each once
    conn = embsqlite.connect(path)
    rows = conn.execute("select id, embedding from embeddings").fetchall()
    conn.close()
    want = HashingModel(64)
    assert len(rows) == n
    for id_, blob in rows:
        i = int(id_[1:5]) * 100 + int(id_[6:])
        assert bytes(blob) == embsqlite.encode(want.embed(f"item {i}"))


# The command line against a `dask scheduler` and two `dask worker` processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dask_processes(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1; the address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **WORKER_ENV}
    common = {"env": env, "cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], **common)]
    try:
        for _ in range(2):
            processes.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard"], **common))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_the_cli_embeds_on_a_dask_scheduler_with_two_workers(tmp_path, dask_processes):
    source = tmp_path / "items.csv"
    source.write_text("id,text\n" + "".join(f"{i},words {i % 90} and {i}\n" for i in range(700)))
    runs = {}
    for name, extra in (("one", []), ("cluster", ["--dask", dask_processes])):
        db = tmp_path / f"{name}.db"
        result = subprocess.run(
            [str(BIN / "embsqlite"), "embed-multi", "docs", str(source), "-d", str(db),
             "-m", "hashing", "--store", "--batch-size", "64", *extra],
            capture_output=True, text=True, timeout=300, env={**os.environ, **WORKER_ENV},
        )
        assert result.returncode == 0, result.stderr
        runs[name] = table(Collection("docs", db, create=False))
    assert runs["cluster"] == runs["one"] and len(runs["one"]) == 700


@pytest.mark.slow
def test_the_cli_starts_a_local_cluster_with_dask_workers(tmp_path):
    source = tmp_path / "items.csv"
    source.write_text("id,text\n" + "".join(f"{i},words {i}\n" for i in range(300)))
    db = tmp_path / "c.db"
    result = subprocess.run(
        [str(BIN / "embsqlite"), "embed-multi", "docs", str(source), "-d", str(db),
         "-m", "hashing", "--dask-workers", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, **WORKER_ENV},
    )
    assert result.returncode == 0, result.stderr
    assert Collection("docs", db, create=False).count() == 300


# Refusals, before any cluster starts


def test_dask_and_dask_workers_exclude_each_other(tmp_path):
    from click.testing import CliRunner

    from embsqlite.cli import cli

    source = tmp_path / "items.csv"
    source.write_text("id,text\n1,a\n")
    result = CliRunner().invoke(cli, ["embed-multi", "docs", str(source), "-d",
                                      str(tmp_path / "c.db"), "--dask", "tcp://127.0.0.1:1",
                                      "--dask-workers", "2"])
    assert result.exit_code == 2
    assert "--dask and --dask-workers exclude each other" in result.output


@pytest.mark.parametrize("dask, error, message", [
    (0, ValueError, "at least 1 worker, not 0"),
    (True, TypeError, "dask must be a distributed.Client"),
    ("", TypeError, "dask must be a distributed.Client"),
    (2.5, TypeError, "dask must be a distributed.Client"),
])
def test_bad_dask_arguments_are_refused(tmp_path, dask, error, message):
    collection = Collection("c", tmp_path / "c.db", model_id="hashing")
    with pytest.raises(error, match=message):
        collection.embed_multi([("1", "a")], dask=dask)
    assert collection.count() == 0


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    collection = Collection("c", tmp_path / "c.db", model_id="hashing")
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(cluster.ClusterError, match="no Dask scheduler answers at"):
        collection.embed_multi([("1", "a")], dask=address)


def test_a_model_workers_cannot_get_is_refused_before_dispatch(tmp_path):
    class Unpicklable(LoggingModel):
        def __init__(self, log):
            super().__init__(log, model_id="local-only")
            self.lock = threading.Lock()

    collection = Collection("c", tmp_path / "c.db", model=Unpicklable(tmp_path / "log"))
    with pytest.raises(cluster.ClusterError, match="'local-only' cannot be sent to Dask workers"):
        collection.embed_multi([("1", "a")], dask="tcp://127.0.0.1:1")


def test_a_worker_without_the_model_or_with_another_version_says_so():
    unknown = cluster.ModelSpec("no-such-model", embsqlite.__version__, True, None, "k1")
    with pytest.raises(cluster.ClusterError, match="cannot load model 'no-such-model'"):
        cluster.worker_model(unknown)
    other = cluster.ModelSpec("hashing", "0.0.1", True, None, "k2")
    with pytest.raises(cluster.ClusterError, match="install the same version on every worker"):
        cluster.worker_model(other)
    broken = cluster.ModelSpec("x", embsqlite.__version__, False, b"not a pickle", "k3")
    with pytest.raises(cluster.ClusterError, match="cannot unpickle model 'x'"):
        cluster.worker_model(broken)


def test_the_hashing_model_pickles_for_workers():
    import pickle

    for model in (HashingModel(), HashingModel(64)):
        copy = pickle.loads(pickle.dumps(model))
        assert copy.model_id == model.model_id
        assert copy.embed("the same words") == model.embed("the same words")


def test_the_cli_names_an_unreachable_scheduler_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from embsqlite.cli import cli

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    source = tmp_path / "items.csv"
    source.write_text("id,text\n1,a\n")
    address = f"tcp://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["embed-multi", "docs", str(source), "-d",
                                      str(tmp_path / "c.db"), "-m", "hashing", "--dask", address])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no Dask scheduler answers at '{address}'")
    assert "Traceback" not in result.output
    assert not (tmp_path / "c.db").exists()  # the database it created is removed again


@pytest.mark.slow
def test_a_batch_that_kills_every_worker_running_it_is_a_clear_error(tmp_path):
    import dask

    class Dying(LoggingModel):
        def embed_batch(self, items):
            items = list(items)
            if "die" in items:
                os._exit(1)  # the worker process ends mid-batch
            return super().embed_batch(items)

    collection = Collection("c", tmp_path / "c.db", model=Dying(tmp_path / "log"))
    items = [(str(i), "die" if i == 25 else f"text {i}") for i in range(40)]
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local, distributed.Client(local) as client:
        with pytest.raises(cluster.ClusterError, match="the batch of ids '20' to '29': every worker"):
            cluster.embed(collection, [(i, v, None) for i, v in items], False, 10, client, window=1)
    assert sorted(int(row[0]) for row in table(collection)) == list(range(20))
