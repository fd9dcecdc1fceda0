"""Embedding vectors as stored: little-endian float32 blobs, the format llm uses.

encode/decode run in C through `struct` and `array` (no per-element Python loop), so a
4096-dimension vector takes microseconds.
"""
from __future__ import annotations

import array
import functools
import math
import operator
import re
import struct
import sys
from collections.abc import Sequence
from typing import Any

_BIG_ENDIAN = sys.byteorder == "big"


def encode(values: Any) -> bytes:
    """Pack numbers as a little-endian float32 blob; NaN, infinity or overflow raise ValueError.

    `values` is a sequence or iterable of numbers, or a vector already in float32 form,
    taken without a round trip through Python floats: `bytes`/`bytearray`/`memoryview`
    holding little-endian float32 (the stored format), an `array.array('f')`, or a
    one-dimensional numpy array (other float dtypes are rounded to float32 as `struct`
    rounds)."""
    if type(values) is bytes:  # what a model writing float32 directly yields
        blob = values
        if len(blob) % 4:
            raise ValueError(
                f"a float32 embedding blob's length is a multiple of 4, not {len(blob)}"
            )
    elif isinstance(values, (bytes, bytearray, memoryview)):
        blob = bytes(values)
        if len(blob) % 4:
            raise ValueError(
                f"a float32 embedding blob's length is a multiple of 4, not {len(blob)}"
            )
    elif isinstance(values, array.array) and values.typecode == "f":
        if _BIG_ENDIAN:
            values = array.array("f", values)
            values.byteswap()
        blob = values.tobytes()
    elif type(values).__module__ == "numpy" and getattr(values, "ndim", None) == 1:
        blob = _numpy_blob(values)
    else:
        if not isinstance(values, (list, tuple)):
            values = list(values)
        try:
            blob = _packer(len(values)).pack(*values)
        except (struct.error, OverflowError):
            blob = _pack_or_explain(values)  # a non-number, or a number float32 cannot hold
    if not _all_finite(blob):
        raise ValueError("an embedding must hold finite float32 values, not NaN or infinity")
    return blob


def encode_many(vectors: list[Any]) -> list[bytes]:
    """`encode` of each vector, with one finiteness check for all those already float32
    bytes (a model writing them directly) instead of one call each."""
    blobs: list[Any] = []
    ready: list[bytes] = []
    for vector in vectors:
        if type(vector) is bytes and not len(vector) % 4:
            blobs.append(vector)
            ready.append(vector)
        else:
            blobs.append(encode(vector))
    if ready and not _all_finite(b"".join(ready)):
        for blob in ready:
            encode(blob)  # raises for the first one that is not finite
    return blobs


def _numpy_blob(values: Any) -> bytes:
    """A numpy vector as little-endian float32 bytes (a non-number dtype is refused)."""
    import numpy

    if values.dtype.kind not in "fiub":
        raise ValueError(f"an embedding must hold numbers, not numpy dtype {values.dtype}")
    with numpy.errstate(over="ignore"):  # overflow becomes infinity, refused as not finite
        return numpy.ascontiguousarray(values, dtype="<f4").tobytes()


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


@functools.cache
def _native_lib() -> Any:
    """The cffi module's `lib` (None when it is not built), imported once: the check runs
    for every vector ingested."""
    try:
        from ._native import lib
    except ImportError:
        return None
    return lib


def _all_finite(blob: bytes) -> bool:
    """True if every float32 in `blob` is finite (in C when the cffi module is built)."""
    lib = _native_lib()
    if lib is None:
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


# The Python fallback's arithmetic and text, the same to the bit as csrc/embsqlite.c.

_LANES = 16  # EMBSQLITE_LANES: the lane order of every sum (csrc/embsqlite_dot.h)
# Doubles below this magnitude round to a finite float32 (EMBSQLITE_F32_LIMIT).
_F32_LIMIT = 3.4028235677973366e38
_F32 = struct.Struct("<f")


def _lane_sum(terms: Sequence[float]) -> float:
    """Sum in the C loops' order: term i into lane i % 16 while a full block of 16
    remains, the tail into lane 0, then the lanes pairwise (8, 4, 2, 1)."""
    full = len(terms) - len(terms) % _LANES
    lanes = [functools.reduce(operator.add, terms[k:full:_LANES], 0.0) for k in range(_LANES)]
    lanes[0] = functools.reduce(operator.add, terms[full:], lanes[0])
    width = _LANES // 2
    while width:
        for k in range(width):
            lanes[k] += lanes[k + width]
        width //= 2
    return lanes[0]


def norm2(a: Sequence[float]) -> float:
    """Sum of squares of float32 values, as the C extension sums them."""
    return _lane_sum(list(map(operator.mul, a, a)))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of float32 values, the same bits as the C function: symmetric,
    exactly 1.0 for a vector with itself, within [-1, 1]; a zero vector gives 0.0.
    NaN when the data holds NaN or infinity (the caller reports it)."""
    na2, nb2 = norm2(a), norm2(b)
    if na2 == 0.0 or nb2 == 0.0:
        return 0.0
    r = _lane_sum(list(map(operator.mul, a, b))) / math.sqrt(na2 * nb2)
    if r > 1.0:
        return 1.0
    if r < -1.0:
        return -1.0
    return r


def _reads_back(digits: str, exponent: int, value: float) -> bool:
    """Whether digits * 10^(exponent - len + 1) reads back as `value` the way
    embedding_from_json reads it (nearest double, then nearest float32)."""
    mantissa = f"{digits[0]}.{digits[1:]}" if len(digits) > 1 else digits
    number = float(f"{mantissa}e{exponent}")
    return abs(number) < _F32_LIMIT and _F32.unpack(_F32.pack(number))[0] == value


def _layout(digits: str, exponent: int) -> str:
    """The shorter of positional and exponent notation for d.ddd * 10^exponent
    (positional on a tie)."""
    n = len(digits)
    if exponent >= n - 1:
        positional = digits + "0" * (exponent - n + 1)
    elif exponent >= 0:
        positional = f"{digits[: exponent + 1]}.{digits[exponent + 1 :]}"
    else:
        positional = "0." + "0" * (-exponent - 1) + digits
    scientific = (f"{digits[0]}.{digits[1:]}" if n > 1 else digits) + f"e{exponent}"
    return positional if len(positional) <= len(scientific) else scientific


def shortest_f32(value: float) -> str:
    """The shortest JSON number that reads back as the finite float32 `value`: the
    fewest significant digits that do (the nearer when two do, the even one on an exact
    tie), in the shorter notation; the text embedding_to_json writes."""
    value = _F32.unpack(_F32.pack(value))[0]
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    value = abs(value)
    mantissa, _, exp_text = f"{value:.104e}".partition("e")
    digits = (mantissa[0] + mantissa[2:]).rstrip("0")
    exponent = int(exp_text)
    for p in range(1, len(digits)):
        down = digits[:p]
        up = str(int(down) + 1)
        up_exponent = exponent + len(up) - p  # 99 + 1 = 100: one more power of ten
        up = up.rstrip("0") or "0"
        down_ok = _reads_back(down, exponent, value)
        up_ok = _reads_back(up, up_exponent, value)
        if down_ok and up_ok:  # the nearer, by the digits cut off; a tie goes to even
            rest = digits[p:]
            go_up = rest > "5" or (rest == "5" and int(down[-1]) % 2 == 1)
            down_ok, up_ok = not go_up, go_up
        if down_ok:
            return sign + _layout(down, exponent)
        if up_ok:
            return sign + _layout(up, up_exponent)
    return sign + _layout(digits, exponent)


def to_json(values: Sequence[float]) -> str:
    """A JSON array with the shortest text that reads back as each float32."""
    if not all(map(math.isfinite, values)):
        raise ValueError(
            "embedding_to_json: the blob holds NaN or infinity, which JSON cannot represent"
        )
    return "[" + ",".join(map(shortest_f32, values)) + "]"


# JSON's number grammar as embedding_from_json reads it: a '.' or an 'e' must be
# followed by digits, or the number is not one.
_JSON_WS = re.compile(rb"[ \t\n\r]*")
_JSON_NUMBER = re.compile(
    rb"-?(?:0|[1-9][0-9]*)(?:\.(?=[0-9])[0-9]+|(?!\.))(?:[eE](?=[+-]?[0-9])[+-]?[0-9]+|(?![eE]))"
)


def from_json(text: Any) -> bytes:
    """A JSON array of numbers as a float32 blob, with embedding_from_json's rules and
    errors (positions count bytes of UTF-8, as SQLite's text does)."""
    if not isinstance(text, str):
        raise ValueError("embedding_from_json: the argument must be TEXT holding a JSON array")
    data = text.encode("utf-8")

    def skip(at: int) -> int:
        return _JSON_WS.match(data, at).end()  # type: ignore[union-attr]

    def error(what: str, at: int) -> ValueError:
        return ValueError(f"embedding_from_json: {what} at character {at + 1}")

    at = skip(0)
    if data[at : at + 1] != b"[":
        raise error("expected '['", at)
    at = skip(at + 1)
    numbers: list[float] = []
    if data[at : at + 1] != b"]":
        while True:
            match = _JSON_NUMBER.match(data, at)
            if match is None:
                raise error("expected a number", at)
            number = float(match.group())
            if not abs(number) < _F32_LIMIT:
                raise error("number is not a finite float32", at)
            numbers.append(number)
            at = skip(match.end())
            if data[at : at + 1] == b"]":
                break
            if data[at : at + 1] != b",":
                raise error("expected ',' or ']'", at)
            at = skip(at + 1)
    at = skip(at + 1)
    if at < len(data):
        raise error("unexpected text after the array", at)
    return _packer(len(numbers)).pack(*numbers)
