"""The C extension under fuzzing, sanitizers and valgrind.

- fuzz/fuzz_sql.c, built with clang -fsanitize=fuzzer,address,undefined, runs for a bounded
  time from the seed corpus: no crash, no sanitizer report, no broken promise.
- csrc/embsqlite.c built as a loadable extension with -fsanitize=address,undefined (by clang
  and by gcc, whose build also has the AVX2 clone of the hot loop) runs every bad input
  below in the real sqlite3 shell: the expected results and errors, and no report.
- The extension as installed (embsqlite.loadable_path()) runs the same inputs in the sqlite3
  shell under valgrind: the expected results and errors, and an error summary of zero.

clang comes from scripts/test.sh (apt: clang, libclang-rt-dev). Without it, on a developer
machine, the clang tests skip and say why; with CI set in the environment they fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import embsqlite

pytestmark = [pytest.mark.slow,
              pytest.mark.linux_only(reason="valgrind, libFuzzer and the ELF toolchain")]

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc" / "embsqlite.c"
FUZZ_DIR = ROOT / "fuzz"
# Bounded fuzzing time in CI; a longer session is described in fuzz/README.md.
FUZZ_SECONDS = int(os.environ.get("EMBSQLITE_FUZZ_SECONDS", "45"))
SANITIZER_REPORT = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|broken promise"
)

# little-endian float32 values, as hex
NAN, INF, NEG_INF, F1, FLT_MAX = "0000c07f", "0000807f", "000080ff", "0000803f", "ffff7f7f"


def blob(*values: str) -> str:
    """An SQL blob literal of the float32 values given as hex."""
    return "x'" + "".join(values) + "'"


ONE = blob(F1)
# 1,000,000 values of 0.5 as JSON text, built inside SQLite.
MILLION_JSON = "'[' || replace(hex(zeroblob(999999)), '00', '0.5,') || '0.5]'"
# Four rows against one constant query: the cached (auxdata) path of cosine_similarity.
ROWS = "(VALUES (x'0000803f00000000'), (x'000000000000803f'), (NULL), (x'0000803f0000803f'))"

# (SQL expression or full SELECT tail, expected): expected is the shell's output for the
# row (columns joined by '|', NULL shown as NULL), or ("error", text the message contains).
BAD_INPUTS: list[tuple[str, object]] = [
    # NULL in, NULL out
    ("cosine_similarity(NULL, NULL)", "NULL"),
    (f"cosine_similarity(NULL, {ONE})", "NULL"),
    (f"cosine_similarity({ONE}, NULL)", "NULL"),
    ("embedding_to_json(NULL)", "NULL"),
    ("embedding_from_json(NULL)", "NULL"),
    ("embedding_dimensions(NULL)", "NULL"),
    ("embedding_norm(NULL)", "NULL"),
    # text, integer, real where a blob is expected
    (f"cosine_similarity('abcd', {ONE})",
     ("error", "cosine_similarity: argument 1 must be a float32 BLOB, not TEXT")),
    (f"cosine_similarity({ONE}, 1)",
     ("error", "cosine_similarity: argument 2 must be a float32 BLOB, not INTEGER")),
    ("embedding_norm(1.5)", ("error", "embedding_norm: argument 1 must be a float32 BLOB, not REAL")),
    ("embedding_dimensions('x')", ("error", "embedding_dimensions: argument 1 must be a float32 BLOB")),
    ("embedding_to_json(42)", ("error", "embedding_to_json: argument 1 must be a float32 BLOB")),
    ("embedding_from_json(x'5b315d')", ("error", "embedding_from_json: the argument must be TEXT")),
    ("embedding_from_json(1)", ("error", "embedding_from_json: the argument must be TEXT")),
    # blobs of 1, 2, 3 and 7 bytes; blobs of different lengths
    ("embedding_dimensions(x'01')", ("error", "embedding_dimensions: argument 1 is a 1-byte blob")),
    ("embedding_to_json(x'0102')", ("error", "embedding_to_json: argument 1 is a 2-byte blob")),
    ("embedding_norm(x'010203')", ("error", "embedding_norm: argument 1 is a 3-byte blob")),
    ("cosine_similarity(x'01020304050607', x'01020304050607')",
     ("error", "cosine_similarity: argument 1 is a 7-byte blob")),
    (f"cosine_similarity({ONE}, x'0102030405060708090a0b')",
     ("error", "cosine_similarity: argument 2 is a 11-byte blob")),
    (f"cosine_similarity({ONE}, x'0000803f00000040')",
     ("error", "cosine_similarity: the vectors have different dimensions")),
    # the empty blob
    ("embedding_dimensions(x'')", "0"),
    ("embedding_to_json(x'')", "[]"),
    ("embedding_norm(x'')", "0.0"),
    ("cosine_similarity(x'', x'')", "0.0"),
    ("typeof(embedding_from_json('[]')), length(embedding_from_json('[]'))", "blob|0"),
    # zero vectors score 0.0
    ("cosine_similarity(zeroblob(12), x'0000803f0000803f0000803f')", "0.0"),
    ("cosine_similarity(x'0000803f0000803f0000803f', zeroblob(12))", "0.0"),
    ("cosine_similarity(zeroblob(12), zeroblob(12))", "0.0"),
    ("embedding_norm(zeroblob(16))", "0.0"),
    # NaN and infinity inside blobs; the largest float32 does not overflow
    (f"cosine_similarity({blob(NAN, F1)}, {blob(F1, F1)})",
     ("error", "cosine_similarity: the result is not finite")),
    (f"cosine_similarity({blob(F1, F1)}, {blob(INF, F1)})",
     ("error", "cosine_similarity: the result is not finite")),
    (f"cosine_similarity({blob(NEG_INF)}, {blob(NEG_INF)})", ("error", "cosine_similarity: the result is not finite")),
    (f"embedding_norm({blob(INF)})", ("error", "embedding_norm: the result is not finite")),
    (f"embedding_to_json({blob(F1, NAN)})", ("error", "embedding_to_json: the blob holds NaN or infinity")),
    (f"cosine_similarity({blob(FLT_MAX, FLT_MAX)}, {blob(FLT_MAX, FLT_MAX)})", "1.0"),
    (f"embedding_norm({blob(FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX)})", "6.80564693277058e+38"),
    (f"embedding_to_json({blob(FLT_MAX)})", "[3.4028235e38]"),
    # malformed JSON
    ("embedding_from_json('')", ("error", "embedding_from_json: expected '[' at character 1")),
    ("embedding_from_json('[')", ("error", "embedding_from_json: expected a number at character 2")),
    ("embedding_from_json('[1,')", ("error", "embedding_from_json: expected a number at character 4")),
    ("embedding_from_json('[1 2]')", ("error", "embedding_from_json: expected ',' or ']' at character 4")),
    ("embedding_from_json('[nan]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[Infinity]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[1e999]')", ("error", "embedding_from_json: number is not a finite float32")),
    ("embedding_from_json('[3.5e38]')", ("error", "embedding_from_json: number is not a finite float32")),
    ("embedding_from_json('{}')", ("error", "embedding_from_json: expected '['")),
    ("embedding_from_json('[\"a\"]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[1]x')", ("error", "embedding_from_json: unexpected text after the array")),
    ("embedding_from_json('[1]' || char(0) || 'x')",
     ("error", "embedding_from_json: unexpected text after the array")),
    ("embedding_from_json('[1,]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[01]')", ("error", "embedding_from_json: expected ',' or ']'")),
    ("embedding_from_json('[+1]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[.5]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[1.]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_from_json('[0x10]')", ("error", "embedding_from_json: expected ',' or ']'")),
    ("embedding_from_json('[[1]]')", ("error", "embedding_from_json: expected a number")),
    ("embedding_to_json(embedding_from_json(' [ 0.1 , -2e3 ,0, -1e-50 ] '))", "[0.1,-2e3,0,-0]"),
    # a very long JSON array, a dimension of 1,000,000, and a million against a million and one
    ("cosine_similarity(b, b), embedding_norm(b), embedding_dimensions(b), "
     f"length(embedding_to_json(b)) FROM (SELECT embedding_from_json({MILLION_JSON}) AS b)",
     "1.0|500.0|1000000|4000001"),
    ("cosine_similarity(zeroblob(4000000), zeroblob(4000000))", "0.0"),
    ("cosine_similarity(zeroblob(4000000), zeroblob(4000004))",
     ("error", "cosine_similarity: the vectors have different dimensions (1000000 and 1000001)")),
    # one constant query over several rows (the cached argument), then a row of another length
    (f"group_concat(ifnull(round(cosine_similarity(column1, x'0000803f00000000'), 6), 'N'), ' ') "
     f"FROM {ROWS}", "1.0 0.0 N 0.707107"),
    ("count(cosine_similarity(column1, x'0000803f00000000')) "
     "FROM (VALUES (x'0000803f00000000'), (x'0000803f'))",
     ("error", "cosine_similarity: the vectors have different dimensions (1 and 2)")),
    (f"count(cosine_similarity(column1, 'text')) FROM {ROWS}",
     ("error", "cosine_similarity: argument 2 must be a float32 BLOB, not TEXT")),
]


def bad_input_script() -> str:
    """One SELECT per line, each labelled, so results and errors map back to their case."""
    return "".join(f"SELECT 'case{i}', {expr};\n" for i, (expr, _) in enumerate(BAD_INPUTS))


def check_shell_results(stdout: str, stderr: str) -> None:
    """Every case printed its expected row, or failed with its expected message."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"case(\d+)\|(.*)$", line)
        if m:
            rows[int(m.group(1))] = m.group(2)
    errors = {}
    for line in stderr.splitlines():
        m = re.match(r"(?:Runtime|Parse) error near line (\d+): (.*)$", line)
        if m:
            errors[int(m.group(1)) - 1] = m.group(2)
    problems = []
    for i, (expr, expected) in enumerate(BAD_INPUTS):
        if isinstance(expected, tuple):
            if i in rows or expected[1] not in errors.get(i, ""):
                problems.append(f"{expr}: expected error {expected[1]!r}, got "
                                f"{errors.get(i, 'row ' + repr(rows.get(i)))!r}")
        elif rows.get(i) != expected or i in errors:
            problems.append(f"{expr}: expected {expected!r}, got {rows.get(i, errors.get(i))!r}")
    assert not problems, "\n".join(problems)


def run_shell(command: list[str], loadable: str, env: dict | None = None, timeout: int = 120):
    shell = shutil.which("sqlite3")
    assert shell, "the sqlite3 shell is required: apt-get install sqlite3"
    return subprocess.run(
        [*command, shell, "-batch", "-cmd", f".load {loadable} sqlite3_embsqlite_init",
         "-cmd", ".nullvalue NULL", ":memory:"],
        input=bad_input_script(), capture_output=True, text=True, env=env, timeout=timeout,
    )


def need_compiler(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not installed (scripts/test.sh installs it: apt-get install clang libclang-rt-dev)"
    if os.environ.get("CI"):
        pytest.fail(why)
    print(f"SKIP: {why}")
    pytest.skip(why)


def compile_(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stderr}"


def test_bad_inputs_reach_an_error_of_every_function():
    """Each SQL function the extension registers with arguments (the list the docs and
    csrc/embsqlite.c's header share) has a bad input whose expected outcome is an error
    naming it, so the sanitizer and valgrind runs reach every function's error path."""
    from embsqlite import loading

    errors = [expected[1] for _, expected in BAD_INPUTS if isinstance(expected, tuple)]
    for name in loading.FUNCTIONS:
        if name == "embsqlite_version":
            continue  # no arguments, no error path
        assert any(text.startswith(name + ":") for text in errors), name


def test_fuzz_smoke(tmp_path):
    """libFuzzer with ASan and UBSan from the seed corpus for FUZZ_SECONDS: zero reports."""
    clang = need_compiler("clang")
    binary = tmp_path / "fuzz_sql"
    compile_([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
              "-fno-sanitize-recover=undefined", "-DSQLITE_CORE", f"-I{ROOT / 'csrc'}",
              str(FUZZ_DIR / "fuzz_sql.c"), str(CSRC), "-lsqlite3", "-lm", "-o", str(binary)])
    seeds = sorted((FUZZ_DIR / "corpus").iterdir())
    assert len(seeds) >= 5
    work = tmp_path / "corpus"  # new inputs go here, not into the repository's corpus
    work.mkdir()
    done = subprocess.run(
        [str(binary), str(work), str(FUZZ_DIR / "corpus"), f"-max_total_time={FUZZ_SECONDS}",
         "-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, cwd=tmp_path, timeout=FUZZ_SECONDS + 120,
        env={**os.environ, "ASAN_OPTIONS": "quarantine_size_mb=64"},
    )
    log = done.stderr
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    report = SANITIZER_REPORT.search(log)
    assert done.returncode == 0 and not crashes and not report, (
        f"exit {done.returncode}, artifacts {crashes}\n{log[-6000:]}")
    runs = int(re.search(r"stat::number_of_executed_units: (\d+)", log).group(1))
    coverage = re.findall(r"cov: (\d+)", log)
    print(f"fuzz_sql: {runs} executions in {FUZZ_SECONDS} s, 0 crashes, 0 sanitizer reports, "
          f"coverage {coverage[-1] if coverage else '?'} edges, corpus {len(list(work.iterdir()))} new inputs")
    # a working build runs thousands of inputs a second; a handful means it hardly ran
    assert runs >= 20 * FUZZ_SECONDS


@pytest.mark.parametrize("compiler", ["clang", "gcc"])
def test_sanitized_extension_bad_inputs(tmp_path, compiler):
    """The loadable extension built with ASan+UBSan, in the sqlite3 shell: no report."""
    cc = need_compiler(compiler)
    so = tmp_path / "embsqlite.so"
    flags = ["-O1", "-shared-libasan"] if compiler == "clang" else ["-O3"]  # gcc: production -O3
    compile_([cc, "-g", *flags, "-fPIC", "-shared", "-fsanitize=address,undefined",
              "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
              str(CSRC), "-o", str(so), "-lm"])
    runtime_name = "libclang_rt.asan-x86_64.so" if compiler == "clang" else "libasan.so"
    runtime = subprocess.run([cc, f"-print-file-name={runtime_name}"], capture_output=True,
                             text=True).stdout.strip()
    assert os.path.isabs(runtime) and os.path.exists(runtime), f"no ASan runtime for {compiler}"
    env = {**os.environ, "LD_PRELOAD": runtime,
           # the shell itself is not built with ASan; leaks are valgrind's job below
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    done = run_shell([], str(so), env=env)
    report = SANITIZER_REPORT.search(done.stderr)
    assert not report, done.stderr[-6000:]
    assert done.returncode == 1, done.stderr[-3000:]  # 1: the expected SQL errors, nothing worse
    check_shell_results(done.stdout, done.stderr)
    print(f"{compiler} ASan+UBSan build: {len(BAD_INPUTS)} bad-input cases, 0 reports")


def test_valgrind_bad_inputs(tmp_path):
    """The installed loadable in the sqlite3 shell under valgrind: ERROR SUMMARY: 0 errors."""
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is required: apt-get install valgrind (scripts/test.sh does)"
    log = tmp_path / "valgrind.log"
    done = run_shell(
        [valgrind, "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
         f"--log-file={log}"],
        embsqlite.loadable_path(), timeout=300,
    )
    text = log.read_text()
    summary = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    assert done.returncode != 99 and summary and summary.group(1) == "0", text[-6000:]
    assert done.returncode == 1, done.stderr[-3000:]  # 1: the expected SQL errors, nothing worse
    check_shell_results(done.stdout, done.stderr)
    print(f"valgrind: {len(BAD_INPUTS)} bad-input cases, {summary.group(0)}")
