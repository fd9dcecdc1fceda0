"""embsqlite: embeddings in SQLite, searched by cosine similarity computed in C."""
from __future__ import annotations

__version__ = "0.1.0"

from .sql import connect, loadable_path, register
from .vectors import decode, encode

__all__ = [
    "__version__",
    "connect",
    "decode",
    "encode",
    "loadable_path",
    "register",
]
