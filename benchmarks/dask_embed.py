"""MiniLM items/s written by embed_multi in one process, and on a Dask LocalCluster of 2
worker processes x 1 thread (127.0.0.1), on the same texts; checks that both store
identical vectors and prints the ratio. The texts are standard-library docstrings
(first paragraphs, distinct). Models are loaded before timing, in both cases. The load
average is printed: other jobs on the machine take cores from both runs.

    python benchmarks/dask_embed.py                    # 3,000 docstrings, batches of 100
    python benchmarks/dask_embed.py --items 2000 --workers 2 --batch-size 50

A third line measures the same batches on plain worker processes (multiprocessing, no
Dask, no database): the most this run's cores allowed.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

MODULES = [
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections",
    "concurrent.futures", "configparser", "contextlib", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email", "enum", "fractions", "functools", "gettext", "glob",
    "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.server", "imaplib",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma", "mailbox",
    "mimetypes", "multiprocessing", "netrc", "numbers", "operator", "optparse", "os",
    "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "trace", "traceback", "types", "typing", "unittest", "urllib.parse", "urllib.request",
    "uuid", "warnings", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile",
]


def docstrings(count: int) -> list[str]:
    """`count` distinct first paragraphs of standard-library docstrings (10+ characters)."""
    seen: dict[str, None] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        objects = [module] + [value for _, value in sorted(vars(module).items(), key=lambda kv: kv[0])]
        for obj in objects:
            members = [obj] + ([v for _, v in sorted(vars(obj).items())] if inspect.isclass(obj) else [])
            for member in members:
                doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                paragraph = " ".join((doc or "").split("\n\n")[0].split())
                if len(paragraph) >= 10:
                    seen.setdefault(paragraph)
                if len(seen) >= count:
                    return list(seen)
    raise SystemExit(f"only {len(seen)} docstrings found; ask for fewer with --items")


_pool_model = None


def _load_in_pool() -> None:
    global _pool_model
    from embsqlite import get_embedding_model

    _pool_model = get_embedding_model("minilm")
    _pool_model.embed("warm up")


def _embed_in_pool(texts: list[str]) -> int:
    assert _pool_model is not None
    return sum(1 for _ in _pool_model.embed_multi(texts))


def plain_processes(texts: list[str], workers: int, batch_size: int) -> float:
    """items/s of `workers` plain processes embedding the batches (no Dask, no database):
    what the cores this run can get allow, the ceiling for the cluster."""
    import multiprocessing

    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_load_in_pool) as pool:
        pool.map(_embed_in_pool, [["warm up"]] * workers * 2)
        start = time.perf_counter()
        assert sum(pool.map(_embed_in_pool, batches, chunksize=1)) == len(texts)
        return len(texts) / (time.perf_counter() - start)


def rows(collection) -> list[tuple]:
    return collection.conn.execute(
        "select id, embedding, content_hash from embeddings where collection_id = ? order by id",
        (collection.id,),
    ).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    import distributed

    import embsqlite
    from embsqlite import cluster

    texts = docstrings(args.items)
    items = [(f"doc{i:05d}", text) for i, text in enumerate(texts)]
    words = sum(len(text.split()) for text in texts) / len(texts)
    print(f"{len(texts)} stdlib docstrings, {words:.0f} words on average; batches of "
          f"{args.batch_size}; {os.cpu_count()} CPUs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        one = embsqlite.Collection("docs", Path(tmp) / "one.db", model_id="minilm")
        one.model().embed("warm up: the model is loaded before timing")
        start, cpu = time.perf_counter(), time.process_time()
        one.embed_multi(items, batch_size=args.batch_size)
        wall = time.perf_counter() - start
        single = len(items) / wall
        print(f"one process:                          {single:7.1f} items/s, "
              f"{(time.process_time() - cpu) / wall:.2f} cores obtained")

        with distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as local, distributed.Client(local) as client:
            both = embsqlite.Collection("docs", Path(tmp) / "cluster.db", model_id="minilm")
            spec = cluster.model_spec(both.model())
            client.run(lambda: cluster.worker_model(spec).embed("warm up"))  # on every worker
            before = sum(client.run(time.process_time).values()) + time.process_time()
            start = time.perf_counter()
            both.embed_multi(items, batch_size=args.batch_size, dask=client)
            wall = time.perf_counter() - start
            used = sum(client.run(time.process_time).values()) + time.process_time() - before
            spread = len(items) / wall
        print(f"LocalCluster, {args.workers} workers x 1 thread: {spread:7.1f} items/s, "
              f"{used / wall:.2f} cores obtained (workers and this process)")
        ceiling = plain_processes(texts, args.workers, args.batch_size)
        print(f"{args.workers} plain processes, no Dask (ceiling):  {ceiling:7.1f} items/s")
        identical = rows(one) == rows(both)
        print(f"stored vectors identical: {identical}")
        print(f"cluster / one process: {spread / single:.2f}x; plain processes / one process: "
              f"{ceiling / single:.2f}x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
        if autogroup.exists() and autogroup.read_text().strip() == "1":
            print("note: sched_autogroup is on: this session's processes share one CPU share, "
                  "so while other sessions are busy the workers cannot get more cores than "
                  "one process did")
        if not identical:
            sys.exit("the cluster stored other vectors than one process")


if __name__ == "__main__":
    main()
