"""Ingestion rate of Collection.embed_multi with the hashing model, 10,000 to 1,000,000 rows.

Each size runs in its own process into a new file (default batch size 100) and prints
rows per second and the process's peak RSS, so a rate or memory that grows with the
collection shows as a trend down the table. The texts are distinct (every one is new
content) and drawn from a bounded vocabulary.

    python benchmarks/ingest.py                 # 10,000, 100,000 and 1,000,000 rows
    python benchmarks/ingest.py --sizes 10000 100000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import os, resource, sys, time
import embsqlite
rows, path = int(sys.argv[1]), sys.argv[2]
collection = embsqlite.Collection("ingest", path, model_id="hashing")
texts = ((f"id{i:07d}", f"w{i % 997} v{(i // 997) % 991} t{i % 7} u{(i // 7) % 983}")
         for i in range(rows))
start = time.perf_counter()
collection.embed_multi(texts)
elapsed = time.perf_counter() - start
assert collection.count() == rows
print(rows / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'rows':>10} {'rows/s':>10} {'peak RSS MiB':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.sizes:
            path = os.path.join(tmp, f"ingest-{rows}.db")
            out = subprocess.run([sys.executable, "-c", CHILD, str(rows), path],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"{rows:>10,} {float(out[0]):>10,.0f} {float(out[1]):>13,.0f}")


if __name__ == "__main__":
    main()
