"""The C SQL functions: accuracy against a float64 reference, and every bad input."""
from __future__ import annotations

import array
import math
import re
import sqlite3

import numpy as np
import pytest

import embsqlite
from embsqlite import fallback, loading

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
    assert loading.uses_c(conn)
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
    assert conn.execute("select cosine_similarity(?, ?)", (v.tobytes(),) * 2).fetchone()[0] == 1.0
    assert conn.execute(
        "select cosine_similarity(?, ?)", (v.tobytes(), (-v).tobytes())
    ).fetchone()[0] == -1.0


def _cosines(conn, pairs) -> list[float]:
    return [
        conn.execute("select cosine_similarity(?, ?)", (a.tobytes(), b.tobytes())).fetchone()[0]
        for a, b in pairs
    ]


@pytest.mark.parametrize("dim", DIMENSIONS)
def test_cosine_is_symmetric_to_the_bit_and_one_with_itself(conn, dim):
    """Expression indexes and joins rely on cos(a, b) == cos(b, a) and cos(a, a) == 1.0
    exactly; summing the two norms in different orders broke both for about half of all
    random vectors."""
    gen = np.random.default_rng(100 + dim)
    vectors = [f32(gen.standard_normal(dim) * 10.0 ** gen.integers(-20, 20)) for _ in range(60)]
    pairs = list(zip(vectors[::2], vectors[1::2]))
    forward = _cosines(conn, pairs)
    backward = _cosines(conn, [(b, a) for a, b in pairs])
    assert [s.hex() for s in forward] == [s.hex() for s in backward]
    assert _cosines(conn, [(v, v) for v in vectors]) == [1.0] * len(vectors)
    assert _cosines(conn, [(v, -v) for v in vectors]) == [-1.0] * len(vectors)
    # the constant (cached) argument gives the same bits as a per-row one
    conn.execute("create table t (id integer primary key, e blob)")
    conn.executemany("insert into t values (?, ?)", [(i, v.tobytes()) for i, v in enumerate(vectors)])
    query = vectors[0].tobytes()
    scan = [r[0] for r in conn.execute("select cosine_similarity(e, ?) from t order by id", (query,))]
    scan_first = [r[0] for r in conn.execute("select cosine_similarity(?, e) from t order by id", (query,))]
    assert scan == scan_first == _cosines(conn, [(v, vectors[0]) for v in vectors])
    assert scan[0] == 1.0


def test_cosine_never_leaves_minus_one_to_one(conn):
    """Nearly parallel vectors whose rounded quotient exceeded 1.0 are clamped."""
    gen = np.random.default_rng(4)
    seen_above = 0
    for dim in (3, 17, 384):
        for _ in range(300):
            a = f32(gen.standard_normal(dim))
            b = f32(a * np.float32(1 + 2**-20))  # the same direction, other roundings
            for x, y in ((a, b), (a, -b)):
                score = _cosines(conn, [(x, y)])[0]
                assert -1.0 <= score <= 1.0
                seen_above += abs(score) == 1.0
    assert seen_above  # the bound is reached, never passed


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
    assert text == "[0.1,-2e3,1e-7,0,-0]"
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


# embedding_to_json: the shortest text, the same in C and in the Python fallback


def _float32s_from_bits(bits: np.ndarray) -> np.ndarray:
    return bits.astype(np.uint32).view(np.float32)


def _every_kind_of_float32(seed: int, count: int) -> np.ndarray:
    """Random bit patterns (NaN and infinity dropped), every subnormal bit length with its
    neighbours, and the ends of every binade (powers of two have lopsided intervals)."""
    gen = np.random.default_rng(seed)
    bits = [gen.integers(0, 2**32, count, dtype=np.uint64)]
    for length in range(1, 24):  # subnormals: 1 bit to 23 bits of mantissa
        low = 1 << (length - 1)
        some = list(gen.integers(low, 1 << length, 8))
        bits.append(np.array([low, low + 1, (1 << length) - 1] + some))
    exponents = np.arange(0, 255, dtype=np.uint64) << np.uint64(23)
    bits += [exponents, exponents + 1, exponents | np.uint64(0x7FFFFF)]
    values = _float32s_from_bits(np.concatenate(bits))
    values = values[np.isfinite(values)]
    return np.concatenate([values, -values])


def _digits(text: str) -> tuple[str, float]:
    """The significant digits of a decimal number's text, and its value."""
    mantissa = text.lstrip("-").partition("e")[0].replace(".", "")
    return mantissa.strip("0") or "0", float(text)


def test_json_text_is_the_shortest_that_reads_back(conn):
    """Each value has exactly the digits of numpy's shortest unique float32 text (Dragon4,
    which is really shortest for float32), e.g. 1e-45 where 1.4013e-45 was written."""
    values = _every_kind_of_float32(seed=1, count=20000)
    blob = values.astype("<f4").tobytes()
    text = conn.execute("select embedding_to_json(?)", (blob,)).fetchone()[0]
    parts = text[1:-1].split(",")
    assert len(parts) == len(values)
    for value, part in zip(values.tolist(), parts):
        reference = np.format_float_scientific(np.float32(value), unique=True)
        assert _digits(part)[0] == _digits(reference)[0], (value, part, reference)
        assert np.float32(float(part)) == np.float32(value) and float(part) == float(reference)
    assert conn.execute("select embedding_from_json(?)", (text,)).fetchone()[0] == blob


@pytest.mark.parametrize(
    "value, text",
    [
        (1e-45, "1e-45"), (3e-45, "3e-45"), (1.1754942e-38, "1.1754942e-38"),
        (1.17549435e-38, "1.1754944e-38"), (3.4028235e38, "3.4028235e38"),
        (2.0**-126, "1.1754944e-38"),
        (0.1, "0.1"), (0.01, "0.01"), (1e-3, "1e-3"), (100.0, "100"), (1000.0, "1e3"),
        (1024.0, "1024"), (123456789.0, "123456790"), (0.33333334, "0.33333334"),
        (-2.5, "-2.5"), (16777216.0, "16777216"), (2.0**24 + 2, "16777218"), (1e10, "1e10"),
    ],
)
def test_json_text_of_known_values(conn, value, text):
    blob = f32([value]).tobytes()
    assert conn.execute("select embedding_to_json(?)", (blob,)).fetchone()[0] == f"[{text}]"
    assert fallback.embedding_to_json(blob) == f"[{text}]"


def _fallback_connection() -> sqlite3.Connection:
    """A stdlib connection whose SQL functions are the Python fallback's."""
    import warnings

    connection = sqlite3.connect(":memory:")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fallback.register(connection)
    assert not loading.uses_c(connection)
    return connection


def test_fallback_writes_and_reads_json_like_c(conn):
    """The same text for every float32 (and the same refusal of NaN and infinity), and the
    same blob when that text, or any other JSON number, is read back."""
    python_conn = _fallback_connection()
    values = _every_kind_of_float32(seed=2, count=20000)
    blob = values.astype("<f4").tobytes()
    text = conn.execute("select embedding_to_json(?)", (blob,)).fetchone()[0]
    assert python_conn.execute("select embedding_to_json(?)", (blob,)).fetchone()[0] == text
    assert python_conn.execute("select embedding_from_json(?)", (text,)).fetchone()[0] == blob
    # doubles and long decimals: read to the nearest double, then to float32, in both
    gen = np.random.default_rng(3)
    doubles = gen.standard_normal(2000) * 10.0 ** gen.integers(-46, 39, 2000)
    doubles = doubles[np.abs(doubles) < 3.4028235677973366e38]
    for source in (repr(doubles.tolist()).replace(" ", ""),
                   "[" + ",".join(f"{d:.25e}" for d in doubles[:300]) + "]"):
        want = conn.execute("select embedding_from_json(?)", (source,)).fetchone()[0]
        assert python_conn.execute("select embedding_from_json(?)", (source,)).fetchone()[0] == want
        assert want == np.array([float(x) for x in source[1:-1].split(",")]).astype("<f4").tobytes()
    for special in ("0000c07f", "0000807f", "000080ff", "0100807f"):  # NaNs and infinities
        bad = bytes.fromhex("0000803f" + special)
        with pytest.raises(sqlite3.OperationalError, match="embedding_to_json: the blob holds NaN"):
            conn.execute("select embedding_to_json(?)", (bad,)).fetchone()
        with pytest.raises(ValueError, match="embedding_to_json: the blob holds NaN"):
            fallback.embedding_to_json(bad)


def test_fallback_arithmetic_is_the_same_bits_as_c(conn):
    python_conn = _fallback_connection()
    gen = np.random.default_rng(6)
    for dim in (1, 15, 16, 17, 33, 384, 1536):
        for scale in (1.0, 1e-42, 1e36):
            a = f32(gen.standard_normal(dim) * scale)
            b = f32(gen.standard_normal(dim) * scale)
            for query in ("select cosine_similarity(?, ?)", "select embedding_norm(?)"):
                args = (a.tobytes(), b.tobytes()) if "cosine" in query else (a.tobytes(),)
                want = conn.execute(query, args).fetchone()[0]
                assert python_conn.execute(query, args).fetchone()[0].hex() == want.hex()


@pytest.mark.parametrize("query, message", BAD_INPUTS)
def test_fallback_refuses_bad_input_with_the_same_message(conn, query, message):
    """The fallback's errors say exactly what C's say (hosts such as apsw show them)."""
    with pytest.raises(sqlite3.OperationalError) as c_error:
        conn.execute(query).fetchall()
    name, args = re.fullmatch(r"select (\w+)\((.*)\)", query).groups()
    values = conn.execute(f"select {args}").fetchone()
    with pytest.raises(ValueError) as py_error:
        getattr(fallback, name)(*values)
    assert str(py_error.value) == str(c_error.value)


# Too big and out of memory name the function like every other error


def _shell(sqlite3_shell: str, loadable: str, script: str, db: str = ":memory:") -> str:
    import subprocess

    done = subprocess.run(
        [sqlite3_shell, db], input=f".load {loadable}\n{script}\n",
        capture_output=True, text=True, timeout=120,
    )
    return done.stdout + done.stderr


THIRD = "embedding_from_json('[' || replace(hex(zeroblob({n})), '00', '0.33333334,') || '1]')"
ONES = "embedding_from_json('[' || replace(hex(zeroblob({n})), '00', '1,') || '1]')"


def test_too_big_names_the_function(sqlite3_shell, loadable, conn):
    """A result longer than SQLITE_LIMIT_LENGTH: code SQLITE_TOOBIG (18), and the
    function's name in the message."""
    out = _shell(sqlite3_shell, loadable, "\n".join([
        f"create table t as select {THIRD.format(n=199)} as e;",  # 800 bytes, 2,200 as text
        ".limit length 1000",
        "select length(embedding_to_json(e)) from t;",
        f"select length({ONES.format(n=299)});",  # 601 bytes of text, 1,200 as a blob
        "select 'still usable';",
    ]))
    assert re.search(r"embedding_to_json: the result is too big: longer than this connection's "
                     r"length limit of 1000 bytes \(SQLITE_LIMIT_LENGTH\) \(18\)", out), out
    assert re.search(r"embedding_from_json: the result is too big.*\(18\)", out), out
    assert "string or blob too big" not in out and "still usable" in out
    # the same through Python's sqlite3 (DataError is its class for SQLITE_TOOBIG)
    limit = getattr(conn, "setlimit", None)
    if limit is not None:
        limit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        with pytest.raises(sqlite3.DataError, match="embedding_from_json: the result is too big"):
            conn.execute(f"select {ONES.format(n=299)}").fetchone()


def test_out_of_memory_names_the_function(sqlite3_shell, loadable, tmp_path):
    """SQLite's hard heap limit makes the functions' allocations fail: code SQLITE_NOMEM
    (7), and the function's name in the message."""
    out = _shell(sqlite3_shell, loadable, "\n".join([
        "pragma cache_size = -64;",  # pages stay on disk, out of the heap
        f"create table t as select {THIRD.format(n=300000)} as e;",  # 1.2 MB, 3.3 MB as text
        "create table j as select '[' || replace(hex(zeroblob(900000)), '00', '1,') || '1]' as j;",
        "pragma hard_heap_limit = 4000000;",
        "select length(embedding_to_json(e)) from t;",
        "select length(embedding_from_json(j)) from j;",  # 1.8 MB of text, 3.6 MB as a blob
        "select cosine_similarity(x'0000803f', x'0000803f');",  # and the connection lives on
    ]), db=str(tmp_path / "big.db"))
    assert re.search(r"embedding_to_json: out of memory \(7\)", out), out
    assert re.search(r"embedding_from_json: out of memory \(7\)", out), out
    assert "\n1.0\n" in out, out


@pytest.fixture(scope="module")
def decimal_comma_locale(tmp_path_factory) -> dict[str, str]:
    """Environment for a process under de_DE.UTF-8 (decimal comma), compiled from the
    system's locale sources into a private LOCPATH (the `locales` package)."""
    import shutil
    import subprocess

    localedef = shutil.which("localedef")
    assert localedef, "localedef is required (apt-get install locales; scripts/setup.sh does)"
    where = tmp_path_factory.mktemp("locales")
    subprocess.run([localedef, "-i", "de_DE", "-f", "UTF-8", str(where / "de_DE.UTF-8")],
                   check=True, capture_output=True, timeout=120)
    return {"LOCPATH": str(where), "LC_ALL": "de_DE.UTF-8"}


@pytest.mark.slow
@pytest.mark.linux_only(reason="glibc's localedef and LOCPATH")
def test_json_parsing_and_printing_ignore_a_decimal_comma_locale(conn, decimal_comma_locale):
    """Under a locale whose decimal point is a comma (set for C too, as an application
    may), embedding_from_json still reads '0.5' and embedding_to_json still writes it;
    the control shows that C's own strtod is affected in that process."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import ctypes, json, locale, embsqlite\n"
        "locale.setlocale(locale.LC_ALL, '')\n"
        "libc = ctypes.CDLL(None); libc.strtod.restype = ctypes.c_double\n"
        "libc.strtod.argtypes = [ctypes.c_char_p, ctypes.c_void_p]\n"
        "conn = embsqlite.connect(':memory:')\n"
        "text = '[0.5, -1.25e-3, 3, 1e10, 0.1]'\n"
        "blob = conn.execute('select embedding_from_json(?)', (text,)).fetchone()[0]\n"
        "out = conn.execute('select embedding_to_json(?)', (blob,)).fetchone()[0]\n"
        "print(json.dumps({'point': locale.localeconv()['decimal_point'],\n"
        "                  'strtod': libc.strtod(b'0.5', None), 'blob': blob.hex(),\n"
        "                  'json': out, 'c': embsqlite.loading.uses_c(conn)}))\n"
    )
    env = {**os.environ, **decimal_comma_locale}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["point"] == "," and got["strtod"] == 0.0  # the locale is in force in C
    assert got["c"] is True
    assert got["blob"] == np.array([0.5, -1.25e-3, 3, 1e10, 0.1], "<f4").tobytes().hex()
    # the same text as in this process's C locale
    assert got["json"] == conn.execute(
        "select embedding_to_json(?)", (bytes.fromhex(got["blob"]),)).fetchone()[0]
    assert got["json"] == "[0.5,-0.00125,3,1e10,0.1]"
