"""A test plugin that passes one string where a list of aliases belongs."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import embsqlite


class BadAliases(embsqlite.EmbeddingModel):
    """One float per text: its length."""

    model_id = "bad-aliases"

    def embed_batch(self, items: Iterable[str]) -> Iterator[list[float]]:
        for text in items:
            yield [float(len(text))]


@embsqlite.hookimpl
def register_embedding_models(register):
    register(BadAliases(), aliases="bad")
