"""llm's module-level vector helpers, with llm's return types and results, so code written
for `llm.decode` and `llm.cosine_similarity` runs unchanged on `embsqlite`."""
from __future__ import annotations

from collections.abc import Sequence

from . import vectors


def decode(blob: bytes) -> tuple[float, ...]:
    """A little-endian float32 blob as a tuple of floats (as `llm.decode` returns)."""
    return tuple(vectors.decode(blob))


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two lists of numbers, computed as llm computes it (so the same
    inputs give the same float). Vectors of different lengths are an error; a zero vector
    gives 0.0, as the SQL function does."""
    if len(a) != len(b):
        raise ValueError(
            f"cosine_similarity: vectors of different lengths ({len(a)} and {len(b)})"
        )
    dot = sum(x * y for x, y in zip(a, b))
    norm_a = sum(x * x for x in a) ** 0.5
    norm_b = sum(y * y for y in b) ** 0.5
    if norm_a == 0 or norm_b == 0:
        return 0.0
    return dot / (norm_a * norm_b)
