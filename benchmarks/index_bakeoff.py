"""The bake-off that chose the index method: usearch HNSW (i8) against faiss IVF-SQ8.

On N synthetic 384-dimension unit vectors (benchmarks/index_data.py's `clustered` and
`uniform` kinds, made in memory) each method builds an index, saves it, and answers 200
queries (100 held-out draws, 100 random vectors) for a candidate pool that is re-ranked
exactly (float64 dot of the stored float32 vectors, which are unit length). Printed per
method and setting: build seconds, index bytes, load seconds in a new process (usearch
`view=True` memory-maps; faiss `IO_FLAG_MMAP`), median warm query ms (candidates only),
recall@10 after re-ranking, peak RSS of the build and of a query process.

    OPENBLAS_NUM_THREADS=1 python benchmarks/index_bakeoff.py --rows 100000

One run at 100,000 rows on this 2-core machine while it was busy with other work (pool
100): usearch built in 76 s (clustered) and 156 s (uniform), about 1,000 vectors a second,
so 10,000,000 would take hours; faiss IVF-SQ8 (1,264 lists then) in 14-16 s. Held-out
queries on clustered data: recall 1.000 for both. Random queries on clustered data: usearch
0.807 at 7.6 ms (expansion 512), faiss 0.808 at 1.5 ms (32 probes). Uniform data: usearch
0.39 at expansion 512, faiss 0.32 at 128 probes. The build cost decided: faiss.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import index_data  # noqa: E402

K = 10


def data(kind: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    centres = index_data._centres()
    parts = [
        index_data.draw(kind, [3, chunk], min(index_data.CHUNK, rows - start), centres)
        for chunk, start in enumerate(range(0, rows, index_data.CHUNK))
    ]
    queries = np.concatenate(list(index_data.queries(kind, centres).values()))
    return np.concatenate(parts), queries


def exact(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ matrix.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)


def rerank_recall(matrix, queries, candidates, truth) -> float:
    hits = 0
    for q, cand, want in zip(queries, candidates, truth):
        cand = cand[cand >= 0]
        scores = matrix[cand].astype(np.float64) @ q.astype(np.float64)
        got = cand[np.argsort(-scores)[:K]]
        hits += len(set(got.tolist()) & set(want.tolist()))
    return hits / (K * len(queries))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(method: str, kind: str, rows: int, path: str, threads: int) -> None:
    matrix, _ = data(kind, rows)
    base = peak_mb()
    started = time.perf_counter()
    if method == "usearch":
        from usearch.index import Index

        index = Index(ndim=matrix.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=128)
        for start in range(0, rows, 100_000):
            part = matrix[start : start + 100_000]
            index.add(np.arange(start, start + len(part)), part, threads=threads)
        index.save(path)
    else:
        import faiss

        faiss.omp_set_num_threads(threads)
        from embsqlite.index import TRAIN_PER_LIST, lists_for

        nlist = lists_for(rows)  # as embsqlite/index.py builds it
        quantizer = faiss.IndexFlatIP(matrix.shape[1])
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, matrix.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.spherical = True
        sample = matrix[np.random.default_rng(0).choice(rows, min(rows, TRAIN_PER_LIST * nlist), replace=False)]
        index.train(sample)
        for start in range(0, rows, 100_000):
            index.add(matrix[start : start + 100_000])
        faiss.write_index(index, path)
    print(json.dumps({"build_s": time.perf_counter() - started, "build_extra_mb": peak_mb() - base}))


def query(method: str, kind: str, rows: int, path: str, settings: list[int], pool: int) -> None:
    matrix, queries = data(kind, rows)
    truth = exact(matrix, queries)
    base = peak_mb()
    started = time.perf_counter()
    if method == "usearch":
        from usearch.index import Index

        index = Index.restore(path, view=True)
    else:
        import faiss

        index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    load = time.perf_counter() - started
    out = {"load_s": load, "results": []}
    for setting in settings:
        times, candidates = [], []
        first = None
        for q in queries:
            t0 = time.perf_counter()
            if method == "usearch":
                index.expansion_search = setting
                found = index.search(q, pool)
                cand = np.asarray(found.keys, dtype=np.int64)
            else:
                index.nprobe = setting
                _, ids = index.search(q[None, :], pool)
                cand = ids[0]
            elapsed = time.perf_counter() - t0
            first = elapsed if first is None else first
            times.append(elapsed)
            candidates.append(cand)
        half = len(queries) // 2
        out["results"].append(
            {
                "setting": setting,
                "first_ms": first * 1e3,
                "median_ms": statistics.median(times) * 1e3,
                "recall_heldout": rerank_recall(matrix, queries[:half], candidates[:half], truth[:half]),
                "recall_random": rerank_recall(matrix, queries[half:], candidates[half:], truth[half:]),
            }
        )
    out["query_extra_mb"] = peak_mb() - base
    print(json.dumps(out))


def run(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kind", choices=index_data.KINDS, action="append")
    parser.add_argument("--method", choices=("usearch", "faiss"), action="append")
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--role", choices=("build", "query"))
    parser.add_argument("--path")
    parser.add_argument("--settings", default="")
    args = parser.parse_args()
    if args.role == "build":
        return build(args.method[0], args.kind[0], args.rows, args.path, args.threads)
    if args.role == "query":
        settings = [int(s) for s in args.settings.split(",")]
        return query(args.method[0], args.kind[0], args.rows, args.path, settings, args.pool)
    grid = {"usearch": "64,128,256,512", "faiss": "8,16,32,64,128"}  # expansion_search; nprobe
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kind or index_data.KINDS:
            for method in args.method or ("usearch", "faiss"):
                path = os.path.join(tmp, f"{method}-{kind}.index")
                common = ["--rows", str(args.rows), "--kind", kind, "--method", method, "--path", path]
                built = run("--role", "build", "--threads", str(args.threads), *common)
                size = os.path.getsize(path)
                queried = run("--role", "query", "--settings", grid[method], "--pool", str(args.pool), *common)
                print(
                    f"{kind:9} {method:7} build {built['build_s']:7.1f} s (+{built['build_extra_mb']:.0f} MB)"
                    f"  file {size / 1e6:7.1f} MB  load {queried['load_s'] * 1e3:6.1f} ms"
                    f"  query +{queried['query_extra_mb']:.0f} MB",
                    flush=True,
                )
                for r in queried["results"]:
                    print(
                        f"    setting {r['setting']:4}  first {r['first_ms']:7.2f} ms  median {r['median_ms']:7.2f} ms"
                        f"  recall@10 held-out {r['recall_heldout']:.3f}  random {r['recall_random']:.3f}",
                        flush=True,
                    )
                os.remove(path)


if __name__ == "__main__":
    main()
