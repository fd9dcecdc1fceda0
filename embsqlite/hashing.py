"""The built-in hashing model: feature hashing of words, standard library only.

Each lowercased word token (for `bytes`, each overlapping 4-byte shingle) is hashed with
BLAKE2b to a bucket; the bucket counts are L2-normalised. Same input, same vector on every
run and machine (no `hash()`), and texts sharing words score above texts sharing none.
Buckets are not signed: with signs, two words colliding with opposite signs cancel, and a
two-word text could become the zero vector, similar to nothing, not even itself.
"""
from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Union

from .models import EmbeddingModel

DEFAULT_DIMENSIONS = 256
SHINGLE = 4  # bytes per shingle for binary items
_WORD = re.compile(r"\w+")


def _bucketer(dimensions: int) -> Callable[[bytes], int]:
    """A cached function mapping a token to its bucket index."""

    @lru_cache(maxsize=1 << 16)
    def bucket(token: bytes) -> int:
        digest = hashlib.blake2b(token, digest_size=8).digest()
        return int.from_bytes(digest, "little") % dimensions

    return bucket


class HashingModel(EmbeddingModel):
    """Deterministic bag-of-words vectors of `dimensions` floats (id `hashing`, or
    `hashing-<dimensions>` when not the default 256)."""

    supports_text = True
    supports_binary = True
    batch_size = 1000

    def __init__(self, dimensions: int = DEFAULT_DIMENSIONS):
        if dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, not {dimensions}")
        self.dimensions = dimensions
        self.model_id = "hashing" if dimensions == DEFAULT_DIMENSIONS else f"hashing-{dimensions}"
        self._bucket = _bucketer(dimensions)

    def embed_batch(self, items: Iterable[Union[str, bytes]]) -> Iterator[list[float]]:
        """One normalised vector per item; an item with no tokens gives the zero vector."""
        for item in items:
            yield self._vector(_tokens(item))

    def _vector(self, tokens: Iterable[bytes]) -> list[float]:
        counts: dict[int, float] = {}
        bucket = self._bucket
        for token in tokens:
            index = bucket(token)
            counts[index] = counts.get(index, 0.0) + 1.0
        vector = [0.0] * self.dimensions
        norm = math.sqrt(math.fsum(c * c for c in counts.values()))
        if norm:
            for index, count in counts.items():
                vector[index] = count / norm
        return vector


def _tokens(item: Union[str, bytes]) -> Iterable[bytes]:
    """Word tokens of a text (as UTF-8 bytes), or overlapping shingles of bytes."""
    if isinstance(item, str):
        return [word.encode("utf-8") for word in _WORD.findall(item.lower())]
    if len(item) <= SHINGLE:
        return [b"\x00" + item] if item else []
    # The \x00 prefix keeps byte shingles apart from words with the same letters.
    return [b"\x00" + item[i : i + SHINGLE] for i in range(len(item) - SHINGLE + 1)]
