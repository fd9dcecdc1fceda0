"""The embedding models of an installed `llm` (and its plugins), as `llm:<model_id>`.

A wrapped model keeps llm's own `model_id` (no prefix), so a collection made with it stores
the id llm expects and the database stays usable from llm. llm is imported only for an
`llm:` name, a name no embsqlite model answers to, or a listing with `include_llm`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

from .model import EmbeddingModel, ModelNotInstalledError, UnknownModelError
from .registry import LLM_PREFIX, EmbeddingModelWithAliases


class LlmEmbeddingModel(EmbeddingModel):
    """Wraps one llm embedding model; its id, type support and batch size carry over, and
    every other attribute is llm's model's own (`Collection.model()` behaves as llm's)."""

    def __init__(self, llm_model: Any):
        self.llm_model = llm_model
        self.model_id = llm_model.model_id
        self.supports_text = bool(getattr(llm_model, "supports_text", True))
        self.supports_binary = bool(getattr(llm_model, "supports_binary", False))
        self.batch_size = getattr(llm_model, "batch_size", None)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this wrapper does not define itself.
        if name == "llm_model":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.llm_model, name)

    def embed(self, item: Union[str, bytes], *, key: Optional[str] = None) -> list[float]:
        """One vector, the model's values as llm returns them; `key` as in llm."""
        if key is not None:
            return self.llm_model.embed(self._check(item), key=key)
        return super().embed(item)

    def embed_batch(
        self, items: Iterable[Union[str, bytes]], key: Optional[str] = None
    ) -> Iterator[list[float]]:
        """Delegate to llm, which also resolves the model's API key if it needs one."""
        yield from self.llm_model.embed_multi(items, batch_size=None, key=key)

    def __str__(self) -> str:
        return str(self.llm_model)


def _llm() -> Any:
    try:
        import llm
    except ImportError as error:
        raise ModelNotInstalledError(
            "llm:<model_id> names need the llm package: pip install llm"
        ) from error
    return llm


def get_llm_embedding_model(name: str) -> LlmEmbeddingModel:
    """The llm embedding model with this id or alias (llm's own lookup)."""
    llm = _llm()
    try:
        return LlmEmbeddingModel(llm.get_embedding_model(name))
    except llm.UnknownModelError:
        known = [LLM_PREFIX + m.model_id for m in llm.get_embedding_models()]
        raise UnknownModelError(LLM_PREFIX + name, known) from None


def find_llm_embedding_model(name: str) -> Optional[LlmEmbeddingModel]:
    """The llm model with this id or alias, or None (also when llm is not installed)."""
    try:
        import llm
    except ImportError:
        return None
    try:
        return LlmEmbeddingModel(llm.get_embedding_model(name))
    except llm.UnknownModelError:
        return None


def llm_models_with_aliases() -> list[tuple[Any, list[str]]]:
    """llm's own embedding models with llm's own aliases, as `llm embed-models` lists them;
    empty when llm is not installed."""
    try:
        import llm
    except ImportError:
        return []
    return [(entry.model, list(entry.aliases)) for entry in llm.get_embedding_models_with_aliases()]


def get_llm_embedding_models_with_aliases() -> list[EmbeddingModelWithAliases]:
    """Every embedding model llm knows, with its aliases, all under the `llm:` prefix;
    empty when llm is not installed."""
    try:
        import llm
    except ImportError:
        return []
    return [
        EmbeddingModelWithAliases(
            LlmEmbeddingModel(entry.model),
            [LLM_PREFIX + entry.model.model_id]
            + [LLM_PREFIX + a for a in sorted(entry.aliases)]
            + sorted(entry.aliases),
        )
        for entry in llm.get_embedding_models_with_aliases()
    ]
