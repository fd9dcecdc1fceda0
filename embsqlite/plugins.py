"""The plugin manager: packages in the `embsqlite` entry-point group register models through
the `register_embedding_models` hook (see `hookspecs.py`).

pluggy loads the entry points and calls the hooks. When one plugin fails to load or its
hook raises, pluggy stops for everyone; we then retry plugin by plugin, so the broken one
warns and adds nothing while the others still count.
"""
from __future__ import annotations

import sys
import warnings
from importlib import metadata
from typing import Any, Callable

import pluggy

from . import hookspecs
from .model import EmbeddingModel
from .registry import checked_registration

ENTRY_POINT_GROUP = "embsqlite"
HOOK = "register_embedding_models"

Registration = tuple[EmbeddingModel, list[str]]

pm = pluggy.PluginManager("embsqlite")
pm.add_hookspecs(hookspecs)


def _entry_point_names() -> list[str]:
    """The names in our entry-point group, on every supported Python."""
    if sys.version_info >= (3, 10):
        group = metadata.entry_points(group=ENTRY_POINT_GROUP)
    else:  # Python 3.9: a dict of groups
        group = metadata.entry_points().get(ENTRY_POINT_GROUP, ())
    return list(dict.fromkeys(entry_point.name for entry_point in group))


def load_plugins() -> None:
    """Register every installed plugin with `pm`; one that fails to import warns and is skipped."""
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        return
    except Exception:
        pass  # pluggy stopped at a broken plugin: load the rest one name at a time
    for name in _entry_point_names():
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        except Exception as error:
            warnings.warn(f"embsqlite: plugin {name!r} failed to load: {error}", stacklevel=2)


def _collector(into: list[Registration]) -> Callable[..., None]:
    """The `register` callback handed to plugins: checks each model and keeps it in `into`."""

    def register(model: Any, aliases: Any = ()) -> None:
        into.append(checked_registration(model, aliases))

    return register


def plugin_models() -> list[Registration]:
    """Load the plugins, then the models and aliases their hooks register, in pluggy's call
    order. A plugin whose hook raises (or registers something invalid) warns and adds nothing."""
    load_plugins()
    found: list[Registration] = []
    try:
        pm.hook.register_embedding_models(register=_collector(found))
        return found
    except Exception:
        pass  # one hook raised and pluggy stopped: ask each plugin on its own
    found = []
    impls = pm.hook.register_embedding_models.get_hookimpls()
    for impl in reversed(impls):  # pluggy calls the latest registered plugin first
        others = [other.plugin for other in impls if other.plugin is not impl.plugin]
        own: list[Registration] = []
        try:
            pm.subset_hook_caller(HOOK, remove_plugins=others)(register=_collector(own))
        except Exception as error:
            warnings.warn(
                f"embsqlite: plugin {impl.plugin_name!r} failed to register its models: {error}",
                stacklevel=2,
            )
            continue
        found.extend(own)
    return found
