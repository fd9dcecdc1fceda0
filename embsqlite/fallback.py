"""The SQL functions in Python, for a connection the C extension cannot reach.

The same names, results and error texts as csrc/embsqlite.c, on top of `vectors`; they
are correct but call Python once per row, so registering them warns once per process.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

from . import vectors

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}
_warned = False
SUFFIX = " (python fallback)"  # what embsqlite_version() appends here


def _vector(name: str, blob: Any, arg: int) -> list[float] | None:
    if blob is None:
        return None
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        kind = _SQL_TYPES.get(type(blob), type(blob).__name__)
        raise ValueError(f"{name}: argument {arg} must be a float32 BLOB, not {kind}")
    if len(blob) % 4:
        raise ValueError(
            f"{name}: argument {arg} is a {len(blob)}-byte blob; "
            "a float32 embedding's length is a multiple of 4"
        )
    return vectors.decode(bytes(blob))


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name}: the result is not finite (an input holds NaN or infinity)")
    return value


def cosine_similarity(a: Any, b: Any) -> float | None:
    """cosine_similarity(a, b) of two float32 blobs."""
    if a is None or b is None:
        return None
    va = _vector("cosine_similarity", a, 1)
    vb = _vector("cosine_similarity", b, 2)
    assert va is not None and vb is not None
    if len(va) != len(vb):
        raise ValueError(
            f"cosine_similarity: the vectors have different dimensions ({len(va)} and {len(vb)})"
        )
    return _finite("cosine_similarity", vectors.cosine(va, vb))


def embedding_to_json(a: Any) -> str | None:
    """embedding_to_json(blob): the shortest JSON text of each float32."""
    va = _vector("embedding_to_json", a, 1)
    return None if va is None else vectors.to_json(va)


def embedding_from_json(text: Any) -> bytes | None:
    """embedding_from_json(text): a JSON array of numbers as a float32 blob."""
    return None if text is None else vectors.from_json(text)


def embedding_dimensions(a: Any) -> int | None:
    """embedding_dimensions(blob): the number of float32 values."""
    va = _vector("embedding_dimensions", a, 1)
    return None if va is None else len(va)


def embedding_norm(a: Any) -> float | None:
    """embedding_norm(blob): the L2 norm."""
    va = _vector("embedding_norm", a, 1)
    if va is None:
        return None
    return _finite("embedding_norm", math.sqrt(vectors.norm2(va)))


def register(conn: Any, *, stacklevel: int = 2) -> None:
    """Register the Python versions on `conn` (stdlib-like or apsw); warns once per process
    that they are slow."""
    global _warned
    if not _warned:
        warnings.warn(
            "embsqlite: the C SQL functions cannot be loaded into this connection; "
            "using slower Python functions (one Python call per row)",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
        _warned = True
    from . import __version__

    funcs: tuple[tuple[str, int, Callable[..., Any]], ...] = (
        ("cosine_similarity", 2, cosine_similarity),
        ("embedding_to_json", 1, embedding_to_json),
        ("embedding_from_json", 1, embedding_from_json),
        ("embedding_dimensions", 1, embedding_dimensions),
        ("embedding_norm", 1, embedding_norm),
        ("embsqlite_version", 0, lambda: __version__ + SUFFIX),
    )
    for name, nargs, func in funcs:
        if hasattr(conn, "createscalarfunction"):  # apsw
            conn.createscalarfunction(name, func, nargs, deterministic=True)
        else:
            conn.create_function(name, nargs, func, deterministic=True)
