"""`EmbeddingModel`, the base class every model derives from, and the errors of finding one.

The checks and batching shared by all models live here; a model only turns a batch of
items into vectors. Registration and lookup are in `registry.py`.
"""
from __future__ import annotations

import array
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Optional, Union

from . import vectors

# What a model embeds, what a collection stores as content: text or bytes.
Value = Union[str, bytes]


class UnknownModelError(KeyError):
    """No registered model has this id or alias; the message lists the known ids."""

    def __init__(self, name: str, known: Sequence[str] = ()):
        self.name = name
        self.known = list(known)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "none"
        return (
            f"Unknown embedding model: {self.name!r}. Known models: {known}"
            f" (and llm:<model_id> for models of an installed llm)"
        )


class ModelNotInstalledError(ImportError):
    """A known model whose optional dependencies are missing; says what to install."""


# Vectors encoded together by `embed_multi_encoded` (bounds its memory when streaming).
ENCODE_CHUNK = 1024


class EmbeddingModel(ABC):
    """A model that turns `str` (and/or `bytes`) items into vectors of floats.

    Subclasses set `model_id` and implement `embed_batch`; the checks and batching live here.
    """

    model_id: str
    supports_text: bool = True
    supports_binary: bool = False
    batch_size: Optional[int] = None

    @abstractmethod
    def embed_batch(self, items: Iterable[Value]) -> Iterator[Any]:
        """Embed the items, yielding one vector per item, in order: a sequence of floats,
        or (skipping a round trip through Python floats when storing) little-endian
        float32 `bytes`, an `array.array('f')` or a one-dimensional numpy array."""

    def embed(self, item: Value) -> list[float]:
        """Embed one `str` or `bytes` item."""
        item = self._check(item)
        vectors_ = list(self.embed_batch([item]))
        if len(vectors_) != 1:
            raise RuntimeError(f"model {self.model_id!r} returned {len(vectors_)} vectors for 1 item")
        return _as_floats(vectors_[0])

    def embed_multi(
        self, items: Iterable[Value], batch_size: Optional[int] = None
    ) -> Iterator[list[float]]:
        """Lazily embed many items, in order: batches of `batch_size`, else the model's own
        `batch_size`, else one call that streams the items. Each item is type-checked before
        the model sees it."""
        return map(_as_floats, self._embed_multi(iter(items), self._size(batch_size)))

    def embed_multi_encoded(
        self, items: Iterable[Value], batch_size: Optional[int] = None
    ) -> Iterator[bytes]:
        """`embed_multi`, each vector as the float32 blob that is stored (`vectors.encode`):
        what ingestion uses, so a model yielding float32 bytes or arrays costs no
        conversion."""
        return self._embed_multi(iter(items), self._size(batch_size), True)

    def embed_batch_encoded(self, items: Iterable[Value]) -> Iterator[Any]:
        """`embed_batch`'s vectors as stored (little-endian float32 bytes); a model that
        can make those directly overrides this (checked by `vectors.encode` all the same)."""
        return self.embed_batch(items)

    def _size(self, batch_size: Optional[int]) -> Optional[int]:
        size = self.batch_size if batch_size is None else batch_size
        if size is not None and size < 1:
            raise ValueError(f"batch_size must be at least 1, not {size}")
        return size

    def _embed_multi(
        self, items: Iterator[Value], size: Optional[int], encoded: bool = False
    ) -> Iterator[Any]:
        if size is None:
            first = list(itertools.islice(items, 1))
            if not first:
                return
            checked = map(self._check, itertools.chain(first, items))
            yield from self._counted(checked, None, encoded)
            return
        while True:
            batch = [self._check(item) for item in itertools.islice(items, size)]
            if not batch:
                return
            yield from self._counted(batch, len(batch), encoded)

    def _counted(
        self, batch: Iterable[Value], expected: Optional[int], encoded: bool = False
    ) -> Iterator[Any]:
        """Yield the model's vectors for `batch` (from `embed_batch_encoded` if `encoded`),
        failing if it returns too many or too few."""
        count = 0
        if encoded:  # checked and encoded a chunk at a time (vectors.encode_many)
            produced = iter(self.embed_batch_encoded(batch))
            while chunk := list(itertools.islice(produced, ENCODE_CHUNK)):
                count += len(chunk)
                yield from vectors.encode_many(chunk)
        else:
            for vector in self.embed_batch(batch):
                count += 1
                yield vector
        if expected is not None and count != expected:
            raise RuntimeError(
                f"model {self.model_id!r} returned {count} vectors for {expected} items"
            )

    def _check(self, item: Value) -> Value:
        """Return `item` (bytes-like as `bytes`) if this model accepts its type, else raise."""
        if isinstance(item, str):
            if not self.supports_text:
                raise ValueError(f"model {self.model_id!r} does not support text, only binary")
            return item
        if isinstance(item, (bytes, bytearray, memoryview)):
            if not self.supports_binary:
                raise ValueError(f"model {self.model_id!r} does not support binary data, only text")
            return bytes(item)
        raise TypeError(
            f"model {self.model_id!r} embeds str or bytes, not {type(item).__name__}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id!r}>"

    def __str__(self) -> str:
        return self.model_id


def _as_floats(vector: Any) -> Any:
    """A vector a model yielded as float32 bytes or `array('f')`, as a list of floats;
    anything else as it came (a list, a tuple, a numpy array)."""
    if isinstance(vector, (bytes, bytearray, memoryview)):
        return vectors.decode(bytes(vector))
    if isinstance(vector, array.array):
        return vector.tolist()
    return vector
