"""A test plugin: registers `letter-counts`, a model counting the letters a to z."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import embsqlite


class LetterCounts(embsqlite.EmbeddingModel):
    """26 floats: how often each letter a..z occurs in the lowercased text."""

    model_id = "letter-counts"
    batch_size = 2

    def embed_batch(self, items: Iterable[str]) -> Iterator[list[float]]:
        for text in items:
            lowered = text.lower()
            yield [float(lowered.count(chr(c))) for c in range(ord("a"), ord("z") + 1)]


@embsqlite.hookimpl
def register_embedding_models(register):
    register(LetterCounts(), aliases=("letters",))
