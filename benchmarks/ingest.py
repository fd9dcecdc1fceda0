"""Bulk ingestion: embsqlite against raw SQLite, LanceDB and llm 0.36, in one run.

Each measurement runs in its own process, into a new file under the temp folder, and
reports rows per second and the process's peak RSS. The rows are the same everywhere:
id `id0000000`..., a short distinct text, a 256-dimension float32 vector.

- `embsqlite precomputed`: Collection.embed_multi (batch size 100) with a model that
  returns stored float32 vectors (it costs nothing), so what is measured is the write path;
- `embsqlite hashing`: the same with the built-in hashing model;
- `... +trigger`: both again with an `after insert` trigger on embeddings keeping a change
  token in a small table (`embsqlite_changes`), as a change counter would;
- `raw executemany /100`, `raw executemany one txn`: the rows (MD5 content hash, stored
  vectors) inserted with `executemany` into llm's schema on a connection with embsqlite's
  settings, committing every 100 rows or once;
- `lancedb add`: `table.add` of a pyarrow table of (id, vector, text), built beforehand
  (the add alone is timed);
- `llm 0.36`: llm's Collection.embed_multi with a model returning stored vectors (lists of
  floats, as llm's models do); at --llm-sizes only (100,000 rows by default: at about
  2,000 rows/s, 1,000,000 rows would take nearly ten minutes).

Then the goals as ratios: embsqlite precomputed at 100,000 rows against 100,000 rows/s,
at 1,000,000 rows against LanceDB's add in the same run, hashing against precomputed
(goal: at least 0.8), and peak RSS at 1,000,000 rows against 100,000 (flat: about 1).
With --repeat N each measurement runs N times and the median is shown. Timings on a
shared machine are noisy: compare ratios within one run. `rows/cpu-s` divides by the
process's CPU time (user + system) instead, which other processes inflate less; LanceDB
uses several threads, so its CPU time can exceed its wall time.

    OPENBLAS_NUM_THREADS=1 python benchmarks/ingest.py                  # 100,000 and 1,000,000 rows
    OPENBLAS_NUM_THREADS=1 python benchmarks/ingest.py --sizes 100000 --repeat 3

`run(sizes)` returns the measurements as a list of dicts, for other scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

DIMENSIONS = 256
POOL = 4096  # distinct stored vectors the precomputed models cycle through

CASES = (
    "embsqlite precomputed",
    "embsqlite hashing",
    "embsqlite precomputed +trigger",
    "embsqlite hashing +trigger",
    "raw executemany /100",
    "raw executemany one txn",
    "lancedb add",
    "llm 0.36",
)

CHILD = r'''
import hashlib, itertools, json, os, random, resource, struct, sys, time
case, rows, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
DIM, POOL = int(sys.argv[4]), int(sys.argv[5])
path = os.path.join(folder, "bench.db")
rng = random.Random(7)

def unit(n):
    v = [rng.gauss(0.0, 1.0) for _ in range(n)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]

floats = [unit(DIM) for _ in range(POOL)]
blobs = [struct.pack(f"<{DIM}f", *v) for v in floats]

def text(i):
    return f"w{i % 997} v{(i // 997) % 991} t{i % 7} u{(i // 7) % 983}"

def pairs():
    return ((f"id{i:07d}", text(i)) for i in range(rows))

TRIGGER = [
    "create table embsqlite_changes(collection_id integer primary key, token integer not null)",
    "create trigger embsqlite_bench_changes after insert on embeddings begin "
    "insert into embsqlite_changes(collection_id, token) values (new.collection_id, random()) "
    "on conflict(collection_id) do update set token = excluded.token; end",
]
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

elapsed = None
if case.startswith("embsqlite"):
    import embsqlite
    if "precomputed" in case:
        class Precomputed(embsqlite.EmbeddingModel):
            model_id = "precomputed"
            def __init__(self):
                self.cycle = itertools.cycle(blobs)
            def embed_batch(self, items):
                return [next(self.cycle) for _ in items]
        collection = embsqlite.Collection("bench", path, model=Precomputed())
    else:
        collection = embsqlite.Collection("bench", path, model_id="hashing")
    if "+trigger" in case:
        for sql in TRIGGER:
            collection.conn.execute(sql)
    start, cpu_start = time.perf_counter(), cpu()
    collection.embed_multi(pairs())
    elapsed, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    assert collection.count() == rows
    collection.close()
elif case.startswith("raw"):
    from embsqlite import dbfile, schema
    conn = dbfile.connect(path)
    conn.isolation_level = None
    schema.ensure_schema(conn)
    conn.execute("insert into collections (name, model) values ('bench', 'precomputed')")
    every = 100 if "/100" in case else rows
    sql = ("insert or replace into embeddings (collection_id, id, embedding, content, "
           "content_blob, content_hash, metadata, updated) values (?, ?, ?, ?, ?, ?, ?, ?)")
    cycle = itertools.cycle(blobs)
    start, cpu_start = time.perf_counter(), cpu()
    source = pairs()
    while True:
        now = int(time.time())
        chunk = [(1, id_, next(cycle), None, None, hashlib.md5(t.encode()).digest(), None, now)
                 for id_, t in itertools.islice(source, every)]
        if not chunk:
            break
        conn.execute("begin immediate")
        conn.executemany(sql, chunk)
        conn.execute("commit")
    elapsed, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    assert conn.execute("select count(*) from embeddings").fetchone()[0] == rows
    conn.close()
elif case.startswith("lancedb"):
    import lancedb, numpy, pyarrow
    ids, texts = zip(*pairs())
    matrix = numpy.frombuffer(b"".join(itertools.islice(itertools.cycle(blobs), rows)), dtype="<f4")
    vectors = pyarrow.FixedSizeListArray.from_arrays(pyarrow.array(matrix), DIM)
    data = pyarrow.table({"id": pyarrow.array(ids), "vector": vectors, "text": pyarrow.array(texts)})
    db = lancedb.connect(os.path.join(folder, "lance"))
    table = db.create_table("bench", schema=data.schema)
    start, cpu_start = time.perf_counter(), cpu()
    table.add(data)
    elapsed, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    assert table.count_rows() == rows
elif case.startswith("llm"):
    import llm
    import sqlite_utils
    class Stored(llm.EmbeddingModel):
        model_id = "precomputed"
        batch_size = 100
        def __init__(self):
            self.cycle = itertools.cycle(floats)
        def embed_batch(self, items):
            return [next(self.cycle) for _ in items]
    collection = llm.Collection("bench", sqlite_utils.Database(path), model=Stored())
    start, cpu_start = time.perf_counter(), cpu()
    collection.embed_multi(pairs(), batch_size=100)
    elapsed, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
    assert collection.count() == rows
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu_seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def measure(case: str, rows: int) -> dict:
    """One measurement of `case` at `rows` rows, in a new process and a new folder."""
    with tempfile.TemporaryDirectory(prefix="embsqlite-ingest-") as folder:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
        done = subprocess.run(
            [sys.executable, "-c", CHILD, case, str(rows), folder, str(DIMENSIONS), str(POOL)],
            capture_output=True, text=True, env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{case} at {rows} rows failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"case": case, "rows": rows, "seconds": result["seconds"],
            "rows_per_s": rows / result["seconds"], "peak_rss_mib": result["peak_rss_mib"],
            "rows_per_cpu_s": rows / result["cpu_seconds"]}


def run(sizes: list[int], cases: Optional[list[str]] = None, repeat: int = 1,
        llm_sizes: Optional[list[int]] = None) -> list[dict]:
    """Measure each case at each size (llm only at `llm_sizes`, default 100,000), each
    `repeat` times; one dict per (case, size) with the medians and every rate seen."""
    llm_sizes = [100_000] if llm_sizes is None else llm_sizes
    results = []
    for rows in sizes:
        for case in cases or CASES:
            if case == "llm 0.36" and rows not in llm_sizes:
                continue
            runs = []
            for _ in range(repeat):
                runs.append(measure(case, rows))
                print(f"  {case} at {rows:,} rows: {runs[-1]['rows_per_s']:,.0f} rows/s",
                      file=sys.stderr, flush=True)
            results.append({
                "case": case, "rows": rows,
                "rows_per_s": statistics.median(r["rows_per_s"] for r in runs),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                "rows_per_cpu_s": statistics.median(r["rows_per_cpu_s"] for r in runs),
                "all_rows_per_s": [round(r["rows_per_s"]) for r in runs],
            })
    return results


def goals(results: list[dict]) -> list[tuple[str, Optional[float]]]:
    """The product goals as ratios (>= 1 met; hashing's goal is >= 0.8)."""
    rate = {(r["case"], r["rows"]): r["rows_per_s"] for r in results}
    rss = {(r["case"], r["rows"]): r["peak_rss_mib"] for r in results}

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or b is None else a / b

    lines: list[tuple[str, Optional[float]]] = [
        ("precomputed at 100,000 rows / 100,000 rows/s (goal >= 1)",
         ratio(rate.get(("embsqlite precomputed", 100_000)), 100_000.0)),
        ("precomputed / lancedb add at 1,000,000 rows (goal > 1)",
         ratio(rate.get(("embsqlite precomputed", 1_000_000)), rate.get(("lancedb add", 1_000_000)))),
        ("precomputed / lancedb add at 100,000 rows",
         ratio(rate.get(("embsqlite precomputed", 100_000)), rate.get(("lancedb add", 100_000)))),
    ]
    for rows in sorted({r["rows"] for r in results}):
        for suffix in ("", " +trigger"):
            lines.append((f"hashing / precomputed{suffix} at {rows:,} rows (goal >= 0.8)",
                          ratio(rate.get(("embsqlite hashing" + suffix, rows)),
                                rate.get(("embsqlite precomputed" + suffix, rows)))))
        lines.append((f"precomputed / raw executemany one txn at {rows:,} rows",
                       ratio(rate.get(("embsqlite precomputed", rows)),
                             rate.get(("raw executemany one txn", rows)))))
        lines.append((f"precomputed / llm 0.36 at {rows:,} rows",
                      ratio(rate.get(("embsqlite precomputed", rows)), rate.get(("llm 0.36", rows)))))
    for case in ("embsqlite precomputed", "embsqlite hashing"):
        lines.append((f"{case} peak RSS 1,000,000 / 100,000 rows (flat: ~1)",
                      ratio(rss.get((case, 1_000_000)), rss.get((case, 100_000)))))
    return [(name, value) for name, value in lines if value is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cases", nargs="+", choices=CASES, help="default: all")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (median shown)")
    parser.add_argument("--llm-sizes", type=int, nargs="+", default=[100_000])
    args = parser.parse_args()
    results = run(args.sizes, args.cases, args.repeat, args.llm_sizes)
    print(f"{'case':32} {'rows':>10} {'rows/s':>10} {'rows/cpu-s':>11} {'peak RSS MiB':>13}  runs (rows/s)")
    for r in results:
        print(f"{r['case']:32} {r['rows']:>10,} {r['rows_per_s']:>10,.0f} {r['rows_per_cpu_s']:>11,.0f} "
              f"{r['peak_rss_mib']:>13,.0f}  {r['all_rows_per_s']}")
    print()
    for name, value in goals(results):
        print(f"{name:70} {value:6.2f}")


if __name__ == "__main__":
    main()
