"""Embedding models: the base class, the registry, and lookup by id or alias.

The registry fills itself on first use (built-in models, then plugins found through the
`embsqlite` entry-point group), so `import embsqlite` imports neither onnxruntime nor llm.
Names of the form `llm:<model_id>` are handed to the llm bridge (see `llm_bridge.py`).
"""
from __future__ import annotations

import itertools
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

Item = Union[str, bytes]
LLM_PREFIX = "llm:"


class UnknownModelError(KeyError):
    """No registered model has this id or alias; the message lists the known ids."""

    def __init__(self, name: str, known: Sequence[str] = ()):
        self.name = name
        self.known = list(known)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "none"
        return (
            f"Unknown embedding model: {self.name!r}. Known models: {known}"
            f" (and llm:<model_id> for models of an installed llm)"
        )


class ModelNotInstalledError(ImportError):
    """A known model whose optional dependencies are missing; says what to install."""


class EmbeddingModel(ABC):
    """A model that turns `str` (and/or `bytes`) items into vectors of floats.

    Subclasses set `model_id` and implement `embed_batch`; the checks and batching live here.
    """

    model_id: str
    supports_text: bool = True
    supports_binary: bool = False
    batch_size: Optional[int] = None

    @abstractmethod
    def embed_batch(self, items: Iterable[Item]) -> Iterator[list[float]]:
        """Embed the items, yielding one vector per item, in order."""

    def embed(self, item: Item) -> list[float]:
        """Embed one `str` or `bytes` item."""
        item = self._check(item)
        vectors = list(self.embed_batch([item]))
        if len(vectors) != 1:
            raise RuntimeError(f"model {self.model_id!r} returned {len(vectors)} vectors for 1 item")
        return vectors[0]

    def embed_multi(
        self, items: Iterable[Item], batch_size: Optional[int] = None
    ) -> Iterator[list[float]]:
        """Lazily embed many items, in order: batches of `batch_size`, else the model's own
        `batch_size`, else one call that streams the items. Each item is type-checked before
        the model sees it."""
        size = self.batch_size if batch_size is None else batch_size
        if size is not None and size < 1:
            raise ValueError(f"batch_size must be at least 1, not {size}")
        return self._embed_multi(iter(items), size)

    def _embed_multi(self, items: Iterator[Item], size: Optional[int]) -> Iterator[list[float]]:
        if size is None:
            first = list(itertools.islice(items, 1))
            if not first:
                return
            checked = map(self._check, itertools.chain(first, items))
            yield from self._counted(checked, None)
            return
        while True:
            batch = [self._check(item) for item in itertools.islice(items, size)]
            if not batch:
                return
            yield from self._counted(batch, len(batch))

    def _counted(self, batch: Iterable[Item], expected: Optional[int]) -> Iterator[list[float]]:
        """Yield the model's vectors for `batch`, failing if it returns too many or too few."""
        count = 0
        for vector in self.embed_batch(batch):
            count += 1
            yield vector
        if expected is not None and count != expected:
            raise RuntimeError(
                f"model {self.model_id!r} returned {count} vectors for {expected} items"
            )

    def _check(self, item: Item) -> Item:
        """Return `item` (bytes-like as `bytes`) if this model accepts its type, else raise."""
        if isinstance(item, str):
            if not self.supports_text:
                raise ValueError(f"model {self.model_id!r} does not support text, only binary")
            return item
        if isinstance(item, (bytes, bytearray, memoryview)):
            if not self.supports_binary:
                raise ValueError(f"model {self.model_id!r} does not support binary data, only text")
            return bytes(item)
        raise TypeError(
            f"model {self.model_id!r} embeds str or bytes, not {type(item).__name__}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id!r}>"

    def __str__(self) -> str:
        return self.model_id


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


_entries: dict[str, _Entry] = {}
_lock = threading.RLock()
_loaded = False


def register_embedding_model(model: EmbeddingModel, aliases: Iterable[str] = ()) -> None:
    """Register `model` under its `model_id` and `aliases`, replacing an earlier same id."""
    if not isinstance(model, EmbeddingModel):
        raise TypeError(f"expected an embsqlite.EmbeddingModel, got {type(model).__name__}")
    if not getattr(model, "model_id", None):
        raise ValueError(f"{type(model).__name__} has no model_id")
    with _lock:
        _ensure_loaded()
        _add(_Entry(model.model_id, list(aliases), model=model))


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
        from . import plugins

        plugins.load_builtin_models()
        plugins.load_plugin_models()


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


DEFAULT_MODEL_ENV = "EMBSQLITE_DEFAULT_MODEL"
_DEFAULT_MODEL_FILE = "default_model.txt"


def _config_path():  # type: ignore[no-untyped-def]
    """The file that keeps the default model id, in the user's config directory."""
    from pathlib import Path

    import platformdirs

    return Path(platformdirs.user_config_dir("embsqlite")) / _DEFAULT_MODEL_FILE


def get_default_embedding_model() -> str:
    """The default model's id or alias: `$EMBSQLITE_DEFAULT_MODEL`, else the one set with
    `set_default_embedding_model`, else `all-MiniLM-L6-v2` if its extra is installed, else
    `hashing`."""
    from_env = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if from_env:
        return from_env
    path = _config_path()
    if path.exists():
        saved = path.read_text(encoding="utf-8").strip()
        if saved:
            return saved
    from .plugins import minilm_available

    return "all-MiniLM-L6-v2" if minilm_available() else "hashing"


def set_default_embedding_model(name: Optional[str]) -> None:
    """Save `name` (checked to be a usable model, stored as its id) as the default in the
    user's config directory; `None` forgets it, going back to the built-in choice."""
    path = _config_path()
    if name is None:
        path.unlink(missing_ok=True)
        return
    model_id = get_embedding_model(name).model_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_id + "\n", encoding="utf-8")
