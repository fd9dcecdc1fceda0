"""The cffi module's own C entry points: the top-k scan behind the vector cache."""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from embsqlite import _native

ffi, lib = _native.ffi, _native.lib


def topk(matrix: np.ndarray, query: np.ndarray, k: int, lo=0, hi=None, skip=-1):
    rows, dim = matrix.shape
    hi = rows if hi is None else hi
    out_rows = ffi.new("long long[]", max(k, 1))
    out_scores = ffi.new("double[]", max(k, 1))
    blob = matrix.astype("<f4").tobytes()
    norms = ffi.new("double[]", max(rows, 1))
    lib.embsqlite_norms(blob, rows, dim, norms)
    n = lib.embsqlite_topk(blob, norms, rows, dim, query.astype("<f4").tobytes(), lo, hi, skip,
                           k, out_rows, out_scores)
    if n < 0:
        return n
    return list(out_rows)[:n], list(out_scores)[:n]


def reference(matrix, query, lo, hi, skip):
    m = matrix.astype(np.float64)
    q = query.astype(np.float64)
    scores = m @ q / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    order = [i for i in sorted(range(lo, hi), key=lambda i: (-scores[i], i)) if i != skip]
    return order, scores


@pytest.mark.parametrize("dim", [1, 3, 16, 17, 384])
def test_topk_matches_float64_ranking(dim):
    gen = np.random.default_rng(dim)
    matrix = gen.standard_normal((500, dim)).astype(np.float32)
    query = gen.standard_normal(dim).astype(np.float32)
    rows, scores = topk(matrix, query, 10)
    order, ref = reference(matrix, query, 0, 500, -1)
    assert rows == order[:10]
    assert scores == pytest.approx([ref[i] for i in rows], rel=1e-9)
    assert scores == sorted(scores, reverse=True)


def test_topk_scores_equal_sql_bit_for_bit(conn):
    gen = np.random.default_rng(9)
    matrix = gen.standard_normal((300, 384)).astype(np.float32)
    query = gen.standard_normal(384).astype(np.float32)
    conn.execute("create table t (id integer primary key, e blob)")
    conn.executemany("insert into t values (?, ?)", [(i, r.tobytes()) for i, r in enumerate(matrix)])
    sql = conn.execute(
        "select id, cosine_similarity(e, ?) as s from t order by s desc, id limit 20",
        (query.tobytes(),),
    ).fetchall()
    rows, scores = topk(matrix, query, 20)
    assert list(zip(rows, scores)) == sql  # exact equality, not approx


def test_range_skip_and_small_k():
    gen = np.random.default_rng(1)
    matrix = gen.standard_normal((100, 8)).astype(np.float32)
    query = matrix[40]
    rows, _ = topk(matrix, query, 5, lo=30, hi=60, skip=40)
    order, _ = reference(matrix, query, 30, 60, 40)
    assert rows == order[:5] and 40 not in rows
    assert topk(matrix, query, 0) == ([], [])
    rows, _ = topk(matrix, query, 1000, lo=10, hi=13)
    assert sorted(rows) == [10, 11, 12]
    assert topk(matrix, query, 5, lo=7, hi=7) == ([], [])


def test_ties_are_broken_by_row_and_zero_vectors_score_zero():
    matrix = np.array([[1, 0], [0, 0], [2, 0], [1, 0], [0, 0], [-1, 0]], dtype=np.float32)
    rows, scores = topk(matrix, np.array([3, 0], dtype=np.float32), 6)
    assert rows == [0, 2, 3, 1, 4, 5]
    assert scores == [1.0, 1.0, 1.0, 0.0, 0.0, -1.0]
    rows, scores = topk(matrix, np.array([0, 0], dtype=np.float32), 3)
    assert rows == [0, 1, 2] and scores == [0.0, 0.0, 0.0]


def test_non_finite_data_and_bad_ranges_are_errors():
    matrix = np.array([[1, 0], [np.nan, 0]], dtype=np.float32)
    assert topk(matrix, np.array([1, 0], dtype=np.float32), 2) == -2
    good = np.ones((4, 2), dtype=np.float32)
    query = np.ones(2, dtype=np.float32)
    assert topk(good, query, 2, lo=3, hi=2) == -2
    assert topk(good, query, 2, lo=-1) == -2
    assert topk(good, query, 2, hi=5) == -2
    assert topk(good, query, -1) == -2


def test_cosine_helper():
    a = np.array([1, 2, 3], dtype="<f4").tobytes()
    b = np.array([1, 2, 4], dtype="<f4").tobytes()
    assert lib.embsqlite_cosine(a, b, 3) == pytest.approx(17 / (14 ** 0.5 * 21 ** 0.5), rel=1e-12)


def test_a_stored_vector_scores_exactly_one_from_sql_and_from_the_cache(tmp_path):
    """cos(a, a) is 1.0 to the bit on both paths (it was 1.0000000000000002 or
    0.9999999999999999 for about half of all vectors), and every score is the same bits."""
    import embsqlite

    gen = np.random.default_rng(12)
    data = (gen.standard_normal((200, 384)) * 10.0 ** gen.integers(-30, 30, (200, 1)))
    data = data.astype(np.float32)
    from embsqlite.hashing import HashingModel

    docs = embsqlite.Collection("n", tmp_path / "n.db", model=HashingModel(dimensions=384))
    docs.conn.executemany(
        "insert into embeddings (collection_id, id, embedding) values (?, ?, ?)",
        [(docs.id, f"{i:03d}", row.tobytes()) for i, row in enumerate(data)],
    )
    docs.conn.commit()
    for i in range(0, 200, 7):
        runs = [docs.similar_by_vector(data[i].tolist(), number=5) for _ in range(3)]
        assert docs._cache.token is not None  # the last ones came from the cache
        assert runs[0] == runs[1] == runs[2]
        assert (runs[0][0].id, runs[0][0].score) == (f"{i:03d}", 1.0)
        opposite = docs.similar_by_vector((-data[i]).tolist(), number=200)
        assert (opposite[-1].id, opposite[-1].score) == (f"{i:03d}", -1.0)


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"
         and shutil.which("objdump")),
    reason="the AVX2 clones are built on x86-64 Linux only (GCC target_clones)",
)
def test_the_float_loops_are_vectorised_in_both_builds():
    """The shared loops (csrc/embsqlite_dot.h) compile to SIMD code: packed SSE2 in the
    default clone and AVX2 (ymm registers) in the x86-64-v3 clone, in the cffi module and
    in the loadable extension alike."""
    import embsqlite

    builds = {
        _native.__file__: ("dot_and_norm2", "dot_f32", "norm2_f32"),
        embsqlite.loadable_path(): ("dot_and_norm2", "norm2_f32"),
    }
    for path, loops in builds.items():
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
            check=True,
        ).stdout
        bodies: dict[str, list[str]] = {}
        name = None
        for line in listing.splitlines():
            header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
            if header:
                name = header.group(1)
            elif name:
                bodies.setdefault(name, []).append(line)
        for loop in loops:
            avx2 = " ".join(bodies[f"{loop}.arch_x86_64_v3"])
            sse2 = " ".join(bodies[f"{loop}.default"])
            assert "ymm" in avx2 and "vcvtps2pd" in avx2, (path, loop)
            assert re.search(r"\b(mulpd|addpd)\b", sse2), (path, loop)
