"""Collection against llm 0.36's Collection, on the same files, in one run.

Search: one database of N random float32 vectors (fixed seed, 384 dimensions by default)
in llm's schema. Median `similar_by_vector(query, number=10)` time of
  - embsqlite, first query of a fresh Collection (ranked in SQLite by the C function),
  - embsqlite, repeated queries of the same Collection (the vector cache may serve them),
  - llm 0.36's own `Collection.similar_by_vector` on the same file,
with the top-10 ids of both checked equal.

Ingestion: rows per second of `embed_multi` of the same generated texts with the hashing
model, embsqlite's Collection vs llm 0.36's Collection (the same model wrapped as an llm
embedding model), each into a new file, both at their default batch size (100).

    python benchmarks/collection.py                     # 100,000 x 384, 100,000 rows ingested
    python benchmarks/collection.py --rows 20000 --ingest 20000   # quicker
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import sqlite_utils  # noqa: E402

import embsqlite  # noqa: E402
from embsqlite.hashing import HashingModel  # noqa: E402

try:
    import llm
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs llm 0.36: pip install 'embsqlite[bench]'")


class LlmHashing(llm.EmbeddingModel):
    """embsqlite's hashing model as an llm embedding model (same id, same vectors)."""

    model_id = "hashing"
    supports_binary = True

    def __init__(self) -> None:
        self.inner = HashingModel()

    def embed_batch(self, items, key=None):
        return self.inner.embed_batch(list(items))


def build(path: str, rows: int, dims: int, seed: int) -> list[list[float]]:
    """Write `rows` random vectors as collection 'bench'; return some query vectors."""
    rng = np.random.default_rng(seed)
    collection = embsqlite.Collection("bench", path, model_id="hashing")
    conn = collection.conn
    chunk = 10_000
    for start in range(0, rows, chunk):
        matrix = rng.standard_normal((min(chunk, rows - start), dims)).astype("<f4")
        with embsqlite.transaction.transaction(conn):
            conn.executemany(
                "insert into embeddings (collection_id, id, embedding, content_hash, updated) "
                "values (?, ?, ?, ?, ?)",
                (
                    (collection.id, f"item{start + i:07d}", row.tobytes(),
                     embsqlite.ingest.content_hash(f"item{start + i}"), int(time.time()))
                    for i, row in enumerate(matrix)
                ),
            )
    collection.close()
    return rng.standard_normal((16, dims)).astype("<f4").astype(float).tolist()


CPU_TIMES: dict[str, list[float]] = {}


def timed(fn, label: str = "") -> tuple[float, object]:
    """Wall seconds of fn() (and its process CPU seconds, kept under `label`)."""
    cpu, start = time.process_time(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    CPU_TIMES.setdefault(label, []).append(time.process_time() - cpu)
    return wall, result


def bench_search(path: str, queries: list, repeats: int, llm_repeats: int) -> dict:
    ours = embsqlite.Collection("bench", path)
    first, first_result = timed(lambda: ours.similar_by_vector(queries[0], number=10), "first")
    repeated = []
    for query in queries[1 : 1 + repeats]:
        seconds, _ = timed(lambda q=query: ours.similar_by_vector(q, number=10), "repeated")
        repeated.append(seconds)
    theirs = llm.Collection("bench", sqlite_utils.Database(path))
    llm_times = []
    for i, query in enumerate(queries[:llm_repeats]):
        seconds, result = timed(lambda q=query: theirs.similar_by_vector(q, number=10), "llm")
        llm_times.append(seconds)
        mine = ours.similar_by_vector(query, number=10)
        if [e.id for e in result] != [e.id for e in mine]:
            raise SystemExit(f"top-10 differs from llm's for query {i}")
    if [e.id for e in first_result] != [e.id for e in ours.similar_by_vector(queries[0], number=10)]:
        raise SystemExit("first and repeated queries disagree")
    return {
        "first": first,
        "repeated": statistics.median(repeated),
        "llm": statistics.median(llm_times),
    }


def texts(count: int):
    words = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")
    for i in range(count):
        yield f"item{i}", f"{words[i % 8]} {words[(i // 8) % 8]} document {i} topic {i % 101}"


def bench_ingest(folder: str, count: int) -> dict:
    ours = embsqlite.Collection("ingest", os.path.join(folder, "ours.db"), model_id="hashing")
    ours_seconds, _ = timed(lambda: ours.embed_multi(texts(count)), "ingest ours")
    assert ours.count() == count
    db = sqlite_utils.Database(os.path.join(folder, "llm.db"))
    theirs = llm.Collection("ingest", db, model=LlmHashing())
    llm_seconds, _ = timed(lambda: theirs.embed_multi(texts(count)), "ingest llm")
    assert theirs.count() == count
    return {
        "ours": count / ours_seconds,
        "llm": count / llm_seconds,
        "ours cpu": count / CPU_TIMES["ingest ours"][-1],
        "llm cpu": count / CPU_TIMES["ingest llm"][-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="vectors searched")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--ingest", type=int, default=100_000, help="rows ingested")
    parser.add_argument("--repeats", type=int, default=9, help="embsqlite repeated queries")
    parser.add_argument("--llm-repeats", type=int, default=3, help="llm queries (slow)")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "search.db")
        queries = build(path, args.rows, args.dims, args.seed)
        search = bench_search(path, queries, args.repeats, args.llm_repeats)
        ingest = bench_ingest(folder, args.ingest)

    print(f"embsqlite {embsqlite.__version__}, llm {llm.__version__ if hasattr(llm, '__version__') else '0.36'}, "
          f"SQLite {embsqlite.connect().execute('select sqlite_version()').fetchone()[0]}")
    cpu = {key: statistics.median(CPU_TIMES[key]) for key in ("first", "repeated", "llm")}
    print(f"search: {args.rows:,} x {args.dims} float32, top 10, medians "
          "(wall clock; process CPU time, steadier on shared cores)")
    print(f"  {'method':<32}{'wall ms':>10}{'llm / this':>12}{'CPU ms':>10}{'llm / this':>12}")
    for label, key in (
        ("embsqlite first query (SQL, C)", "first"),
        ("embsqlite repeated queries", "repeated"),
        ("llm 0.36 Collection", "llm"),
    ):
        print(f"  {label:<32}{search[key] * 1000:>10,.1f}{search['llm'] / search[key]:>11,.1f}x"
              f"{cpu[key] * 1000:>10,.1f}{cpu['llm'] / cpu[key]:>11,.1f}x")
    print(f"ingestion: embed_multi of {args.ingest:,} texts, hashing model, default batch size")
    print(f"  {'method':<32}{'rows/s':>10}{'this / llm':>12}{'rows/CPU-s':>12}{'this / llm':>12}")
    for label, key in (("embsqlite Collection", "ours"), ("llm 0.36 Collection", "llm")):
        print(f"  {label:<32}{ingest[key]:>10,.0f}{ingest[key] / ingest['llm']:>11,.1f}x"
              f"{ingest[key + ' cpu']:>12,.0f}{ingest[key + ' cpu'] / ingest['llm cpu']:>11,.1f}x")

if __name__ == "__main__":
    main()
