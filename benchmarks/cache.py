"""Search time of one collection in each case of the vector cache, all measured in this run.

Two collections of N x D unit-length random float32 vectors (fixed seed) in one
llm-format file. Each case runs in a fresh process (so its peak memory is its own) and
times top-10 searches after the first two (the SQL search and the one that may load):

  no cache             EMBSQLITE_CACHE_MB=0: every search in SQLite (the peer)
  cached               the default budget: searches served by the cache
  a NULL row           one row's embedding is NULL (left out of the matrix, still cached)
  ids do not fit       a budget that holds the vectors and norms but not the ids
  two alternating      a budget for one collection; the two searched in turn
                       (ms is the mean over both collections)

Each row prints ms per search (median), its ratio to "no cache", how many times the
collection(s) were loaded, and the peak RSS the searches added (VmHWM, reset after opening)
against the budget. Every answer is checked equal to the SQL answer of the "no cache" run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/cache.py               # 60,000 x 384
    OPENBLAS_NUM_THREADS=1 python benchmarks/cache.py --rows 1000000
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import embsqlite  # noqa: E402
from embsqlite import transaction  # noqa: E402

MODEL_ID = "benchmark-random"
MIB = 2**20

# One case, in its own process: argv = path, JSON of {"names": [...], "searches": n}.
CHILD = r"""
import json, re, statistics, sys, time
import embsqlite
from embsqlite import cache

class RandomModel(embsqlite.EmbeddingModel):
    model_id = "benchmark-random"
    def embed_batch(self, items):
        raise NotImplementedError

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

path, spec = sys.argv[1], json.loads(sys.argv[2])
collections = [embsqlite.Collection(name, path, model=RandomModel()) for name in spec["names"]]
queries = spec["queries"]
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
base = status("VmRSS")
times, answers = [], []
for turn in range(2 * len(collections) + spec["searches"]):
    collection = collections[turn % len(collections)]
    query = queries[turn % len(queries)]
    start = time.perf_counter()
    found = collection.similar_by_vector(query, 10)
    elapsed = time.perf_counter() - start
    if turn >= 2 * len(collections):
        times.append(elapsed)
        answers.append([(e.id, e.score.hex()) for e in found])
print(json.dumps({
    "ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.mean(times),
    "loads": sum(getattr(c._cache, "loads", -1) for c in collections), "added": status("VmHWM") - base,
    "budget": cache.budget_bytes(), "answers": answers,
}))
"""


class RandomModel(embsqlite.EmbeddingModel):
    """Stands in for the collections' model; the benchmark only searches by vector."""

    model_id = MODEL_ID

    def embed_batch(self, items):
        raise NotImplementedError("the benchmark writes vectors directly")


def fill(path: str, name: str, rows: int, dim: int, seed: int) -> None:
    """A collection `name` of `rows` unit vectors with ids 'item-0000000'..."""
    collection = embsqlite.Collection(name, path, model=RandomModel())
    conn = collection.conn
    gen = np.random.default_rng(seed)
    now = int(time.time())
    for start in range(0, rows, 50_000):
        part = gen.standard_normal((min(50_000, rows - start), dim))
        part = (part / np.linalg.norm(part, axis=1, keepdims=True)).astype(np.float32)
        with transaction.transaction(conn):
            conn.executemany(
                "insert into embeddings (collection_id, id, embedding, content_hash, updated)"
                " values (?, ?, ?, ?, ?)",
                (
                    (collection.id, f"item-{start + i:07d}", row.tobytes(),
                     (seed * 10**9 + start + i).to_bytes(16, "little"), now)
                    for i, row in enumerate(part)
                ),
            )
    collection.close()


def run_case(path: str, names: list[str], budget_mb: float, queries: list, searches: int) -> dict:
    env = dict(os.environ, EMBSQLITE_CACHE_MB=repr(budget_mb))
    spec = json.dumps({"names": names, "queries": queries, "searches": searches})
    out = subprocess.run([sys.executable, "-c", CHILD, path, spec], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--searches", type=int, default=20, help="timed searches per case")
    args = parser.parse_args()
    rows, dim = args.rows, args.dim
    gen = np.random.default_rng(7)
    queries = gen.standard_normal((4, dim)).astype(np.float32).tolist()
    vectors_mb = rows * (4 * dim + 8) / MIB  # matrix and norms
    ids_mb = rows * (8 + sys.getsizeof("item-0000000")) / MIB  # list slots and strings
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cache.db")
        start = time.perf_counter()
        fill(path, "one", rows, dim, seed=1)
        fill(path, "two", rows, dim, seed=2)
        print(f"{rows:,} x {dim} float32 per collection: vectors and norms {vectors_mb:,.0f} "
              f"MiB, ids {ids_mb:,.1f} MiB; built two in {time.perf_counter() - start:.0f} s")
        full = vectors_mb + ids_mb
        cases = [
            ("no cache", ["one"], 0.0),
            ("cached", ["one"], 2 * full + 64),
            ("ids do not fit", ["one"], vectors_mb + ids_mb / 2),
            ("two alternating", ["one", "two"], 1.5 * full),
        ]
        results = {}
        for label, names, budget in cases:
            results[label] = run_case(path, names, budget, queries, args.searches)
        # the peer of the two-collection case: both searched in turn without a cache
        reference_two = run_case(path, ["one", "two"], 0.0, queries, args.searches)
        conn = embsqlite.connect(path)
        with conn:
            conn.execute("update embeddings set embedding = null where collection_id ="
                         " (select id from collections where name = 'one') and id = 'item-0000000'")
        conn.close()
        results["a NULL row"] = run_case(path, ["one"], 2 * full + 64, queries, args.searches)
        reference_null = run_case(path, ["one"], 0.0, queries, args.searches)
    peer = results["no cache"]["ms"]
    print(f"{'case':<18}{'ms/search':>11}{'vs no cache':>13}{'loads':>7}"
          f"{'VmHWM added':>14}{'budget':>12}  same answers as SQL")
    order = ["no cache", "cached", "a NULL row", "ids do not fit", "two alternating"]
    for label in order:
        r = results[label]
        ms = r["mean_ms"] if label == "two alternating" else r["ms"]
        want = {"two alternating": reference_two, "a NULL row": reference_null}.get(
            label, results["no cache"])["answers"]
        budget = f"{r['budget'] / MIB:,.0f} MiB" if r["budget"] else "off"
        print(f"{label:<18}{ms:>11.1f}{ms / peer:>12.2f}x{r['loads']:>7}"
              f"{r['added'] / MIB:>10,.0f} MiB{budget:>12}  {r['answers'] == want}")


if __name__ == "__main__":
    main()
