"""The vector file's int8 sketch (csrc/sketch.c): a first pass whose answer is the full
scan's, to the bit, which reads the float32 rows of its candidates only."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embsqlite import _native

ffi, lib = _native.ffi, _native.lib


class Matrix:
    """A float32 matrix with its norms and sketch, as the vector file holds them."""

    def __init__(self, data: np.ndarray, threads: int = 2) -> None:
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.rows, self.dims = self.data.shape
        self.norms = np.zeros(max(self.rows, 1))
        lib.embsqlite_norms(ffi.from_buffer(self.data), self.rows, self.dims, self._norms())
        self.codes = np.zeros((max(self.rows, 1), self.dims), np.int8)
        self.sketch = np.zeros((max(self.rows, 1), 4))
        self.unsketched = lib.embsqlite_sketch_build(
            ffi.from_buffer(self.data), self._norms(), self.rows, self.dims,
            ffi.cast("signed char *", ffi.from_buffer(self.codes)),
            ffi.cast("SketchRow *", ffi.from_buffer(self.sketch)), threads)

    def _norms(self):
        return ffi.cast("double *", ffi.from_buffer(self.norms))

    def scan(self, query, k, positions=None, skip=-1, threads=2, sketch=True):
        """(count or error, rows, scores, whether a row left out ties with the k-th)."""
        out_rows, out_scores = ffi.new("long long[]", max(k, 1)), ffi.new("double[]", max(k, 1))
        best = ffi.new("double *")
        pos = ffi.NULL if positions is None else ffi.new("long long[]", list(positions))
        count = self.rows if positions is None else len(positions)
        args = (ffi.from_buffer(self.data), self._norms(), self.rows, self.dims,
                ffi.from_buffer(np.asarray(query, np.float32).tobytes()), pos, 0, count, skip, k,
                threads, out_rows, out_scores, best)
        if sketch:
            found = lib.embsqlite_sketch_scan(
                ffi.cast("signed char *", ffi.from_buffer(self.codes)),
                ffi.cast("SketchRow *", ffi.from_buffer(self.sketch)), *args)
        else:
            found = lib.embsqlite_scan(*args)
        n = max(found, 0)
        rows, scores = ffi.unpack(out_rows, n), ffi.unpack(out_scores, n)
        return found, rows, scores, bool(n and best[0] == scores[-1])


def data_of(kind: int, rows: int, dims: int, gen: np.random.Generator) -> np.ndarray:
    data = gen.standard_normal((rows, dims))
    if kind == 1:
        data = gen.integers(-2, 3, (rows, dims)).astype(float)  # many exact ties
    elif kind == 2:
        data *= 10.0 ** gen.integers(-44, 37, (rows, 1))  # subnormal to near FLT_MAX
    elif kind == 3:
        data[gen.random(rows) < 0.2] = 0.0  # zero rows score exactly 0
    elif kind == 4:
        data = np.abs(data) + 3.0  # all close to each other: wide candidate sets
    return data.astype(np.float32)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.integers(0, 4), rows=st.integers(1, 400),
       dims=st.sampled_from([1, 2, 3, 7, 16, 33, 96]), k=st.integers(1, 30),
       subset=st.booleans(), stored_query=st.booleans(), threads=st.integers(1, 3))
def test_the_sketch_gives_the_full_scans_answer(seed, kind, rows, dims, k, subset, stored_query,
                                                  threads):
    gen = np.random.default_rng(seed)
    matrix = Matrix(data_of(kind, rows, dims, gen), threads)
    query = matrix.data[gen.integers(rows)] if stored_query else data_of(kind, 1, dims, gen)[0]
    positions = sorted(set(gen.integers(0, rows, gen.integers(1, rows + 1)).tolist())) if subset else None
    skip = int(gen.integers(-1, rows))
    assert matrix.scan(query, k, positions, skip, threads) == matrix.scan(
        query, k, positions, skip, threads, sketch=False)


def test_rows_without_a_sketch_are_scored_and_reported_as_the_full_scan_reports_them():
    gen = np.random.default_rng(3)
    data = gen.standard_normal((500, 24)).astype(np.float32)
    data[77, 5] = np.nan
    data[300, 0] = np.inf
    matrix = Matrix(data)
    assert matrix.unsketched == 2
    query = data[10]
    assert matrix.scan(query, 10)[0] == matrix.scan(query, 10, sketch=False)[0] == -2
    keep = [i for i in range(500) if i not in (77, 300)]
    assert matrix.scan(query, 10, keep) == matrix.scan(query, 10, keep, sketch=False)


@pytest.mark.parametrize("query", ["zero", "nan"])
def test_a_query_the_sketch_cannot_code_gets_the_full_scan(query):
    data = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    matrix = Matrix(data)
    q = np.zeros(16, np.float32) if query == "zero" else np.full(16, np.nan, np.float32)
    assert matrix.scan(q, 5) == matrix.scan(q, 5, sketch=False)


def test_rows_the_sketch_rules_out_are_never_read():
    """After the sketch is built, damage the float32 bytes of the rows least like the
    query: the full scan reads them (and fails on the NaN), the sketch scan does not read
    them and still returns the undamaged answer."""
    gen = np.random.default_rng(5)
    data = gen.standard_normal((5000, 64)).astype(np.float32)
    matrix = Matrix(data)
    query = data[42] + 0.1 * gen.standard_normal(64).astype(np.float32)
    before = matrix.scan(query, 10)
    assert before == matrix.scan(query, 10, sketch=False) and before[1][0] == 42
    scores = data @ query / np.linalg.norm(data, axis=1) / np.linalg.norm(query)
    for row in np.argsort(scores)[:4000]:  # the 4,000 least similar rows
        matrix.data[row] = np.nan
    assert matrix.scan(query, 10, sketch=False)[0] == -2
    assert matrix.scan(query, 10) == before


def test_more_candidates_than_it_keeps_falls_back_to_the_full_scan():
    """Identical rows share one upper bound: every row is a candidate until the sketch
    gives up, and the full scan answers (ties by row)."""
    data = np.tile(np.random.default_rng(6).standard_normal(8).astype(np.float32), (140_000, 1))
    matrix = Matrix(data)
    query = data[0] * 2
    assert matrix.scan(query, 3) == matrix.scan(query, 3, sketch=False)
    assert matrix.scan(query, 3)[1] == [0, 1, 2]


def test_bounds_that_cannot_hold_make_the_row_a_candidate():
    """A sketch edited in place (not written by embsqlite): a NaN or an inverted interval
    never enters the k-th best lower bound; such rows are scored exactly, so the answer
    is never short and, with every bound of that kind, is the full scan's."""
    gen = np.random.default_rng(7)
    matrix = Matrix(gen.standard_normal((3000, 32)).astype(np.float32))
    query = gen.standard_normal(32).astype(np.float32)
    want = matrix.scan(query, 20, sketch=False)
    matrix.sketch[::2, 2] = -1.0  # a negative loss: lower above upper
    matrix.sketch[1::2, 1] = np.nan  # NaN bounds
    assert matrix.scan(query, 20) == want
    matrix.sketch[:, 1] = np.nan
    assert matrix.scan(query, 3000 // 4) == matrix.scan(query, 3000 // 4, sketch=False)
