"""Filtered top-10 search: embsqlite's cached scan of the rows a filter keeps, against the
unfiltered cached search and sqlite-vec's vec0 table with a metadata column, in one run.

One collection of N unit-length random float32 vectors of 384 dimensions (fixed seed) with
metadata `{"kind": K, "n": U}`, U uniform in 0..999 and K chosen from U so that
`kind = 'half'` keeps 50% of the rows, 'tenth' 10%, 'hundredth' 1%, 'thousandth' 0.1%.
Rows printed, median ms per query over several query vectors (warm page cache):

  SQL, no cache             the filter ranked in SQLite (a fresh Collection each time)
  sqlite-vec vec0           `embedding match ? and k = 10 and kind = ?` on a vec0 table with
                            `kind` as a metadata column
  then for each path of repeated searches, the in-memory vector cache ("memory") and the
  vector file beside the database ("file", after Collection.build_vector_file()):
  unfiltered                Collection.similar_by_vector, the cache loaded / file built
  first                     the first search with a filter: SQL picks the rows (the filter
                            evaluated over the collection), C ranks those (each sample a
                            new filter text, so no evaluation is reused)
  repeated                  the same filter again with a new query vector (the rows it
                            picked are reused while the database is unchanged); each
                            query timed next to an unfiltered one, for the ratio
  metadata=, repeated       `metadata={"kind": K}` instead of `where=`
  first, with an index      (file) the first search again, with an index on the filter's
                            expression (created for these rows, then dropped)

Every embsqlite result is checked against numpy (the filtered rows ranked in memory: same
ids, in order); vec0's ids are checked as a set (it ranks float32 distances).

The databases are built once under tempfile.gettempdir() and reused (their paths are
printed, with the command that deletes them).

    OPENBLAS_NUM_THREADS=1 python benchmarks/filters.py                 # 1,000,000 rows
    OPENBLAS_NUM_THREADS=1 python benchmarks/filters.py --rows 100000   # a quick run
"""
from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Optional  # noqa: E402

import numpy as np  # noqa: E402

import embsqlite  # noqa: E402
from embsqlite import transaction, vectorfile  # noqa: E402

K = 10
DIM = 384
MODEL_ID = "benchmark-random"
KINDS = (("half", 0, 500), ("tenth", 500, 600), ("hundredth", 600, 610), ("thousandth", 610, 611))
WHERE = "json_extract(metadata, '$.kind') = ?"
INDEX = "embsqlite_benchmark_kind"


class RandomModel(embsqlite.EmbeddingModel):
    """Stands in for the collection's model; the benchmark only searches by vector."""

    model_id = MODEL_ID

    def embed_batch(self, items):
        raise NotImplementedError("the benchmark writes vectors directly")


def chunks(rows: int, seed: int = 0, size: int = 100_000):
    """(start, unit float32 vectors, U values) in slices, the same for every call."""
    gen = np.random.default_rng(seed)
    for start in range(0, rows, size):
        count = min(size, rows - start)
        part = gen.standard_normal((count, DIM))
        yield start, (part / np.linalg.norm(part, axis=1, keepdims=True)).astype(np.float32), \
            gen.integers(0, 1000, count)


def kind_of(u: int) -> str:
    return next((name for name, low, high in KINDS if low <= u < high), "other")


def paths(rows: int) -> tuple[str, str]:
    base = os.path.join(tempfile.gettempdir(), f"embsqlite-filters-{rows}x{DIM}")
    return base + ".db", base + "-vec0.db"


def build(rows: int) -> tuple[str, str]:
    """The llm-format database and the vec0 database, built unless already there."""
    path, vec_path = paths(rows)
    if not os.path.exists(path):
        part = path + ".part"
        for leftover in (part, part + "-wal", part + "-shm"):
            if os.path.exists(leftover):
                os.remove(leftover)
        collection = embsqlite.Collection("bench", part, model=RandomModel())
        conn = collection.conn
        now = int(time.time())
        for start, vectors, us in chunks(rows):
            with transaction.transaction(conn):
                conn.executemany(
                    "insert into embeddings (collection_id, id, embedding, content_hash, metadata, updated)"
                    " values (?, ?, ?, ?, ?, ?)",
                    ((collection.id, f"item-{start + i:07d}", v.tobytes(), (start + i).to_bytes(16, "little"),
                      json.dumps({"kind": kind_of(int(u)), "n": int(u)}), now)
                     for i, (v, u) in enumerate(zip(vectors, us))),
                )
        conn.execute("pragma wal_checkpoint(truncate)")
        collection.close()
        os.rename(part, path)
    if not os.path.exists(vec_path):
        import pysqlite3.dbapi2 as sqlite3
        import sqlite_vec

        part = vec_path + ".part"
        if os.path.exists(part):
            os.remove(part)
        conn = sqlite3.connect(part)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.execute(f"create virtual table vec_items using vec0("
                     f"embedding float[{DIM}] distance_metric=cosine, kind text)")
        for start, vectors, us in chunks(rows):
            conn.executemany("insert into vec_items(rowid, embedding, kind) values (?, ?, ?)",
                             ((start + i, v.tobytes(), kind_of(int(u))) for i, (v, u) in enumerate(zip(vectors, us))))
            conn.commit()
        conn.close()
        os.rename(part, vec_path)
    return path, vec_path


def set_index(path: str, present: bool) -> None:
    """Create or drop an index on the filter's expression, json_extract(metadata, '$.kind')."""
    conn = embsqlite.connect(path)
    if present:
        conn.execute(f"create index if not exists {INDEX} on embeddings(json_extract(metadata, '$.kind'))")
    else:
        conn.execute(f"drop index if exists {INDEX}")
    conn.commit()
    conn.close()


def paired_ms(func: Callable[[int], Any], other: Callable[[int], Any], repeat: int) -> tuple[float, list, float]:
    """Median ms of func(i) and of other(i), each i run one after the other, and func's results."""
    times, other_times, results = [], [], []
    for i in range(repeat):
        start = time.perf_counter()
        results.append(func(i))
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        other(i)
        other_times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, results, statistics.median(other_times) * 1e3


def median_ms(func: Callable[[int], Any], repeat: int) -> tuple[float, list]:
    """Median ms of func(0..repeat-1), and its results."""
    times, results = [], []
    for i in range(repeat):
        start = time.perf_counter()
        results.append(func(i))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, results


def reference(matrix: np.ndarray, keep: np.ndarray, query: np.ndarray) -> list[int]:
    """numpy's top-k row numbers among `keep`, ties by row (ids sort as row numbers)."""
    rows = np.flatnonzero(keep)
    scores = matrix[rows] @ query
    top = np.argpartition(-scores, min(K, len(rows) - 1))[:K] if len(rows) > K else np.arange(len(rows))
    order = np.lexsort((rows[top], -scores[top]))
    return [int(rows[top[i]]) for i in order]


def numbers(entries) -> list[int]:
    return [int(e.id.rsplit("-", 1)[1]) for e in entries]


def measure_path(
    mode: str, path: str, queries: list, at: int, repeat: int, kinds: list[str],
    record: Callable[..., None],
) -> None:
    """Unfiltered, first and repeated filtered searches through one path of repeated
    searches: the in-memory cache ("memory") or the vector file ("file")."""
    collection = embsqlite.Collection("bench", path)
    if mode == "file":
        vectorfile.configure(enabled=True)
        collection.build_vector_file()  # keeps change tokens in the database from now on
    for i in range(3):  # memory: the first search runs in SQL, the second loads the cache
        collection.similar_by_vector(queries[i], K)
    search = collection.similar_by_vector
    ms, found = median_ms(lambda i: numbers(search(queries[i], K)), repeat)
    record("", f"unfiltered ({mode})", ms, found, ms)
    alone = ms
    for name in kinds:
        def first(i: int, name: str = name) -> list[int]:
            # another text each time (trailing spaces): no reuse of an earlier evaluation
            return numbers(search(queries[at + i], K, where=WHERE + " " * (i + 1), where_args=[name]))

        def repeated(i: int, name: str = name) -> list[int]:
            return numbers(search(queries[at + i], K, where=WHERE, where_args=[name]))

        def by_metadata(i: int, name: str = name) -> list[int]:
            return numbers(search(queries[at + i], K, metadata={"kind": name}))

        ms, found = median_ms(first, repeat)
        record(name, f"first ({mode})", ms, found, alone)
        for label, func in (("repeated", repeated), ("metadata=, repeated", by_metadata)):
            func(repeat)  # the evaluation these reuse
            # each query timed next to an unfiltered one, so both see the same load
            ms, found, unfiltered = paired_ms(func, lambda i: search(queries[at + i], K), repeat)
            record(name, f"{label} ({mode})", ms, found, unfiltered)
    if mode == "file":
        # the first search again, with an index on the filter's expression (dropped again)
        set_index(path, True)
        for i in range(2):  # the index moved the state: SQL answers, then a new file is built
            collection.similar_by_vector(queries[i], K)
        for name in kinds:
            ms, found = median_ms(lambda i, name=name: numbers(search(
                queries[at + i], K, where=WHERE + " " * (i + 1), where_args=[name])), repeat)
            record(name, f"first, with an index ({mode})", ms, found, alone)
        set_index(path, False)
    collection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="embsqlite filtered search benchmark")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    embsqlite.register_embedding_model(RandomModel())
    started = time.perf_counter()
    path, vec_path = build(args.rows)
    print(f"databases: {path} and {vec_path} (built or reused in {time.perf_counter() - started:.0f} s);"
          f" delete them with: rm {path} {path}-embsqlite-*.vectors {vec_path}")
    matrix = np.empty((args.rows, DIM), dtype=np.float32)
    us = np.empty(args.rows, dtype=np.int64)
    for start, vectors, part in chunks(args.rows):
        matrix[start:start + len(vectors)] = vectors
        us[start:start + len(vectors)] = part
    queries = [q.tolist() for _, block, _ in chunks(args.repeat * 2 + 2, seed=1) for q in block]
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    set_index(path, False)  # left by an interrupted run
    at = args.repeat  # the filtered searches' queries, not used by the warm-up
    keeps = {name: (us >= low) & (us < high) for name, low, high in KINDS}
    expected = {name: [reference(matrix, keep, np.array(queries[at + i], dtype=np.float32))
                       for i in range(args.repeat)] for name, keep in keeps.items()}
    everything = np.ones(args.rows, dtype=bool)
    table: list[tuple[str, str, float, Optional[float], str]] = []  # kind, label, ms, unfiltered ms, check

    def record(kind: str, label: str, ms: float, found: list, unfiltered: Optional[float], exact: bool = True) -> None:
        if kind == "":
            ok = all(f == reference(matrix, everything, np.array(queries[i], dtype=np.float32))
                     for i, f in enumerate(found))
        elif exact:
            ok = found == expected[kind][:len(found)]
        else:
            ok = all(set(f) == set(e) for f, e in zip(found, expected[kind]))
        table.append((kind, label, ms, unfiltered, ("yes" if ok else "NO") + ("" if exact else " (as set)")))

    # the filter ranked in SQLite: a fresh Collection each time (no cache, no vector file)
    vectorfile.configure(enabled=False)
    for name in keeps:
        def in_sql(i: int, name: str = name) -> list[int]:
            fresh = embsqlite.Collection("bench", path)
            try:
                return numbers(fresh.similar_by_vector(queries[at + i], K, where=WHERE, where_args=[name]))
            finally:
                fresh.close()
        ms, found = median_ms(in_sql, 3)
        record(name, "SQL, no cache", ms, found, None)

    import pysqlite3.dbapi2 as sqlite3
    import sqlite_vec

    vec = sqlite3.connect(vec_path)
    vec.enable_load_extension(True)
    sqlite_vec.load(vec)
    knn = "select rowid from vec_items where embedding match ? and k = ? and kind = ? order by distance"
    vec.execute(knn, (np.array(queries[0], dtype=np.float32).tobytes(), K, "half")).fetchall()
    for name in keeps:
        ms, found = median_ms(lambda i, name=name: [r[0] for r in vec.execute(
            knn, (np.array(queries[at + i], dtype=np.float32).tobytes(), K, name))], args.repeat)
        record(name, "sqlite-vec vec0", ms, found, None, exact=False)
    vec.close()

    for mode in ("memory", "file"):
        measure_path(mode, path, queries, at, args.repeat, list(keeps), record)

    vec_ms = {kind: ms for kind, label, ms, _, _ in table if label == "sqlite-vec vec0"}
    print(f"\n{args.rows:,} x {DIM} float32, top-{K}, median ms of {args.repeat} queries (SQL rows: of 3);"
          " x unfiltered: against the unfiltered search of the same path (for 'repeated' rows, unfiltered"
          " searches timed alternately with them)")
    print(f"{'search':46} {'ms':>9} {'x unfiltered':>13} {'x vec0':>8}  equal to numpy")
    shares = {name: f"{name} ({keep.mean():.1%})" for name, keep in keeps.items()}
    for kind in ["", *keeps]:
        for row_kind, label, ms, unfiltered, ok in table:
            if row_kind != kind:
                continue
            name = label if not kind else f"{shares[kind]}: {label}"
            against = f"{ms / unfiltered:12.2f}x" if unfiltered else " " * 13
            versus = f"{ms / vec_ms[kind]:7.2f}x" if kind else " " * 8
            print(f"{name:46} {ms:9.1f} {against} {versus}  {ok}")


if __name__ == "__main__":
    main()
