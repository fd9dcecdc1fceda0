"""The first search of a new process, and the ones after it, against peers measured in this run.

Databases of N x 384 random unit float32 vectors (fixed seed) are written once with
embsqlite's `embed_multi` (so they keep change tokens) under the temporary directory, with
and without stored content (~835-byte texts), and reused by later runs (the paths are
printed; delete the directory to rebuild). Each case runs in new processes (median of
`--processes`), with the page cache warm (one untimed process first):

  embsqlite            Collection(...) then similar_by_vector: the first search (from the
                       vector file beside the database), the second, the median of 10 more;
                       and the slowest search after the first
  embsqlite build      the first search when the vector file is missing (it builds it)
  embsqlite SQL        the same with vector files and the cache off (EMBSQLITE_VECTOR_FILES=0,
                       EMBSQLITE_CACHE_MB=0): the SQL statement
  CLI                  `python -m embsqlite similar NAME ID` wall time, less `python -c pass`
  llm 0.36             llm.Collection.similar_by_vector on an llm-written copy (100k only:
                       llm writes ~1,800 rows/s and searches 1M in over a minute)
  sqlite-vec           vec_distance_cosine over our table (ORDER BY ... LIMIT 10)
  vec0                 a sqlite-vec vec0 table of the same vectors (KNN MATCH, k = 10)
  numpy                matrix @ query + argpartition on a float32 matrix in memory
  memory-read floor    summing the vector file's float32 matrix from a warm mapping, in a new
                       process (first touch) and again (mapped): what an exact float32
                       scan reads; embsqlite reads the file's int8 sketch (a quarter of
                       it) and the float32 rows of a few candidates, so it can beat it

Every embsqlite answer is compared (ids and score bits) with the SQL statement's answer.
numpy runs with OPENBLAS_NUM_THREADS=1 (set here, printed); the scan of the vector file
uses EMBSQLITE_SCAN_THREADS (default 2).

    python benchmarks/first_query.py                  # 100,000 and 1,000,000 rows
    python benchmarks/first_query.py --rows 100000 --processes 7
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import embsqlite  # noqa: E402
from embsqlite import vectorfile  # noqa: E402

DIM = 384
NAME = "bench"
CONTENT_BYTES = 835
MODEL_ID = "benchmark-matrix"
FILLER = ("The quick brown fox jumps over the lazy dog while the committee reviews the "
          "quarterly figures and the rain keeps falling on the old stone bridge. ") * 8

# A model that returns row n of a .npy matrix for a text starting with n (7 digits).
MODEL_SRC = r"""
import numpy as np
import embsqlite

class MatrixModel(embsqlite.EmbeddingModel):
    model_id = "benchmark-matrix"
    def __init__(self, npy=None):
        self.matrix = None if npy is None else np.load(npy, mmap_mode="r")
    def embed_batch(self, items):
        for item in items:
            text = item.decode() if isinstance(item, bytes) else item
            yield self.matrix[int(text[:7])].tolist()
"""

EMBSQLITE_CHILD = MODEL_SRC + r"""
import json, sys, time
t0 = time.perf_counter()
path, query, extra = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
collection = embsqlite.Collection("bench", path, model=MatrixModel())
t1 = time.perf_counter()
times, answers = [], []
for _ in range(2 + extra):
    start = time.perf_counter()
    found = collection.similar_by_vector(query, 10)
    times.append(1000 * (time.perf_counter() - start))
    answers.append([(e.id, e.score.hex()) for e in found])
prefixed = []  # a prefix of 10,000 ids (1% of 1M): rowids from the index, a subset scan
for _ in range(3):
    start = time.perf_counter()
    found = collection.similar_by_vector(query, 10, prefix="item-001")
    prefixed.append(1000 * (time.perf_counter() - start))
answers.append([(e.id, e.score.hex()) for e in found])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"open": 1000 * (t1 - t0), "times": times, "answers": answers, "prefix": prefixed,
                  "same": all(a == answers[0] for a in answers),
                  "builds": collection._vectors.builds,
                  "rss_mb": hwm_kb / 1024}))
"""

LLM_CHILD = r"""
import json, sys, time
import llm, sqlite_utils
path, query, searches = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
collection = llm.Collection("bench", sqlite_utils.Database(path))
times, answers = [], []
for _ in range(searches):
    start = time.perf_counter()
    found = collection.similar_by_vector(query, 10)
    times.append(1000 * (time.perf_counter() - start))
    answers.append([e.id for e in found])
print(json.dumps({"times": times, "answers": answers}))
"""

VEC_CHILD = r"""
import json, struct, sys, time
import sqlite_vec
from pysqlite3 import dbapi2 as sqlite3  # the stdlib module here cannot load extensions
path, query, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
conn = sqlite3.connect(path)
conn.enable_load_extension(True)
sqlite_vec.load(conn)
blob = struct.pack(f"<{len(query)}f", *query)
if mode == "function":
    sql = ("select id, vec_distance_cosine(embedding, ?) as d from embeddings"
           " where collection_id = (select id from collections where name = 'bench')"
           " order by d limit 10")
    params = (blob,)
else:
    sql = "select rowid, distance from vec_items where embedding match ? and k = 10"
    params = (blob,)
times = []
for _ in range(2):
    start = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    times.append(1000 * (time.perf_counter() - start))
print(json.dumps({"times": times, "answers": [r[0] for r in rows]}))
"""

NUMPY_CHILD = r"""
import json, sys, time
import numpy as np
npy, query = sys.argv[1], np.asarray(json.loads(sys.argv[2]), dtype=np.float32)
matrix = np.array(np.load(npy, mmap_mode="r"))  # in memory, off the clock
times = []
for _ in range(7):
    start = time.perf_counter()
    scores = matrix @ query
    top = np.argpartition(-scores, 10)[:10]
    top = top[np.argsort(-scores[top])]
    times.append(1000 * (time.perf_counter() - start))
print(json.dumps({"times": times}))
"""

FLOOR_CHILD = r"""
import json, mmap, sys, time
import numpy as np
path, length = sys.argv[1], int(sys.argv[2])
times = []
start = time.perf_counter()
with open(path, "rb") as f:  # mapped as vectorfile maps its sketch, the mapping's cost included
    m = mmap.mmap(f.fileno(), length, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                  prot=mmap.PROT_READ)
view = np.frombuffer(m, dtype=np.uint8)
view = view[: len(view) // 8 * 8].view(np.uint64)
for _ in range(3):
    view.sum()
    times.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
print(json.dumps({"times": times}))
"""


def workdir() -> str:
    path = os.path.join(tempfile.gettempdir(), "embsqlite-first-query")
    os.makedirs(path, exist_ok=True)
    return path


def matrix_file(rows: int) -> str:
    """A .npy of `rows` random unit float32 vectors (seed 1), made once."""
    path = os.path.join(workdir(), f"vectors-{rows}.npy")
    if not os.path.exists(path):
        gen = np.random.default_rng(1)
        out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32,
                                        shape=(rows, DIM))
        for start in range(0, rows, 100_000):
            part = gen.standard_normal((min(100_000, rows - start), DIM))
            out[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(path + ".tmp.npy", path)
    return path


def _texts(rows: int, content: bool):
    for n in range(rows):
        yield f"item-{n:07d}", (f"{n:07d} " + FILLER)[:CONTENT_BYTES] if content else f"{n:07d}"


def database(rows: int, content: bool) -> str:
    """A database written by embsqlite's embed_multi (tracked), made once."""
    path = os.path.join(workdir(), f"embsqlite-{rows}{'-content' if content else ''}.db")
    if os.path.exists(path):
        return path
    namespace: dict[str, Any] = {}
    exec(MODEL_SRC, namespace)
    model = namespace["MatrixModel"](matrix_file(rows))
    start = time.perf_counter()
    collection = embsqlite.Collection(NAME, path + ".tmp", model=model)
    collection.embed_multi(_texts(rows, content), store=content, batch_size=1000)
    collection.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + ".tmp" + suffix):
            os.replace(path + ".tmp" + suffix, path + suffix)
    for name in os.listdir(workdir()):
        if name.startswith(os.path.basename(path) + ".tmp"):
            os.unlink(os.path.join(workdir(), name))
    print(f"  wrote {path} in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def llm_database(rows: int) -> str:
    """The same vectors written by llm 0.36's own embed_multi (no stored content)."""
    path = os.path.join(workdir(), f"llm-{rows}.db")
    if os.path.exists(path):
        return path
    import llm
    import sqlite_utils

    npy = np.load(matrix_file(rows), mmap_mode="r")

    class LlmMatrix(llm.EmbeddingModel):
        model_id = MODEL_ID

        def embed_batch(self, items):
            for text in items:
                yield npy[int(text[:7])].tolist()

    start = time.perf_counter()
    collection = llm.Collection(NAME, sqlite_utils.Database(path + ".tmp"), model=LlmMatrix())
    collection.embed_multi(((id_, text) for id_, text in _texts(rows, False)), batch_size=1000)
    os.replace(path + ".tmp", path)
    print(f"  wrote {path} with llm in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def vec0_database(rows: int) -> str:
    """A sqlite-vec vec0 table of the same vectors (rowid n = item n)."""
    path = os.path.join(workdir(), f"vec0-{rows}.db")
    if os.path.exists(path):
        return path
    import sqlite_vec
    from pysqlite3 import dbapi2

    conn = dbapi2.connect(path + ".tmp")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.execute(f"create virtual table vec_items using vec0(embedding float[{DIM}] distance_metric=cosine)")
    npy = np.load(matrix_file(rows), mmap_mode="r")
    for start in range(0, rows, 10_000):
        conn.executemany("insert into vec_items (rowid, embedding) values (?, ?)",
                         ((start + i, row.tobytes()) for i, row in enumerate(npy[start:start + 10_000])))
        conn.commit()
    conn.close()
    os.replace(path + ".tmp", path)
    return path


def child(source: str, *args: Any, env: Optional[dict] = None) -> dict:
    out = subprocess.run([sys.executable, "-c", source, *map(str, args)], check=True,
                         capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_of(runs: list[dict], pick) -> float:
    return statistics.median(pick(r) for r in runs)


def measure(rows: int, processes: int, with_llm: bool) -> list[dict]:
    """Every case at `rows` rows; one dict per case."""
    query = np.random.default_rng(99).standard_normal(DIM).astype(np.float32)
    query = (query / np.linalg.norm(query)).astype(np.float32).tolist()
    q = json.dumps(query)
    results: list[dict] = []
    sql_env = {"EMBSQLITE_VECTOR_FILES": "0", "EMBSQLITE_CACHE_MB": "0"}
    for content in (False, True):
        path = database(rows, content)
        label = "with content" if content else "no content"
        file = vectorfile.file_path(os.path.abspath(path), 1)
        # the first search of all, which builds the file
        if os.path.exists(file):
            os.unlink(file)
        build = child(EMBSQLITE_CHILD, path, q, 0)
        child(EMBSQLITE_CHILD, path, q, 0)  # warm
        runs = [child(EMBSQLITE_CHILD, path, q, 10) for _ in range(processes)]
        sql = [child(EMBSQLITE_CHILD, path, q, 0, env=sql_env) for _ in range(processes)]
        want, want_prefix = sql[0]["answers"][0], sql[0]["answers"][-1]
        exact = all(a == want for r in runs + [build] for a in r["answers"][:-1]) and all(
            r["answers"][-1] == want_prefix for r in runs + [build])
        results.append({
            "rows": rows, "case": f"embsqlite, {label}", "open_ms": median_of(runs, lambda r: r["open"]),
            "first_ms": median_of(runs, lambda r: r["times"][0]),
            "second_ms": median_of(runs, lambda r: r["times"][1]),
            "repeated_ms": median_of(runs, lambda r: statistics.median(r["times"][2:])),
            # each later search's median over the processes, the slowest of them / the first's
            "slowest_after_first": max(median_of(runs, lambda r, i=i: r["times"][i])
                                       for i in range(1, 12)) / median_of(runs, lambda r: r["times"][0]),
            "exact": exact, "builds": sum(r["builds"] for r in runs),
            "rss_mb": median_of(runs, lambda r: r["rss_mb"]),
            "prefix_ms": median_of(runs, lambda r: statistics.median(r["prefix"])),
        })
        results.append({"rows": rows, "case": f"embsqlite build, {label}",
                        "first_ms": build["times"][0], "second_ms": build["times"][1],
                        "exact": exact, "builds": build["builds"]})
        results.append({"rows": rows, "case": f"embsqlite SQL, {label}",
                        "first_ms": median_of(sql, lambda r: r["times"][0]),
                        "second_ms": median_of(sql, lambda r: r["times"][1]),
                        "prefix_ms": median_of(sql, lambda r: statistics.median(r["prefix"]))})
        if not content:
            walls = []
            bare = []
            for _ in range(processes):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "embsqlite", "similar", NAME, "item-0000042",
                                "-d", path], check=True, capture_output=True)
                walls.append(1000 * (time.perf_counter() - start))
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                bare.append(1000 * (time.perf_counter() - start))
            results.append({"rows": rows, "case": "CLI similar (wall, less python -c pass)",
                            "first_ms": statistics.median(walls) - statistics.median(bare)})
            floor_file = file
    if with_llm:
        path = llm_database(rows)
        child(LLM_CHILD, path, q, 1)
        runs = [child(LLM_CHILD, path, q, 1) for _ in range(processes)]
        second = child(LLM_CHILD, path, q, 2)
        results.append({"rows": rows, "case": "llm 0.36", "first_ms": median_of(runs, lambda r: r["times"][0]),
                        "second_ms": second["times"][1],
                        "same_ids": runs[0]["answers"][0] == [i for i, _ in want]})
    path = database(rows, False)
    runs = [child(VEC_CHILD, path, q, "function") for _ in range(max(3, processes // 2))]
    results.append({"rows": rows, "case": "sqlite-vec vec_distance_cosine",
                    "first_ms": median_of(runs, lambda r: r["times"][0]),
                    "second_ms": median_of(runs, lambda r: r["times"][1])})
    path = vec0_database(rows)
    child(VEC_CHILD, path, q, "vec0")
    runs = [child(VEC_CHILD, path, q, "vec0") for _ in range(processes)]
    results.append({"rows": rows, "case": "sqlite-vec vec0",
                    "first_ms": median_of(runs, lambda r: r["times"][0]),
                    "second_ms": median_of(runs, lambda r: r["times"][1])})
    runs = [child(NUMPY_CHILD, matrix_file(rows), q) for _ in range(3)]
    results.append({"rows": rows, "case": f"numpy in memory (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})",
                    "first_ms": median_of(runs, lambda r: statistics.median(r["times"]))})
    # the float32 vectors: what an exact scan of float32 (numpy's, or ours before the
    # sketch) must read at least once
    matrix_bytes = vectorfile.HEADER_BYTES + rows * DIM * 4
    runs = [child(FLOOR_CHILD, floor_file, matrix_bytes) for _ in range(processes)]
    results.append({"rows": rows, "case": "memory-read floor: sum the float32 vectors (map+first, again)",
                    "first_ms": median_of(runs, lambda r: r["times"][0]),
                    "second_ms": median_of(runs, lambda r: r["times"][1])})
    return results


def run(rows: tuple[int, ...] = (100_000, 1_000_000), processes: int = 5,
        llm_rows: int = 100_000) -> list[dict]:
    """Measure every case at each size; llm only at `llm_rows` rows."""
    results = []
    for n in rows:
        results += measure(n, processes, with_llm=n <= llm_rows)
    return results


def report(results: list[dict]) -> None:
    print(f"{'rows':>10}  {'case':<52}{'open':>8}{'first':>10}{'second':>10}{'repeated':>10}  notes")
    for r in results:
        cells = [f"{r[key]:>10.1f}" if key in r else f"{'':>10}" for key in ("first_ms", "second_ms", "repeated_ms")]
        opened = f"{r['open_ms']:>8.1f}" if "open_ms" in r else f"{'':>8}"
        notes = []
        if "exact" in r:
            notes.append(f"same ids and score bits as SQL: {r['exact']}")
        if "slowest_after_first" in r:
            notes.append(f"slowest later search / first {r['slowest_after_first']:.2f}")
        if "rss_mb" in r:
            notes.append(f"peak RSS {r['rss_mb']:.0f} MB")
        if "prefix_ms" in r:
            notes.append(f"prefix of 10,000 ids {r['prefix_ms']:.1f} ms")
        if "same_ids" in r:
            notes.append(f"same ids as embsqlite: {r['same_ids']}")
        print(f"{r['rows']:>10,}  {r['case']:<52}{opened}{''.join(cells)}  {'; '.join(notes)}")
    print()
    for n in sorted({r["rows"] for r in results}):
        by = {r["case"]: r for r in results if r["rows"] == n}
        ours = by["embsqlite, no content"]
        first = ours["first_ms"]
        numpy_case = next(v for k, v in by.items() if k.startswith("numpy"))
        lines = [f"{n:,} rows:"]
        if "llm 0.36" in by:
            ratio = by["llm 0.36"]["first_ms"] / first
            lines.append(f"  vs llm 0.36: {ratio:,.0f}x faster (goal >= 150x): {ratio >= 150}")
        ratio = first / numpy_case["first_ms"]
        lines.append(f"  first / numpy in memory: {ratio:.2f} (goal <= 1.5): {ratio <= 1.5}")
        if n >= 1_000_000:
            lines.append(f"  first at 1M: {first:.0f} ms (goal <= 150): {first <= 150}")
        content = by["embsqlite, with content"]["first_ms"] / first
        lines.append(f"  with content / without: {content:.2f} (goal: as fast)")
        for key in ("embsqlite, no content", "embsqlite, with content"):
            slow = by[key]["slowest_after_first"]
            lines.append(f"  {key}: slowest later search / first {slow:.2f} (goal <= 1): {slow <= 1}")
        ratio = ours["repeated_ms"] / numpy_case["first_ms"]
        lines.append(f"  repeated / numpy: {ratio:.2f} (goal <= 1): {ratio <= 1}")
        print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="sizes (default 100,000 and 1,000,000)")
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--llm-rows", type=int, default=100_000, help="largest size llm is measured at")
    args = parser.parse_args()
    print(f"databases in {workdir()} (reused; delete the directory to rebuild)")
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"EMBSQLITE_SCAN_THREADS={vectorfile.threads()}, {os.cpu_count()} CPUs; medians of "
          f"{args.processes} new processes (shared machine: timings are noisy)")
    report(run(tuple(args.rows or (100_000, 1_000_000)), args.processes, args.llm_rows))


if __name__ == "__main__":
    main()
