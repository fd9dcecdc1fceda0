"""embsqlite: embeddings in SQLite, searched by cosine similarity computed in C."""
from __future__ import annotations

__version__ = "0.1.0"

from .collection import Collection, Entry
from .compat import cosine_similarity, decode
from .hookspecs import hookimpl
from .models import (
    EmbeddingModel,
    ModelNotInstalledError,
    UnknownModelError,
    get_default_embedding_model,
    get_embedding_model,
    get_embedding_models,
    get_embedding_models_with_aliases,
    register_embedding_model,
    set_default_embedding_model,
)
from .sql import connect, loadable_path, register
from .vectors import encode

__all__ = [
    "__version__",
    "Collection",
    "Entry",
    "EmbeddingModel",
    "ModelNotInstalledError",
    "UnknownModelError",
    "get_default_embedding_model",
    "get_embedding_model",
    "get_embedding_models",
    "get_embedding_models_with_aliases",
    "hookimpl",
    "register_embedding_model",
    "set_default_embedding_model",
    "connect",
    "cosine_similarity",
    "decode",
    "encode",
    "loadable_path",
    "register",
]
