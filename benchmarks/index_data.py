"""Synthetic llm-format databases for the index benchmark, made once and reused.

Two kinds of 384-dimension unit vectors: `clustered` (a Gaussian mixture of 1,000 centres
with noise of the centre's norm, nearer to real embeddings) and `uniform` (random
directions, the worst case for any index). Vectors come from numpy in chunks of 100,000
(seeded per chunk, so every run makes the same file) and go in with plain `executemany`
into llm's schema (`embsqlite.schema.ensure_schema` plus one `collections` row), one big
transaction per chunk, no content.

While writing, the exact top candidates of the query set are kept (a float64 dot product
per chunk, merged into a running top 100): `benchmarks/index.py` re-ranks those with the
SQL cosine for the exact answer instead of scanning 10,000,000 rows per query. Queries:
100 held-out draws of the same distribution (never stored) and 100 random unit vectors.

    python benchmarks/index_data.py --rows 10000000 --kind clustered   # ~15 GB, prints path
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sqlite3  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

DIM = 384
CHUNK = 100_000
CENTRES = 1_000
KEEP = 100  # candidates kept per query for the exact answer
COLLECTION = "bench"
MODEL = "benchmark-random"
KINDS = ("clustered", "uniform")


def directory() -> str:
    """Where the benchmark's databases live (reused between runs)."""
    path = os.path.join(tempfile.gettempdir(), "embsqlite-index-bench")
    os.makedirs(path, exist_ok=True)
    return path


def db_path(kind: str, rows: int) -> str:
    return os.path.join(directory(), f"{kind}-{rows}.db")


def truth_path(kind: str, rows: int) -> str:
    return os.path.join(directory(), f"{kind}-{rows}.truth.npz")


def _unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)


def _centres() -> np.ndarray:
    return _unit(np.random.default_rng([7, 0]).standard_normal((CENTRES, DIM)))


def draw(kind: str, seed: list[int], count: int, centres: np.ndarray) -> np.ndarray:
    """`count` unit vectors of `kind`, the same for the same seed."""
    gen = np.random.default_rng(seed)
    if kind == "uniform":
        return _unit(gen.standard_normal((count, DIM)))
    which = gen.integers(0, CENTRES, count)
    # Noise of the centre's norm, with a per-cluster spread from 0.6 to 1.4.
    spread = 0.6 + 0.8 * np.random.default_rng([7, 1]).random(CENTRES)
    noise = gen.standard_normal((count, DIM)) * (spread[which] / np.sqrt(DIM))[:, None]
    return _unit(centres[which] + noise)


def queries(kind: str, centres: np.ndarray) -> dict[str, np.ndarray]:
    """100 held-out draws of the data's distribution and 100 random unit vectors."""
    return {
        "held-out": draw(kind, [11, 0], 100, centres),
        "random": draw("uniform", [13, 0], 100, centres),
    }


def ready(kind: str, rows: int) -> bool:
    return os.path.exists(truth_path(kind, rows)) and os.path.exists(db_path(kind, rows))


def generate(kind: str, rows: int, log=print) -> str:
    """Make the database (and its candidates file) unless both exist; returns its path."""
    import embsqlite
    from embsqlite import schema

    path = db_path(kind, rows)
    if ready(kind, rows):
        return path
    for stale in (path, path + "-wal", path + "-shm", path + "-journal"):
        if os.path.exists(stale):
            os.remove(stale)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode = off")
    conn.execute("pragma synchronous = off")
    conn.execute("pragma cache_size = -200000")
    schema.ensure_schema(conn)
    collection_id = conn.execute(
        "insert into collections (name, model) values (?, ?)", (COLLECTION, MODEL)
    ).lastrowid
    centres = _centres()
    query_sets = queries(kind, centres)
    everything = np.concatenate(list(query_sets.values())).astype(np.float64)
    best_scores = np.full((len(everything), KEEP), -np.inf)
    best_rows = np.zeros((len(everything), KEEP), dtype=np.int64)
    now = int(time.time())
    for chunk, start in enumerate(range(0, rows, CHUNK)):
        count = min(CHUNK, rows - start)
        vectors = draw(kind, [3, chunk], count, centres)
        conn.execute("begin")
        conn.executemany(
            "insert into embeddings (collection_id, id, embedding, updated) values (?, ?, ?, ?)",
            ((collection_id, f"{start + i:08d}", vectors[i].tobytes(), now) for i in range(count)),
        )
        conn.execute("commit")
        scores = everything @ vectors.astype(np.float64).T
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_rows = np.concatenate(
            [best_rows, np.broadcast_to(np.arange(start, start + count), scores.shape)], axis=1
        )
        top = np.argpartition(-merged_scores, KEEP - 1, axis=1)[:, :KEEP]
        best_scores = np.take_along_axis(merged_scores, top, axis=1)
        best_rows = np.take_along_axis(merged_rows, top, axis=1)
        if chunk % 10 == 0:
            done = start + count
            rate = done / (time.perf_counter() - started)
            log(f"{kind} {done:,}/{rows:,} rows, {rate:,.0f} rows/s")
    conn.close()
    np.savez(
        truth_path(kind, rows),
        **{f"query-{name}": value for name, value in query_sets.items()},
        candidates=best_rows,  # row numbers; the id is f"{row:08d}"
        seconds=np.array(time.perf_counter() - started),
    )
    del embsqlite
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--kind", choices=KINDS, action="append")
    args = parser.parse_args()
    for kind in args.kind or KINDS:
        path = generate(kind, args.rows, log=lambda text: print(text, flush=True))
        print(f"{path} ready ({os.path.getsize(path) / 1e9:.1f} GB); delete with: rm {path}*", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
