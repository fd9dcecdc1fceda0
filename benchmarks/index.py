"""The collection index at scale: build, warm and new-process latency, recall@10, memory.

For each kind of data (benchmarks/index_data.py: `clustered`, a Gaussian mixture, and
`uniform` random unit vectors, the worst case) at `--rows` x 384 it makes the database
once under the temp directory (about 2 KB a row: ~20 GB at 10,000,000; reused later,
printed with the command that deletes it), then, each step in its own process so that
`resource.getrusage` gives that step's peak RSS:

  build        Collection.build_index() (reused when current; --rebuild to time it again)
  warm         one process, 100 held-out + 100 random queries after a first one: median
  new process  open the collection and run one query in a fresh interpreter (times from
               before `import embsqlite`; the interpreter's own start is printed apart)
  exact        similar_by_vector(exact=True), the SQL full scan, cache off: median of a few
  peers        at 1,000,000 rows or fewer: sqlite-vec vec0 (exact, in its own table) and
               ChromaDB (HNSW; `pip install chromadb`, not in any extra: it brings many
               packages), built from the same vectors, same queries

recall@10 is against the exact answer: the generator keeps each query's best 100 rows
(float64 dot products while writing), re-ranked here by the SQL cosine_similarity,
score desc then id. Timings share 2 cores with other work: medians, noisy.

    OPENBLAS_NUM_THREADS=1 python benchmarks/index.py                 # 10,000,000 rows
    OPENBLAS_NUM_THREADS=1 python benchmarks/index.py --rows 1000000  # with the peers
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import index_data  # noqa: E402

K = 10
HERE = os.path.abspath(__file__)


def peak_mb() -> float:
    """This process's peak RSS. Linux keeps getrusage's ru_maxrss across fork and exec (a
    child would report its parent's peak), so there it is VmHWM, which exec resets."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _collection(path: str):
    import embsqlite

    class Unused(embsqlite.EmbeddingModel):
        model_id = index_data.MODEL

        def embed_batch(self, items):
            raise NotImplementedError("the benchmark searches by vector")

    return embsqlite.Collection(index_data.COLLECTION, path, model=Unused(), create=False)


def load_queries(kind: str, rows: int) -> dict[str, np.ndarray]:
    data = np.load(index_data.truth_path(kind, rows))
    return {name: data[f"query-{name}"] for name in ("held-out", "random")}


def exact_answers(kind: str, rows: int) -> list[list[str]]:
    """Each query's exact top 10 ids: its kept candidates ranked by the SQL cosine."""
    import embsqlite

    data = np.load(index_data.truth_path(kind, rows))
    queries = np.concatenate([data["query-held-out"], data["query-random"]])
    conn = embsqlite.connect(index_data.db_path(kind, rows))
    answers = []
    for query, candidates in zip(queries, data["candidates"]):
        ids = json.dumps([f"{row:08d}" for row in candidates])
        answers.append([
            row[0] for row in conn.execute(
                "select id, cosine_similarity(embedding, ?) as score from embeddings"
                " where collection_id = 1 and id in (select value from json_each(?))"
                " order by score desc, id limit ?",
                (query.astype("<f4").tobytes(), ids, K),
            )
        ])
    conn.close()
    return answers


# Roles, each run in its own process


def role_build(path: str) -> dict:
    from embsqlite import index

    collection = _collection(path)
    started = time.perf_counter()
    built = collection.build_index()
    return {
        "seconds": time.perf_counter() - started,
        "peak_mb": peak_mb(),
        "bytes": os.path.getsize(built),
        "lists": index.read_trailer(built).lists,
    }


def role_warm(path: str, kind: str, rows: int, exact: bool, limit: int) -> dict:
    collection = _collection(path)
    queries = np.concatenate(list(load_queries(kind, rows).values()))[:limit]
    collection.similar_by_vector(queries[0].tolist(), K, exact=exact)  # the first: not counted
    times, found = [], []
    for query in queries:
        vector = query.tolist()
        started = time.perf_counter()
        entries = collection.similar_by_vector(vector, K, exact=exact)
        times.append(time.perf_counter() - started)
        found.append([entry.id for entry in entries])
    status = collection.index_status()
    return {"median_ms": statistics.median(times) * 1e3, "found": found, "peak_mb": peak_mb(), "status": status}


NEW_PROCESS = """
import time, sys, json
started = time.perf_counter()
sys.path.insert(0, {here!r})
import index
collection = index._collection({path!r})
entries = collection.similar_by_vector({query!r}, {k})
print(json.dumps({{"ms": (time.perf_counter() - started) * 1e3, "status": collection.index_status()}}))
"""


def new_process(path: str, query: list[float]) -> tuple[float, float]:
    """(ms inside the process from before the import to the result, wall ms)."""
    code = NEW_PROCESS.format(here=os.path.dirname(HERE), path=path, query=query, k=K)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = (time.perf_counter() - started) * 1e3
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"], wall


def role_vec0(path: str, kind: str, rows: int) -> dict:
    import pysqlite3.dbapi2 as sqlite3  # the stdlib's here cannot load extensions
    import sqlite_vec

    work = tempfile.mkdtemp(dir=index_data.directory())
    try:
        conn = sqlite3.connect(os.path.join(work, "vec0.db"), isolation_level=None)
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.execute(f"attach database '{path}' as src")
        started = time.perf_counter()
        conn.execute(f"create virtual table v using vec0(embedding float[{index_data.DIM}] distance_metric=cosine)")
        conn.execute("begin")
        conn.execute("insert into v (rowid, embedding) select rowid, embedding from src.embeddings")
        conn.execute("commit")
        build = time.perf_counter() - started
        queries = np.concatenate(list(load_queries(kind, rows).values()))
        times, found = [], []
        for query in queries:
            t0 = time.perf_counter()
            rowids = [r[0] for r in conn.execute(
                "select rowid from v where embedding match ? and k = ?", (query.astype("<f4").tobytes(), K))]
            times.append(time.perf_counter() - t0)
            found.append([r[0] for r in conn.execute(
                "select id from src.embeddings where rowid in (select value from json_each(?))",
                (json.dumps(rowids),))])
        return {"build_s": build, "median_ms": statistics.median(times) * 1e3, "found": found, "peak_mb": peak_mb()}
    finally:
        shutil.rmtree(work)


def role_chroma(path: str, kind: str, rows: int) -> dict:
    import sqlite3

    import chromadb

    work = tempfile.mkdtemp(dir=index_data.directory())
    try:
        client = chromadb.PersistentClient(path=work)
        collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
        source = sqlite3.connect(path)
        started = time.perf_counter()
        cursor = source.execute("select id, embedding from embeddings")
        batch = client.get_max_batch_size()
        while True:
            part = cursor.fetchmany(batch)
            if not part:
                break
            collection.add(
                ids=[row[0] for row in part],
                embeddings=np.frombuffer(b"".join(row[1] for row in part), dtype="<f4").reshape(len(part), -1),
            )
        build = time.perf_counter() - started
        queries = np.concatenate(list(load_queries(kind, rows).values()))
        times, found = [], []
        for query in queries:
            t0 = time.perf_counter()
            result = collection.query(query_embeddings=[query], n_results=K)
            times.append(time.perf_counter() - t0)
            found.append(result["ids"][0])
        return {"build_s": build, "median_ms": statistics.median(times) * 1e3, "found": found, "peak_mb": peak_mb()}
    finally:
        shutil.rmtree(work)


def run_role(*args: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, HERE, "--role", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(found, truth)) / (K * len(truth))


def report(name: str, result: dict, truth: list[list[str]], extra: str = "") -> None:
    half = len(truth) // 2
    found = result["found"]
    print(f"  {name:22} median {result['median_ms']:9.2f} ms   recall@10 held-out {recall(found[:half], truth[:half]):.3f}"
          f"  random {recall(found[half:], truth[half:len(found)]):.3f}   peak RSS {result['peak_mb']:7.0f} MB{extra}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--kind", choices=index_data.KINDS, action="append")
    parser.add_argument("--rebuild", action="store_true", help="build the index even when current")
    parser.add_argument("--probes", default="", help="also measure these probe counts, e.g. 32,128")
    parser.add_argument("--new-processes", type=int, default=5)
    parser.add_argument("--exact-queries", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--role", nargs="+")
    args = parser.parse_args()
    if args.role:
        role, path, *rest = args.role
        if role == "build":
            result = role_build(path)
        elif role == "warm":
            result = role_warm(path, rest[0], int(rest[1]), rest[2] == "exact", int(rest[3]))
        elif role == "vec0":
            result = role_vec0(path, rest[0], int(rest[1]))
        else:
            result = role_chroma(path, rest[0], int(rest[1]))
        print(json.dumps(result))
        return
    from embsqlite import index

    print(f"{args.rows:,} rows x {index_data.DIM}; data under {index_data.directory()}", flush=True)
    for kind in args.kind or index_data.KINDS:
        started = time.perf_counter()
        path = index_data.generate(kind, args.rows, log=lambda text: print("  " + text, flush=True))
        made = time.perf_counter() - started
        print(f"\n{kind}: {path} ({os.path.getsize(path) / 1e9:.1f} GB"
              f"{f', made in {made:.0f} s' if made > 5 else ', reused'}); delete with: rm {path}* "
              f"{index_data.truth_path(kind, args.rows)}", flush=True)
        truth = exact_answers(kind, args.rows)
        file = index.path_for(path, 1)
        collection = _collection(path)
        status = collection.index_status()
        collection.close()
        if status != "current" or args.rebuild:
            built = run_role("build", path, env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)})
            print(f"  build                  {built['seconds']:9.1f} s    index file {built['bytes'] / 1e9:.2f} GB"
                  f" ({built['lists']} lists)   peak RSS {built['peak_mb']:7.0f} MB", flush=True)
        else:
            trailer = index.read_trailer(file)
            print(f"  build (reused)         {trailer.seconds:9.1f} s    index file {os.path.getsize(file) / 1e9:.2f} GB"
                  f" ({trailer.lists} lists)", flush=True)
        limit = len(truth)
        for probes in [None, *[int(p) for p in args.probes.split(",") if p]]:
            env = {} if probes is None else {index.PROBES_ENV: str(probes)}
            warm = run_role("warm", path, kind, str(args.rows), "index", str(limit), env=env)
            assert warm["status"] == "current", warm["status"]
            name = "index, warm" if probes is None else f"index, warm, {probes} probes"
            report(name, warm, truth)
        query = load_queries(kind, args.rows)["held-out"][0].tolist()
        firsts = [new_process(path, query) for _ in range(args.new_processes)]
        interpreter = [new_process_floor() for _ in range(3)]
        print(f"  index, new process     median {statistics.median(f[0] for f in firsts):9.2f} ms"
              f" (import + open + mmap + query; wall {statistics.median(f[1] for f in firsts):.0f} ms,"
              f" of which interpreter start {statistics.median(interpreter):.0f} ms)", flush=True)
        if args.exact_queries:
            exact = run_role("warm", path, kind, str(args.rows), "exact", str(args.exact_queries),
                             env={"EMBSQLITE_CACHE_MB": "0"})
            same = exact["found"] == truth[: args.exact_queries]
            print(f"  exact scan             median {exact['median_ms']:9.2f} ms   ({args.exact_queries} queries,"
                  f" {'the same ids as' if same else 'DIFFERENT ids from'} the exact answer)"
                  f"   peak RSS {exact['peak_mb']:7.0f} MB", flush=True)
        if args.rows <= 1_000_000 and not args.no_peers:
            for peer in ("vec0", "chroma"):
                try:
                    result = run_role(peer, path, kind, str(args.rows))
                except RuntimeError as error:
                    print(f"  {peer}: failed: {str(error).splitlines()[-1]}", flush=True)
                    continue
                report(f"{'sqlite-vec vec0' if peer == 'vec0' else 'ChromaDB'}", result, truth,
                       f"   build {result['build_s']:.1f} s")


def new_process_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1e3


if __name__ == "__main__":
    main()
