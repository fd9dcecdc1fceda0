"""The model registry: registering models under ids and aliases, and finding them by name.

The registry fills itself on first use (built-in models, then those of plugins, see
`plugins.py`), so `import embsqlite` imports neither onnxruntime nor llm. Names of the form
`llm:<model_id>` are handed to the llm bridge (see `llm_bridge.py`).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .model import EmbeddingModel, UnknownModelError

LLM_PREFIX = "llm:"


@dataclass
class EmbeddingModelWithAliases:
    """A registered model and the aliases it answers to."""

    model: EmbeddingModel
    aliases: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """A registry slot: a model, or a factory that builds it on first lookup."""

    model_id: str
    aliases: list[str]
    model: Optional[EmbeddingModel] = None
    factory: Optional[Callable[[], EmbeddingModel]] = None
    available: Callable[[], bool] = lambda: True

    def get(self) -> EmbeddingModel:
        if self.model is None:
            assert self.factory is not None
            self.model = self.factory()
        return self.model


@dataclass(frozen=True)
class RegistryState:
    """What `saved_state` captured: the registered entries and whether loading had run."""

    entries: tuple[_Entry, ...]
    loaded: bool


_entries: dict[str, _Entry] = {}
_lock = threading.RLock()
_loaded = False


def checked_registration(model: Any, aliases: Iterable[str] = ()) -> tuple[EmbeddingModel, list[str]]:
    """`(model, aliases as a list)` if `model` can be registered, else TypeError/ValueError
    naming what is wrong (a plain string of aliases would otherwise become one per letter)."""
    if not isinstance(model, EmbeddingModel):
        raise TypeError(f"expected an embsqlite.EmbeddingModel, got {type(model).__name__}")
    model_id = getattr(model, "model_id", None)
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"{type(model).__name__} needs a model_id string, not {model_id!r}")
    if isinstance(aliases, (str, bytes)):
        raise TypeError(
            f"aliases of {model.model_id!r} must be a list of strings, not one {type(aliases).__name__}"
        )
    alias_list = list(aliases)
    for alias in alias_list:
        if not isinstance(alias, str) or not alias:
            raise TypeError(f"aliases of {model.model_id!r} must be non-empty strings, not {alias!r}")
    return model, alias_list


def register_embedding_model(model: EmbeddingModel, aliases: Iterable[str] = ()) -> None:
    """Register `model` under its `model_id` and `aliases`, replacing an earlier same id."""
    model, alias_list = checked_registration(model, aliases)
    with _lock:
        _ensure_loaded()
        _add(_Entry(model.model_id, alias_list, model=model))


def register_lazy_embedding_model(
    model_id: str,
    factory: Callable[[], EmbeddingModel],
    aliases: Iterable[str] = (),
    available: Callable[[], bool] = lambda: True,
) -> None:
    """Register a model built by `factory` on first lookup (keeps heavy imports out of
    `import embsqlite`); `available()` says whether its dependencies are installed."""
    with _lock:
        _ensure_loaded()  # so a built-in of the same id cannot replace this one later
        _add(_Entry(model_id, list(aliases), factory=factory, available=available))


def _add(entry: _Entry) -> None:
    _entries.pop(entry.model_id, None)  # re-registering moves the id to the end (latest)
    _entries[entry.model_id] = entry


def _ensure_loaded() -> None:
    """Register the built-in models and those of installed plugins, once."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        from . import builtin_models, plugins

        builtin_models.register_builtin_models()
        for model, aliases in plugins.plugin_models():
            _add(_Entry(model.model_id, aliases, model=model))


def saved_state() -> RegistryState:
    """The registry as it is now (loaded first), for `restore_state`: lets tests and
    applications register models for a while and then forget them."""
    with _lock:
        _ensure_loaded()
        return RegistryState(tuple(_entries.values()), _loaded)


def restore_state(state: RegistryState) -> None:
    """Put back what `saved_state` captured; models registered since are forgotten."""
    global _loaded
    with _lock:
        _entries.clear()
        _entries.update((entry.model_id, entry) for entry in state.entries)
        _loaded = state.loaded


def _lookup(name: str) -> Optional[_Entry]:
    """Find by exact id, then id ignoring case, then alias ignoring case (latest first)."""
    entry = _entries.get(name)
    if entry is not None:
        return entry
    folded = name.lower()
    latest_first = list(reversed(_entries.values()))
    for entry in latest_first:
        if entry.model_id.lower() == folded:
            return entry
    for entry in latest_first:
        if folded in (alias.lower() for alias in entry.aliases):
            return entry
    return None


def get_embedding_model(name: str) -> EmbeddingModel:
    """The model with this id or alias (case-insensitive). `llm:<id>` asks an installed llm;
    so does a name no embsqlite model answers to (ids that llm stored in a database)."""
    _ensure_loaded()
    from . import llm_bridge

    if name.startswith(LLM_PREFIX):
        return llm_bridge.get_llm_embedding_model(name[len(LLM_PREFIX) :])
    with _lock:
        entry = _lookup(name)
        known = [e.model_id for e in _entries.values() if e.available()]
    if entry is not None:
        return entry.get()
    model = llm_bridge.find_llm_embedding_model(name)
    if model is None:
        raise UnknownModelError(name, known)
    return model


def get_embedding_models_with_aliases(include_llm: bool = False) -> list[EmbeddingModelWithAliases]:
    """Every usable registered model with its aliases; with `include_llm`, also the
    embedding models of an installed llm (as `llm:<id>`; this imports llm)."""
    _ensure_loaded()
    with _lock:
        entries = [e for e in _entries.values() if e.available()]
        result = [EmbeddingModelWithAliases(e.get(), list(e.aliases)) for e in entries]
    if include_llm:
        from . import llm_bridge

        result.extend(llm_bridge.get_llm_embedding_models_with_aliases())
    return result


def get_embedding_models(include_llm: bool = False) -> list[EmbeddingModel]:
    """Every usable registered model (see `get_embedding_models_with_aliases`)."""
    return [m.model for m in get_embedding_models_with_aliases(include_llm=include_llm)]
