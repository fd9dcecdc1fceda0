"""A test plugin whose hook registers one model and then raises."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import embsqlite


class HalfRegistered(embsqlite.EmbeddingModel):
    """One float per text: its length."""

    model_id = "half-registered"

    def embed_batch(self, items: Iterable[str]) -> Iterator[list[float]]:
        for text in items:
            yield [float(len(text))]


@embsqlite.hookimpl
def register_embedding_models(register):
    register(HalfRegistered())
    raise RuntimeError("hook broke after one model")
