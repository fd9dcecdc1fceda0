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
import struct
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, Callable, Union

from .model import EmbeddingModel

DEFAULT_DIMENSIONS = 256
SHINGLE = 4  # bytes per shingle for binary items
_WORD = re.compile(r"\w+")
_F32 = struct.Struct("<f")
TOKEN_CACHE = 1 << 16  # tokens whose bucket ingestion keeps in a plain dict


def _bucketer(dimensions: int) -> Callable[[Union[str, bytes]], int]:
    """A cached function mapping a token (a word, or a byte shingle) to its bucket index."""

    @lru_cache(maxsize=1 << 16)
    def bucket(token: Union[str, bytes]) -> int:
        data = token.encode("utf-8") if isinstance(token, str) else b"\x00" + token
        digest = hashlib.blake2b(data, digest_size=8).digest()
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
        self._buckets: dict[Union[str, bytes], int] = {}  # ingestion's cache in front of it

    def __getstate__(self) -> dict:
        """Picklable (e.g. for Dask workers): the bucket cache is rebuilt, not sent."""
        return {key: value for key, value in self.__dict__.items() if key not in ("_bucket", "_buckets")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bucket = _bucketer(self.dimensions)
        self._buckets = {}

    def embed_batch(self, items: Iterable[Union[str, bytes]]) -> Iterator[list[float]]:
        """One normalised vector per item; an item with no tokens gives the zero vector."""
        for item in items:
            counts = self._counts(item)
            vector = [0.0] * self.dimensions
            if counts:
                norm = math.sqrt(sum(c * c for c in counts.values()))  # integers: exact
                for index, count in counts.items():
                    vector[index] = count / norm
            yield vector

    def embed_batch_encoded(self, items: Iterable[Union[str, bytes]]) -> Iterator[bytes]:
        """`embed_batch`'s vectors as the float32 bytes that are stored, packed value by
        value into zeros (no list of floats to build and pack): ingestion's path. A
        subclass that overrides `embed_batch` gets its own vectors encoded instead."""
        if type(self).embed_batch is not HashingModel.embed_batch:
            yield from super().embed_batch_encoded(items)
            return
        zero, pack, pack_into = bytes(4 * self.dimensions), _F32.pack, _F32.pack_into
        buckets, bucket, words = self._buckets, self._bucket, _WORD.findall
        for item in items:
            tokens = words(item.lower()) if type(item) is str else _tokens(item)
            counts: dict[int, int] = {}
            for token in tokens:
                index = buckets.get(token)
                if index is None:
                    if len(buckets) >= TOKEN_CACHE:
                        buckets.clear()
                    index = buckets[token] = bucket(token)
                counts[index] = counts.get(index, 0) + 1
            if not counts:
                yield zero
                continue
            vector = bytearray(zero)
            if len(counts) == len(tokens):  # each bucket once: one value, 1 / sqrt(n)
                value = pack(1 / math.sqrt(len(counts)))
                for index in counts:
                    vector[4 * index : 4 * index + 4] = value
            else:
                norm = math.sqrt(sum(c * c for c in counts.values()))
                for index, count in counts.items():
                    pack_into(vector, 4 * index, count / norm)
            yield bytes(vector)

    def _counts(self, item: Union[str, bytes]) -> dict[int, int]:
        """How many of the item's tokens fall in each bucket."""
        counts: dict[int, int] = {}
        for index in map(self._bucket, _tokens(item)):
            counts[index] = counts.get(index, 0) + 1
        return counts


def _tokens(item: Union[str, bytes]) -> list[Any]:
    """Lowercased word tokens of a text, or overlapping 4-byte shingles of bytes (hashed
    with a \\x00 prefix, which keeps them apart from words of the same letters)."""
    if isinstance(item, str):
        return _WORD.findall(item.lower())
    if len(item) <= SHINGLE:
        return [item] if item else []
    return [item[i : i + SHINGLE] for i in range(len(item) - SHINGLE + 1)]
