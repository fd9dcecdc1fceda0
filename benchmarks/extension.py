"""Scan speed of the C cosine_similarity in each host, measured in one run.

Builds a file of N rows of D-dimension float32 embeddings, then times
`select max(cosine_similarity(embedding, :q)) from t` through:
  - a stdlib sqlite3 connection (C functions registered through sqlite3_auto_extension),
  - the sqlite3 shell with `.load` of the loadable extension (its own `.timer`),
  - pysqlite3 with load_extension, when installed,
  - `sum(length(embedding))`: SQLite reading every blob with no arithmetic, the floor
    for any SQL function.
Prints rows per second and the ratio of each to the stdlib connection.

    python benchmarks/extension.py [--rows 100000] [--dim 384] [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

import embsqlite

QUERY = "select max(cosine_similarity(embedding, {q})) from t"
FLOOR = "select sum(length(embedding)) from t"


def build(path: str, rows: int, dim: int) -> np.ndarray:
    data = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    conn = embsqlite.connect(path)
    conn.execute("create table t (id integer primary key, embedding blob)")
    conn.executemany("insert into t values (?, ?)", ((i, r.tobytes()) for i, r in enumerate(data)))
    conn.commit()
    conn.close()
    return data


def time_python(conn, sql: str, params: tuple, repeat: int) -> float:
    conn.execute(sql, params).fetchone()  # warm the page cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        conn.execute(sql, params).fetchone()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_shell(path: str, query_hex: str, repeat: int) -> float:
    sql = QUERY.format(q=f"x'{query_hex}'") + ";"
    script = "\n".join([f".load {embsqlite.loadable_path()}", sql, ".timer on"] + [sql] * repeat)
    out = subprocess.run(
        ["sqlite3", path], input=script, capture_output=True, text=True, check=True
    ).stdout
    times = [float(x) for x in re.findall(r"Run Time: real ([0-9.]+)", out)]
    assert len(times) == repeat, out
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.db")
        data = build(path, args.rows, args.dim)
        query = data[17].tobytes()
        results = []

        conn = embsqlite.connect(path)
        results.append(("stdlib sqlite3 (auto-extension, C)",
                        time_python(conn, QUERY.format(q="?"), (query,), args.repeat)))
        results.append(("floor: sum(length(embedding)), stdlib",
                        time_python(conn, FLOOR, (), args.repeat)))
        conn.close()

        if shutil.which("sqlite3"):
            results.append(("sqlite3 shell (.load)", time_shell(path, query.hex(), args.repeat)))

        try:
            import pysqlite3.dbapi2 as pysqlite3
        except ImportError:
            pass
        else:
            p3 = embsqlite.register(pysqlite3.connect(path))
            results.append(("pysqlite3 (load_extension)",
                            time_python(p3, QUERY.format(q="?"), (query,), args.repeat)))
            p3.close()

    base = results[0][1]
    print(f"{args.rows:,} rows x {args.dim} float32, median of {args.repeat}")
    print(f"{'host':42} {'ms/query':>9} {'rows/s':>14} {'time vs stdlib':>15}")
    for name, seconds in results:
        print(f"{name:42} {seconds * 1e3:9.1f} {args.rows / seconds:14,.0f} {seconds / base:14.2f}x")


if __name__ == "__main__":
    main()
