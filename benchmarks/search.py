"""Top-10 search time of embsqlite against its peers, all measured in this run.

For each size (N vectors x D dimensions, unit-normalised random float32, fixed seed) it
builds one llm-format database file and times, on a warm page cache:

  embsqlite first        Collection.similar_by_vector, first query of a fresh Collection
                         (ranked in SQLite by the C cosine_similarity)
  embsqlite repeated     the same Collection, later queries (served by the vector cache)
  embsqlite SQL          raw `ORDER BY cosine_similarity(embedding, ?) DESC LIMIT 10`
  llm 0.36               llm.Collection.similar_by_vector (skipped from 1,000,000 rows)
  sqlite-vec function    `ORDER BY vec_distance_cosine(embedding, ?) LIMIT 10` on the same blobs
  sqlite-vec vec0        a vec0 virtual table of the same vectors, `MATCH ? AND k = 10`
  numpy                  normalised matrix already in memory, one thread, argpartition
  floor                  one read pass over the matrix bytes (numpy, one thread)

Every method's top-10 ids are checked against numpy's. Each row prints the median
time and its ratio to embsqlite repeated (and to embsqlite first / SQL, where the cache's
speed-up is judged). Then the peak RSS of a 1,000,000-row search without the cache
and with it, each in its own process.

    OPENBLAS_NUM_THREADS=1 python benchmarks/search.py          # all sizes, a few minutes
    OPENBLAS_NUM_THREADS=1 python benchmarks/search.py --quick  # 10,000 and 100,000 only
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

import embsqlite  # noqa: E402
from embsqlite import transaction  # noqa: E402

K = 10
MODEL_ID = "benchmark-random"


class RandomModel(embsqlite.EmbeddingModel):
    """Stands in for the collection's model; the benchmark only searches by vector."""

    model_id = MODEL_ID

    def embed_batch(self, items):
        raise NotImplementedError("the benchmark writes vectors directly")


def make_vectors(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    gen = np.random.default_rng(seed)
    matrix = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 100_000):  # in slices, to keep float64 temporaries small
        part = gen.standard_normal((min(100_000, rows - start), dim))
        matrix[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return matrix


def build(path: str, matrix: np.ndarray) -> None:
    """An llm-format database with one collection holding `matrix` (ids 'item-000000...')."""
    collection = embsqlite.Collection("bench", path, model=RandomModel())
    conn = collection.conn
    now = int(time.time())
    with transaction.transaction(conn):
        conn.executemany(
            "insert into embeddings (collection_id, id, embedding, content_hash, updated) "
            "values (?, ?, ?, ?, ?)",
            (
                (collection.id, f"item-{i:07d}", row.tobytes(), i.to_bytes(16, "little"), now)
                for i, row in enumerate(matrix)
            ),
        )
    collection.close()


def median_time(func: Callable[[], list], repeat: int) -> tuple[float, list]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def numpy_top(normalised: np.ndarray, query: np.ndarray) -> list[int]:
    scores = normalised @ query
    top = np.argpartition(-scores, K)[:K]
    return [int(i) for i in top[np.lexsort((top, -scores[top]))]]


def ids(rows) -> list[int]:
    return [int(str(r).rsplit("-", 1)[1]) for r in rows]


def measure(rows: int, dim: int, repeat: int, with_llm: bool) -> list[tuple[str, float, bool]]:
    matrix = make_vectors(rows, dim)
    queries = make_vectors(repeat + 1, dim, seed=1)
    results: list[tuple[str, float, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        build(path, matrix)
        # numpy's ranking is the reference; also warms the page cache of the file
        reference = [numpy_top(matrix, q) for q in queries]
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass

        def check(found_per_query) -> bool:
            return all(found == reference[i] for i, found in enumerate(found_per_query))

        # embsqlite through the Collection API: first query, then repeated queries
        collection = embsqlite.Collection("bench", path)
        start = time.perf_counter()
        first = collection.similar_by_vector(queries[0].tolist(), K)
        first_time = time.perf_counter() - start
        results.append(("embsqlite Collection, first query", first_time,
                        ids(e.id for e in first) == reference[0]))
        found, times = [], []
        for q in queries[1:]:
            start = time.perf_counter()
            found.append(ids(e.id for e in collection.similar_by_vector(q.tolist(), K)))
            times.append(time.perf_counter() - start)
        results.append(("embsqlite Collection, repeated", statistics.median(times[1:]),
                        all(f == reference[i + 1] for i, f in enumerate(found))))
        results.append(("  (second query: loads the cache)", times[0], True))

        conn = collection.conn
        blobs = [q.tobytes() for q in queries]
        sql = ("select id from embeddings where collection_id = ? "
               "order by cosine_similarity(embedding, ?) desc, id limit ?")
        counter = iter(range(10**9))
        elapsed, _ = median_time(
            lambda: ids(r[0] for r in conn.execute(sql, (collection.id, blobs[next(counter) % len(blobs)], K))),
            repeat,
        )
        sql_ok = check([ids(r[0] for r in conn.execute(sql, (collection.id, b, K))) for b in blobs[:3]])
        results.append(("embsqlite raw SQL ORDER BY cosine_similarity", elapsed, sql_ok))
        collection.close()

        if with_llm:
            results.append(llm_row(path, queries, reference))
        results.extend(sqlite_vec_rows(path, matrix, queries, reference, repeat))

        normalised = matrix  # already unit length, as numpy users would keep it
        elapsed, _ = median_time(lambda: numpy_top(normalised, queries[1]), repeat)
        results.append(("numpy in memory (one thread)", elapsed, True))
        elapsed, _ = median_time(lambda: matrix.view(np.uint32).max(), repeat)
        results.append(("floor: one read pass over the matrix", elapsed, True))
    return results


def llm_row(path: str, queries: np.ndarray, reference: list) -> tuple[str, float, bool]:
    import llm
    import sqlite_utils

    collection = llm.Collection("bench", sqlite_utils.Database(path))
    times, ok = [], True
    for i in range(2):
        start = time.perf_counter()
        found = collection.similar_by_vector(queries[i].tolist(), K)
        times.append(time.perf_counter() - start)
        ok = ok and ids(e.id for e in found) == reference[i]
    return ("llm 0.36 Collection.similar_by_vector", statistics.median(times), ok)


def sqlite_vec_rows(path, matrix, queries, reference, repeat):
    try:
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec
    except ImportError:
        return []
    conn = sqlite3.connect(path)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    rows = []
    sql = ("select id from embeddings where collection_id = 1 "
           "order by vec_distance_cosine(embedding, ?), id limit ?")
    counter = iter(range(10**9))
    elapsed, _ = median_time(
        lambda: conn.execute(sql, (queries[next(counter) % len(queries)].tobytes(), K)).fetchall(),
        repeat,
    )
    ok = all(ids(r[0] for r in conn.execute(sql, (q.tobytes(), K))) == reference[i]
             for i, q in enumerate(queries[:3]))
    rows.append(("sqlite-vec vec_distance_cosine ORDER BY", elapsed, ok))

    dim = matrix.shape[1]
    conn.execute(f"create virtual table vec_items using vec0(embedding float[{dim}] distance_metric=cosine)")
    conn.executemany("insert into vec_items(rowid, embedding) values (?, ?)",
                     ((i, row.tobytes()) for i, row in enumerate(matrix)))
    conn.commit()
    knn = "select rowid from vec_items where embedding match ? and k = ? order by distance"
    counter = iter(range(10**9))
    elapsed, _ = median_time(
        lambda: conn.execute(knn, (queries[next(counter) % len(queries)].tobytes(), K)).fetchall(),
        repeat,
    )
    ok = all([r[0] for r in conn.execute(knn, (q.tobytes(), K))] == reference[i]
             for i, q in enumerate(queries[:3]))
    rows.append(("sqlite-vec vec0 virtual table, k=10", elapsed, ok))
    conn.close()
    return rows


def print_table(rows: int, dim: int, results) -> None:
    base = dict((name, t) for name, t, _ in results)["embsqlite Collection, repeated"]
    print(f"\n{rows:,} x {dim} float32, top-{K}, median ms per query")
    print(f"{'method':48} {'ms':>10} {'x embsqlite repeated':>21} {'top-10 = numpy':>15}")
    for name, seconds, ok in results:
        print(f"{name:48} {seconds * 1e3:10.1f} {seconds / base:20.2f}x {'yes' if ok else 'NO':>15}")


RSS_SCRIPT = """
import os, sys
os.environ["EMBSQLITE_CACHE_MB"] = sys.argv[2]
import embsqlite


def status(field):  # kB, from /proc (ru_maxrss would include the parent's, from before exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


c = embsqlite.Collection("bench", sys.argv[1])
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
q = [1.0] * int(sys.argv[3])
for _ in range(3):
    c.similar_by_vector(q, 10)
print((status("VmHWM") - before) / 1024, c._cache.nbytes / 2**20)
"""


def rss_rows(rows: int, dim: int) -> None:
    """Peak RSS added by searching (KiB from ru_maxrss), without and with the cache."""
    matrix = make_vectors(rows, dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rss.db")
        build(path, matrix)
        del matrix
        print(f"\npeak RSS added by 3 searches over {rows:,} x {dim} "
              f"(matrix = {rows * dim * 4 / 2**20:,.0f} MiB)")
        for label, budget in (("cache off", "0"), ("cache on", "4096")):
            out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, path, budget, str(dim)],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"  {label:10} {float(out[0]):8,.0f} MiB  (cache holds {float(out[1]):,.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description="embsqlite search benchmark")
    parser.add_argument("--quick", action="store_true", help="only 10,000 and 100,000 x 384")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    embsqlite.register_embedding_model(RandomModel())
    sizes = [(10_000, 384), (100_000, 384)]
    if not args.quick:
        sizes += [(1_000_000, 384), (100_000, 1536)]
    everything = {}
    for rows, dim in sizes:
        results = measure(rows, dim, args.repeat, with_llm=rows < 1_000_000)
        print_table(rows, dim, results)
        everything[f"{rows}x{dim}"] = results
    if not args.quick:
        rss_rows(1_000_000, 384)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
