"""embsqlite: embeddings in SQLite, searched by cosine similarity computed in C."""
from __future__ import annotations

__version__ = "0.1.0"  # the one place: setuptools and the C build read it from here

from . import platforms  # noqa: F401  (first: on any platform but Linux and macOS, a clear error)
from .collection import Collection, Entry
from .compat import cosine_similarity, decode
from .default_model import get_default_embedding_model, set_default_embedding_model
from .hookspecs import hookimpl
from .loading import connect, loadable_path, register
from .model import EmbeddingModel, ModelNotInstalledError, UnknownModelError
from .registry import (
    get_embedding_model,
    get_embedding_models,
    get_embedding_models_with_aliases,
    register_embedding_model,
)
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
