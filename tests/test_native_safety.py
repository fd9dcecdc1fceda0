"""csrc/native.c (the vector cache's matrix reader and top-k scan) under AddressSanitizer,
UBSan and valgrind: fuzz/native_check.c drives it outside Python with random matrices,
ranges, ties, misaligned buffers, NaN and malformed stored rows, checking every result
against brute force."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "fuzz" / "native_check.c"


def build(tmp_path: Path, name: str, flags: list[str]) -> Path:
    out = tmp_path / name
    subprocess.run(
        ["gcc", "-g", *flags, "-I", str(ROOT / "csrc"), str(DRIVER), "-o", str(out),
         "-lsqlite3", "-lm"],
        check=True, capture_output=True, text=True,
    )
    return out


@pytest.mark.linux_only(reason="libsqlite3-dev, clang's sanitizer runtimes")
def test_native_code_under_address_and_undefined_sanitizers(tmp_path):
    binary = build(tmp_path, "asan", ["-O1", "-fsanitize=address,undefined",
                                      "-fno-sanitize-recover=all"])
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "runtime error" not in result.stderr and "Sanitizer" not in result.stderr
    assert "native checks passed" in result.stdout
    print(result.stdout.strip())


@pytest.mark.linux_only(reason="valgrind")
def test_native_code_under_valgrind(tmp_path):
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is required (scripts/test.sh installs it)"
    binary = build(tmp_path, "plain", ["-O2"])
    result = subprocess.run([valgrind, "-q", "--error-exitcode=99", str(binary)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "native checks passed" in result.stdout
