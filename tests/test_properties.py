"""Property-based tests (hypothesis): encode/decode, and similar_by_vector against a
numpy float64 reference with ties decided exactly."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from conftest import CountingModel
from hypothesis import given, settings
from hypothesis import strategies as st

import embsqlite
from embsqlite import Collection

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _bits(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


# encode / decode


@given(st.lists(float32s, max_size=64))
def test_float32_values_round_trip_bit_for_bit(values):
    blob = embsqlite.encode(values)
    assert blob == _bits(values)  # little-endian float32, 4 bytes each
    back = embsqlite.decode(blob)
    assert back == tuple(values)
    assert [math.copysign(1, x) for x in back] == [math.copysign(1, x) for x in values]


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # any double, rounded to float32
    st.integers(-(10**400), 10**400),
)


@given(st.lists(numbers, min_size=1, max_size=16))
def test_any_number_is_rounded_like_numpy_or_refused_if_float32_cannot_hold_it(values):
    with np.errstate(over="ignore"):
        try:
            want = np.array([float(v) for v in values], dtype=np.float64).astype("<f4")
        except OverflowError:  # an int too large even for a double
            want = None
    if want is None or not np.isfinite(want).all():
        with pytest.raises(ValueError, match="finite"):
            embsqlite.encode(values)
    else:
        assert embsqlite.encode(values) == want.tobytes()


@given(
    st.lists(float32s, max_size=20),
    st.sampled_from([math.nan, math.inf, -math.inf, -math.nan]),
    st.data(),
)
def test_a_non_finite_value_anywhere_is_refused(values, bad, data):
    at = data.draw(st.integers(0, len(values)))
    with pytest.raises(ValueError, match="finite"):
        embsqlite.encode(values[:at] + [bad] + values[at:])


@given(st.binary(max_size=256))
def test_decode_reads_every_blob_of_whole_floats_and_refuses_the_rest(blob):
    if len(blob) % 4:
        with pytest.raises(ValueError, match="multiple of 4"):
            embsqlite.decode(blob)
        return
    values = embsqlite.decode(blob)
    reference = np.frombuffer(blob, dtype="<f4")
    assert len(values) == len(reference)
    if np.isfinite(reference).all():
        assert embsqlite.encode(values) == blob  # -0.0 and subnormals included
        assert values == tuple(reference.astype(np.float64).tolist())
    else:
        with pytest.raises(ValueError, match="finite"):
            embsqlite.encode(values)


# similar_by_vector against numpy

# Small integer components make exact ties common: repeated vectors, multiples of one
# direction, zero vectors (score 0.0), and a zero query.
small_vectors = st.lists(st.integers(-2, 2), min_size=3, max_size=3)


def _exact_key(row, query) -> Fraction:
    """A number ordered exactly like the cosine of integer vectors `row` and `query`:
    sign(dot) * dot^2 / |row|^2 (0 for a zero vector)."""
    dot = sum(a * b for a, b in zip(row, query))
    norm = sum(a * a for a in row)
    return Fraction(0) if norm == 0 or dot == 0 else Fraction(dot * abs(dot), norm)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(small_vectors, min_size=1, max_size=25),
    query=small_vectors,
    number=st.integers(0, 30),
    skip=st.one_of(st.none(), st.integers(0, 30)),
)
def test_similar_by_vector_ranks_like_numpy_with_ties_by_id(rows, query, number, skip):
    collection = Collection("p", None, model=CountingModel("property-3", 3))
    # ids whose string order differs from insertion order
    ids = [f"{(i * 7) % 31:02d}" for i in range(len(rows))]
    collection.conn.executemany(
        "insert into embeddings (collection_id, id, embedding) values (?, ?, ?)",
        [(collection.id, i, embsqlite.encode(r)) for i, r in zip(ids, rows)],
    )
    skip_id = None if skip is None else f"{skip:02d}"

    matrix = np.array(rows, dtype=np.float64)
    q = np.array(query, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(norms == 0, 0.0, matrix @ q / np.where(norms == 0, 1, norms))
    reference = {i: float(s) for i, s in zip(ids, scores)}
    keys = {i: _exact_key(r, query) for i, r in zip(ids, rows)}
    vector_of = {i: tuple(r) for i, r in zip(ids, rows)}
    kept = sorted((i for i in ids if i != skip_id), key=lambda i: (-keys[i], i))

    first = collection.similar_by_vector(query, number=number, skip_id=skip_id)
    # repeated searches of an unchanged database come from the vector cache: same answer
    assert collection.similar_by_vector(query, number=number, skip_id=skip_id) == first
    assert collection.similar_by_vector(query, number=number, skip_id=skip_id) == first

    got = [e.id for e in first]
    assert len(got) == min(number, len(kept))
    for entry in first:
        assert abs(entry.score - reference[entry.id]) <= 1e-9
    # best first; equal scores by id
    assert got == sorted(got, key=lambda i: (-next(e.score for e in first if e.id == i), i))
    # the same exact scores as the reference's top, group by group
    want = kept[: len(got)]
    assert [keys[i] for i in got] == [keys[i] for i in want]
    for key in set(keys[i] for i in got):
        chosen = {i for i in got if keys[i] == key}
        group = {i for i in kept if keys[i] == key}
        assert chosen <= group
        if len(chosen) < len(group):  # the group straddles the cut
            for left_out in group - chosen:
                # an identical vector has an identical score: the smaller id wins
                twins = [i for i in chosen if vector_of[i] == vector_of[left_out]]
                assert all(i < left_out for i in twins), (left_out, twins)
        else:
            assert chosen == group
    if not any(query):
        assert all(e.score == 0.0 for e in first)


# cosine_similarity: symmetric, within [-1, 1], 1.0 with itself; SQL == cache == fallback

_KINDS = ("normal", "subnormal", "huge", "mixed", "bits", "sparse", "zeros")


def _vector(gen: np.random.Generator, dim: int, kind: str) -> np.ndarray:
    """float32 values of one kind: subnormals only, values near FLT_MAX, magnitudes from
    1e-45 to 1e38 mixed, random bit patterns, mostly zeros, all zeros."""
    if kind == "zeros":
        return np.zeros(dim, dtype=np.float32)
    if kind == "bits":
        values = gen.integers(0, 2**32, dim, dtype=np.uint64).astype(np.uint32).view(np.float32)
        return np.where(np.isfinite(values), values, np.float32(0))
    base = gen.standard_normal(dim)
    if kind == "subnormal":
        base = base * 1e-41
    elif kind == "huge":
        base = np.clip(base * 1e38, -3.4e38, 3.4e38)
    elif kind == "mixed":
        base = np.clip(base * 10.0 ** gen.integers(-45, 39, dim), -3.4e38, 3.4e38)
    elif kind == "sparse":
        base = np.where(gen.random(dim) < 0.9, 0.0, base)
    return base.astype(np.float32)


@st.composite
def vector_pairs(draw):
    dim = draw(st.integers(1, 1536))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = _vector(gen, dim, draw(st.sampled_from(_KINDS)))
    b = _vector(gen, dim, draw(st.sampled_from(_KINDS)))
    # a few chosen values at chosen places: extremes, subnormals, zeros of either sign
    for index, value in draw(st.lists(st.tuples(st.integers(0, dim - 1), float32s), max_size=4)):
        (a if index % 2 else b)[index] = value
    relation = draw(st.sampled_from(("independent", "same", "opposite", "scaled")))
    if relation == "same":
        b = a.copy()
    elif relation == "opposite":
        b = -a
    elif relation == "scaled":
        b = (a * np.float32(0.5)).astype(np.float32)
    return a, b


def _c_cosine(conn, a: np.ndarray, b: np.ndarray) -> float:
    return conn.execute("select cosine_similarity(?, ?)", (a.tobytes(), b.tobytes())).fetchone()[0]


def _cache_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The score the vector cache's top-k scan gives row `a` for query `b`."""
    from embsqlite import _native

    ffi, lib = _native.ffi, _native.lib
    norms = ffi.new("double[]", 1)
    lib.embsqlite_norms(a.tobytes(), 1, len(a), norms)
    rows, scores = ffi.new("long long[]", 1), ffi.new("double[]", 1)
    found = lib.embsqlite_topk(a.tobytes(), norms, 1, len(a), b.tobytes(), 0, 1, -1, 1, rows, scores)
    assert found == 1
    return scores[0]


@settings(max_examples=300, deadline=None)
@given(vector_pairs())
def test_cosine_is_symmetric_bounded_and_the_same_everywhere(pair):
    from embsqlite import fallback

    a, b = pair
    conn = embsqlite.connect(":memory:")
    ab, ba = _c_cosine(conn, a, b), _c_cosine(conn, b, a)
    assert ab.hex() == ba.hex()
    assert -1.0 <= ab <= 1.0
    nonzero_a, nonzero_b = bool(np.any(a)), bool(np.any(b))
    assert _c_cosine(conn, a, a) == (1.0 if nonzero_a else 0.0)
    assert _c_cosine(conn, b, b) == (1.0 if nonzero_b else 0.0)
    if not (nonzero_a and nonzero_b):
        assert ab == 0.0
    elif np.array_equal(b, -a):
        assert ab == -1.0
    # the vector cache and the Python fallback: the same bits, both ways round
    assert _cache_cosine(a, b).hex() == ab.hex() == _cache_cosine(b, a).hex()
    assert fallback.cosine_similarity(a.tobytes(), b.tobytes()).hex() == ab.hex()
    assert fallback.cosine_similarity(b.tobytes(), a.tobytes()).hex() == ab.hex()
    assert _cache_cosine(a, a) == _c_cosine(conn, a, a)
    norm = conn.execute("select embedding_norm(?)", (a.tobytes(),)).fetchone()[0]
    assert fallback.embedding_norm(a.tobytes()).hex() == norm.hex()
