"""The plugin hooks embsqlite calls; plugins implement them with `embsqlite.hookimpl`."""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("embsqlite")
hookimpl = pluggy.HookimplMarker("embsqlite")


@hookspec
def register_embedding_models(register):  # type: ignore[no-untyped-def]
    """Register embedding models by calling `register(model, aliases=())` for each."""
