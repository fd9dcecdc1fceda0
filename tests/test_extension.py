"""The C SQL functions: accuracy against a float64 reference, and every bad input."""
from __future__ import annotations

import array
import math
import re
import sqlite3

import numpy as np
import pytest

import embsqlite
from embsqlite import sql

DIMENSIONS = [1, 2, 3, 7, 16, 384, 1536, 4096]


def f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def reference_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64 of the float32 values actually stored."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 or nb == 0:
        return 0.0
    return float(a64 @ b64 / (na * nb))


def random_table(conn, seed: int, rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Table t(id, e) of `rows` random float32 vectors, and a random query."""
    gen = np.random.default_rng(seed)
    data = f32(gen.standard_normal((rows, dim)))
    conn.execute("create table t (id integer primary key, e blob)")
    conn.executemany("insert into t values (?, ?)", [(i, r.tobytes()) for i, r in enumerate(data)])
    return data, f32(gen.standard_normal(dim))


def test_functions_are_the_c_ones(conn):
    assert sql.uses_c(conn)
    assert conn.execute("select embsqlite_version()").fetchone()[0] == embsqlite.__version__


@pytest.mark.parametrize("dim", DIMENSIONS)
def test_cosine_matches_float64_reference(conn, dim):
    gen = np.random.default_rng(dim)
    for _ in range(20):
        a = f32(gen.standard_normal(dim))
        b = f32(gen.standard_normal(dim) + 0.3 * a)  # correlated, so scores vary
        got = conn.execute(
            "select cosine_similarity(?, ?)", (a.tobytes(), b.tobytes())
        ).fetchone()[0]
        want = reference_cosine(a, b)
        assert abs(got - want) <= 1e-5 * abs(want) + 1e-12, (dim, got, want)


@pytest.mark.parametrize("dim", [3, 384, 4096])
def test_cached_query_over_many_rows(conn, dim):
    """The constant query is decoded once per statement; every row must still be exact."""
    rows, query = random_table(conn, seed=7, rows=300, dim=dim)
    got = conn.execute(
        "select id, cosine_similarity(e, ?) from t order by id", (query.tobytes(),)
    ).fetchall()
    for i, score in got:
        want = reference_cosine(rows[i], query)
        assert abs(score - want) <= 1e-5 * abs(want) + 1e-12
    # A second statement with a different query must not reuse the first one's cache.
    other = -query
    first = conn.execute("select cosine_similarity(e, ?) from t where id = 0", (other.tobytes(),))
    assert first.fetchone()[0] == pytest.approx(-got[0][1], rel=1e-9)


def test_query_in_first_position_is_exact_too(conn):
    rows, query = random_table(conn, seed=3, rows=50, dim=16)
    got = conn.execute("select id, cosine_similarity(?, e) from t", (query.tobytes(),)).fetchall()
    for i, score in got:
        assert score == pytest.approx(reference_cosine(rows[i], query), rel=1e-9)


def test_order_by_ranks_like_numpy(conn):
    rows, query = random_table(conn, seed=11, rows=2000, dim=64)
    got = [
        r[0]
        for r in conn.execute(
            "select id from t order by cosine_similarity(e, ?) desc limit 10", (query.tobytes(),)
        )
    ]
    scores = rows.astype(np.float64) @ query.astype(np.float64)
    scores /= np.linalg.norm(rows.astype(np.float64), axis=1) * np.linalg.norm(query)
    assert got == list(np.argsort(-scores)[:10])


def test_zero_and_empty_vectors_score_zero(conn):
    zero = f32([0, 0, 0]).tobytes()
    one = f32([1, 2, 3]).tobytes()
    assert conn.execute("select cosine_similarity(?, ?)", (zero, one)).fetchone()[0] == 0.0
    assert conn.execute("select cosine_similarity(?, ?)", (one, zero)).fetchone()[0] == 0.0
    assert conn.execute("select cosine_similarity(?, ?)", (zero, zero)).fetchone()[0] == 0.0
    assert conn.execute("select cosine_similarity(x'', x'')").fetchone()[0] == 0.0


def test_identical_and_opposite(conn):
    v = f32([0.25, -1.5, 3.0, 7.0])
    assert conn.execute("select cosine_similarity(?, ?)", (v.tobytes(),) * 2).fetchone()[0] == (
        pytest.approx(1.0, abs=1e-12)
    )
    assert conn.execute(
        "select cosine_similarity(?, ?)", (v.tobytes(), (-v).tobytes())
    ).fetchone()[0] == pytest.approx(-1.0, abs=1e-12)


def test_extreme_magnitudes_do_not_overflow(conn):
    big = f32([3e38, 3e38, -3e38]).tobytes()
    tiny = f32([1e-45, 1e-45, 0]).tobytes()
    assert conn.execute("select cosine_similarity(?, ?)", (big, big)).fetchone()[0] == (
        pytest.approx(1.0)
    )
    assert conn.execute("select cosine_similarity(?, ?)", (tiny, tiny)).fetchone()[0] == (
        pytest.approx(1.0)
    )
    assert conn.execute("select embedding_norm(?)", (big,)).fetchone()[0] == pytest.approx(
        math.sqrt(3) * float(np.float32(3e38))
    )


@pytest.mark.parametrize(
    "expr",
    [
        "cosine_similarity(null, x'0000803f')",
        "cosine_similarity(x'0000803f', null)",
        "cosine_similarity(null, null)",
        "cosine_similarity(null, 'text')",
        "embedding_to_json(null)",
        "embedding_from_json(null)",
        "embedding_dimensions(null)",
        "embedding_norm(null)",
    ],
)
def test_null_in_null_out(conn, expr):
    assert conn.execute(f"select {expr}").fetchone()[0] is None


BAD_INPUTS = [
    ("select cosine_similarity(x'000000', x'00000000')", "cosine_similarity: argument 1 is a 3-byte blob"),
    ("select cosine_similarity(x'00000000', x'00000000000000')", "cosine_similarity: argument 2 is a 7-byte blob"),
    ("select cosine_similarity(x'00', x'00')", "multiple of 4"),
    ("select cosine_similarity('abcd', x'00000000')", "cosine_similarity: argument 1 must be a float32 BLOB, not TEXT"),
    ("select cosine_similarity(x'00000000', 12)", "cosine_similarity: argument 2 must be a float32 BLOB, not INTEGER"),
    ("select cosine_similarity(1.5, x'00000000')", "not REAL"),
    ("select cosine_similarity(x'0000803f', x'0000803f0000803f')", "cosine_similarity: the vectors have different dimensions (1 and 2)"),
    ("select cosine_similarity(x'0000c07f', x'0000803f')", "cosine_similarity: the result is not finite"),
    ("select cosine_similarity(x'0000807f', x'0000803f')", "cosine_similarity: the result is not finite"),
    ("select embedding_norm(x'0000c07f')", "embedding_norm: the result is not finite"),
    ("select embedding_norm(x'000000')", "embedding_norm: argument 1 is a 3-byte blob"),
    ("select embedding_norm('x')", "embedding_norm: argument 1 must be a float32 BLOB, not TEXT"),
    ("select embedding_dimensions(x'00000000000000')", "embedding_dimensions: argument 1 is a 7-byte blob"),
    ("select embedding_dimensions(3)", "embedding_dimensions: argument 1 must be a float32 BLOB"),
    ("select embedding_to_json(x'0000c07f')", "embedding_to_json: the blob holds NaN or infinity"),
    ("select embedding_to_json(x'00')", "embedding_to_json: argument 1 is a 1-byte blob"),
    ("select embedding_to_json('[1]')", "embedding_to_json: argument 1 must be a float32 BLOB, not TEXT"),
    ("select embedding_from_json('')", "embedding_from_json: expected '['"),
    ("select embedding_from_json('[')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[1,')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[1 2]')", "embedding_from_json: expected ',' or ']'"),
    ("select embedding_from_json('[nan]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[Infinity]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[1e999]')", "embedding_from_json: number is not a finite float32"),
    ("select embedding_from_json('[3.5e38]')", "embedding_from_json: number is not a finite float32"),
    ("select embedding_from_json('{}')", "embedding_from_json: expected '['"),
    ("select embedding_from_json('[\"a\"]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[1]x')", "embedding_from_json: unexpected text after the array"),
    ("select embedding_from_json('[01]')", "embedding_from_json: expected ',' or ']'"),
    ("select embedding_from_json('[+1]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[1.]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[.5]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json('[0x10]')", "embedding_from_json: expected ',' or ']'"),
    ("select embedding_from_json('[1,]')", "embedding_from_json: expected a number"),
    ("select embedding_from_json(x'5b315d')", "embedding_from_json: the argument must be TEXT"),
    ("select embedding_from_json(5)", "embedding_from_json: the argument must be TEXT"),
]


@pytest.mark.parametrize("query, message", BAD_INPUTS)
def test_bad_input_is_a_clear_sql_error(conn, query, message):
    with pytest.raises(sqlite3.OperationalError, match=re.escape(message)):
        conn.execute(query).fetchall()


def test_error_on_one_row_does_not_hide_in_a_scan(conn):
    conn.execute("create table t (e blob)")
    conn.executemany("insert into t values (?)", [(f32([1, 2]).tobytes(),), (b"\x00" * 6,)])
    with pytest.raises(sqlite3.OperationalError, match="argument 1 is a 6-byte blob"):
        conn.execute("select cosine_similarity(e, ?) from t", (f32([1, 1]).tobytes(),)).fetchall()


def test_json_round_trip_is_exact(conn):
    gen = np.random.default_rng(5)
    values = np.concatenate(
        [
            f32(gen.standard_normal(500)),
            f32(gen.standard_normal(100) * 1e30),
            f32(gen.standard_normal(100) * 1e-30),
            f32([0.0, -0.0, 1.0, 0.1, 1e-45, 3.4028235e38, -3.4028235e38, 1.17549435e-38]),
        ]
    )
    text = conn.execute("select embedding_to_json(?)", (values.tobytes(),)).fetchone()[0]
    assert np.array_equal(f32(__import__("json").loads(text)), values)
    back = conn.execute("select embedding_from_json(?)", (text,)).fetchone()[0]
    assert back == values.tobytes()


def test_json_is_short_and_accepts_json_spacing(conn):
    blob = conn.execute("select embedding_from_json(' [ 0.1 ,-2e3,\n1E-7 , 0, -0.0 ] ')").fetchone()[0]
    assert blob == f32([0.1, -2000, 1e-7, 0, -0.0]).tobytes()
    text = conn.execute("select embedding_to_json(?)", (blob,)).fetchone()[0]
    assert text == "[0.1,-2000,1e-07,0,-0]"
    assert conn.execute("select embedding_to_json(x'')").fetchone()[0] == "[]"
    assert conn.execute("select embedding_from_json('[]')").fetchone()[0] == b""


def test_dimensions_and_norm(conn):
    blob = f32([3, 4, 0]).tobytes()
    assert conn.execute("select embedding_dimensions(?)", (blob,)).fetchone()[0] == 3
    assert conn.execute("select embedding_norm(?)", (blob,)).fetchone()[0] == 5.0
    assert conn.execute("select embedding_dimensions(x'')").fetchone()[0] == 0
    assert conn.execute("select embedding_norm(x'')").fetchone()[0] == 0.0


def test_deterministic_and_innocuous_flags(conn):
    """DETERMINISTIC allows index expressions; INNOCUOUS allows views with trusted_schema off."""
    conn.execute("create table t (e blob)")
    conn.execute("create index t_dims on t (embedding_dimensions(e))")
    conn.execute("insert into t values (?)", (f32([1, 2]).tobytes(),))
    conn.execute("create view v as select embedding_norm(e) as n, cosine_similarity(e, e) as c from t")
    conn.execute("pragma trusted_schema = off")
    assert conn.execute("select n, c from v").fetchone() == (pytest.approx(math.sqrt(5)), pytest.approx(1.0))


def test_python_encode_decode_match_sql(conn):
    values = [0.5, -1.25, 3.0e10, 1e-20]
    blob = embsqlite.encode(values)
    assert blob == array.array("f", values).tobytes()
    assert blob == conn.execute("select embedding_from_json(?)", (str(values),)).fetchone()[0]
    assert embsqlite.decode(blob) == tuple(float(np.float32(v)) for v in values)


@pytest.mark.parametrize("dim", [384, 1536, 4096])
def test_encode_decode_round_trip(dim):
    values = np.random.default_rng(dim).standard_normal(dim).astype(np.float32)
    blob = embsqlite.encode(values.tolist())
    assert blob == values.astype("<f4").tobytes()
    assert embsqlite.decode(blob) == tuple(values.tolist())


@pytest.mark.parametrize("bad", [[float("nan")], [1.0, float("inf")], [1e39], ["a"], [None]])
def test_encode_rejects_non_finite_and_non_numbers(bad):
    with pytest.raises(ValueError):
        embsqlite.encode(bad)


def test_decode_rejects_bad_length():
    with pytest.raises(ValueError, match="multiple of 4"):
        embsqlite.decode(b"\x00\x00\x00")
