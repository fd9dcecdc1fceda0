"""The default embedding model: `$EMBSQLITE_DEFAULT_MODEL`, else the one the user saved
(a file in the user directory, see `user_dir.py`), else the best installed built-in."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from . import user_dir
from .builtin_models import builtin_default
from .registry import get_embedding_model

DEFAULT_MODEL_ENV = "EMBSQLITE_DEFAULT_MODEL"
DEFAULT_MODEL_FILE = "default_model.txt"


def saved_default_path() -> Path:
    """The file that keeps the saved default model's id."""
    return user_dir.config_dir() / DEFAULT_MODEL_FILE


def get_default_embedding_model() -> str:
    """The default model's id or alias: `$EMBSQLITE_DEFAULT_MODEL`, else the one set with
    `set_default_embedding_model`, else `all-MiniLM-L6-v2` if its extra is installed, else
    `hashing`."""
    from_env = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if from_env:
        return from_env
    path = saved_default_path()
    if path.exists():
        saved = path.read_text(encoding="utf-8").strip()
        if saved:
            return saved
    return builtin_default()


def set_default_embedding_model(name: Optional[str]) -> None:
    """Save `name` (checked to be a usable model, stored as its id) as the default in the
    user directory; `None` forgets it, going back to the built-in choice."""
    path = saved_default_path()
    if name is None:
        path.unlink(missing_ok=True)
        return
    model_id = get_embedding_model(name).model_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_id + "\n", encoding="utf-8")
