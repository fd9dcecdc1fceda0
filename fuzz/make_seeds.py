"""Write the seed corpus of fuzz_sql (fuzz/corpus/) in the input format of fuzz_sql.c.

Run from anywhere: python fuzz/make_seeds.py. The seeds are small and checked in; this script
only documents how they were made, and remakes them if the input format changes.
"""
from __future__ import annotations

import struct
from pathlib import Path

# Operations (first byte of each, modulo 10), as in LLVMFuzzerTestOneInput.
COSINE, TO_JSON, FROM_JSON, DIMENSIONS, NORM, AUX_PLAIN, AUX_ORDER, AUX_NESTED, ROUNDTRIP, PAIR = range(10)
# Argument kinds (first byte of each, modulo 10), as in value_read().
NULL, INT, REAL, TEXT, BLOB, REPEAT, ZERO, JSON, EMPTY_BLOB, EMPTY_TEXT = range(10)


def length(n: int) -> bytes:
    """rd_len(): one byte, or 255 and two little-endian bytes."""
    return bytes([n]) if n < 255 else bytes([255]) + struct.pack("<H", n)


def blob(*floats: float) -> bytes:
    data = struct.pack(f"<{len(floats)}f", *floats)
    return bytes([BLOB]) + length(len(data)) + data


def raw_blob(data: bytes) -> bytes:
    return bytes([BLOB]) + length(len(data)) + data


def text(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return bytes([TEXT]) + length(len(data)) + data


def repeat(value: float, count: int) -> bytes:
    """A float repeated count times (rd_big_len: one byte, or 255 and two more)."""
    n = bytes([count]) if count < 255 else bytes([255]) + struct.pack("<H", count)
    return bytes([REPEAT]) + struct.pack("<f", value) + n


def zeroblob(nbytes: int) -> bytes:
    n = bytes([nbytes]) if nbytes < 255 else bytes([255]) + struct.pack("<H", nbytes)
    return bytes([ZERO]) + n


def json_floats(*floats: float, style: int = 0) -> bytes:
    return bytes([JSON, len(floats), style]) + struct.pack(f"<{len(floats)}f", *floats)


def integer(i: int) -> bytes:
    return bytes([INT]) + struct.pack("<q", i)


def real(d: float) -> bytes:
    return bytes([REAL]) + struct.pack("<d", d)


def op(code: int, *args: bytes) -> bytes:
    return bytes([code]) + b"".join(args)


NAN, INF = float("nan"), float("inf")

SEEDS = {
    "cosine": op(COSINE, blob(1, 2, 3), blob(1, 2, 4)) + op(COSINE, blob(1, 0), blob(0, 0)),
    "wrong-types": op(DIMENSIONS, text("abcd")) + op(NORM, integer(7)) + op(COSINE, real(1.5), blob(1))
    + op(DIMENSIONS, raw_blob(b"\x01\x02\x03")) + op(NORM, raw_blob(b"\x00" * 7))
    + op(COSINE, bytes([NULL]), blob(1)) + op(TO_JSON, bytes([EMPTY_BLOB])),
    "non-finite": op(TO_JSON, blob(1, NAN)) + op(NORM, blob(INF, 1)) + op(COSINE, blob(NAN, 1), blob(1, 1))
    + op(PAIR, blob(3.4e38, 3.4e38), blob(-3.4e38, 1e-45)),
    "json": op(FROM_JSON, text("[1, -2.5e3, 0]")) + op(FROM_JSON, text("[1,")) + op(FROM_JSON, text("[1 2]"))
    + op(FROM_JSON, text("[nan]")) + op(FROM_JSON, text("[1e999]")) + op(FROM_JSON, text('["a"]'))
    + op(FROM_JSON, text(b"[1]\x00x")) + op(FROM_JSON, json_floats(0.1, -7, 1e-40, style=8 | 16))
    + op(FROM_JSON, bytes([EMPTY_TEXT])),
    "auxdata": op(AUX_PLAIN, blob(1, 0, 0), blob(1, 1, 0), blob(0, 0, 0), bytes([NULL]), blob(-1, 0, 0))
    + op(AUX_ORDER, blob(0.5, 0.5), blob(1, 0), blob(0, 1), blob(1, 1), blob(-1, -1))
    + op(AUX_NESTED, blob(1, 2), blob(2, 1), blob(1), text("[1,2]"), blob(1, 2)),
    "large": op(ROUNDTRIP, repeat(0.1, 3000)) + op(AUX_PLAIN, repeat(1.0, 1000), repeat(2.0, 1000),
    zeroblob(4000), repeat(-1.0, 999), zeroblob(3999)) + op(TO_JSON, repeat(1.17549435e-38, 20000)),
}


def main() -> None:
    corpus = Path(__file__).resolve().parent / "corpus"
    corpus.mkdir(exist_ok=True)
    for name, data in SEEDS.items():
        (corpus / name).write_bytes(data)
        print(f"{corpus / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
