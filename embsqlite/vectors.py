"""Embedding vectors as stored: little-endian float32 blobs, the format llm uses.

encode/decode run in C through `struct` and `array` (no per-element Python loop), so a
4096-dimension vector takes microseconds.
"""
from __future__ import annotations

import array
import functools
import json
import math
import struct
import sys
from typing import Iterable, Sequence

_BIG_ENDIAN = sys.byteorder == "big"


def encode(values: Iterable[float]) -> bytes:
    """Pack numbers as a little-endian float32 blob; NaN, infinity or overflow raise ValueError."""
    if not isinstance(values, (list, tuple)):
        values = list(values)
    try:
        blob = _packer(len(values)).pack(*values)
    except (struct.error, OverflowError):
        blob = _pack_or_explain(values)  # a non-number, or a number float32 cannot hold
    if not _all_finite(blob):
        raise ValueError("an embedding must hold finite float32 values, not NaN or infinity")
    return blob


def _pack_or_explain(values: Sequence) -> bytes:
    """Pack through `array`, whose errors tell a non-number from an overflow (an
    out-of-range float becomes infinity, which the caller refuses as not finite)."""
    try:
        packed = array.array("f", values)
    except TypeError as error:
        raise ValueError(f"an embedding must be a sequence of numbers: {error}") from None
    except OverflowError:  # an int beyond a double: beyond float32 too
        raise ValueError("an embedding must hold finite float32 values, not overflow") from None
    if _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


@functools.lru_cache(maxsize=64)
def _packer(count: int) -> struct.Struct:
    """A little-endian float32 packer for `count` values (twice as fast as `array` from a
    list: it is the dearest step of ingesting with a fast model)."""
    return struct.Struct(f"<{count}f")


def _all_finite(blob: bytes) -> bool:
    """True if every float32 in `blob` is finite (in C when the cffi module is built)."""
    try:
        from ._native import lib
    except ImportError:
        # A sum of float32 values in double is finite exactly when every value is.
        return math.isfinite(sum(decode(blob)))
    return bool(lib.embsqlite_all_finite(blob, len(blob) // 4))


def decode(blob: bytes) -> list[float]:
    """Unpack a little-endian float32 blob into a list of floats."""
    if len(blob) % 4:
        raise ValueError(
            f"a float32 embedding blob's length is a multiple of 4, not {len(blob)}"
        )
    unpacked = array.array("f")
    unpacked.frombytes(blob)
    if _BIG_ENDIAN:
        unpacked.byteswap()
    return unpacked.tolist()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity in Python (the fallback's); a zero vector gives 0.0."""
    dot = math.fsum(x * y for x, y in zip(a, b))
    norm_a = math.sqrt(math.fsum(x * x for x in a))
    norm_b = math.sqrt(math.fsum(y * y for y in b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return dot / (norm_a * norm_b)


def to_json(values: Sequence[float]) -> str:
    """A JSON array with the shortest text that reads back as each float32."""
    parts = []
    for value in values:
        text = repr(value)
        for digits in range(6, 10):
            candidate = f"{value:.{digits}g}"
            if array.array("f", [float(candidate)])[0] == value:
                text = candidate
                break
        parts.append(text)
    return "[" + ",".join(parts) + "]"


def from_json(text: str) -> list[float]:
    """Parse a JSON array of numbers, refusing anything else."""
    try:
        values = json.loads(text, parse_constant=_refuse_constant)
    except (TypeError, ValueError) as error:
        raise ValueError(f"embedding_from_json: {error}") from None
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError("embedding_from_json: expected a JSON array of numbers")
    return values


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")
