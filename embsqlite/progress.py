"""Writing many items to a collection batch by batch, with a progress bar on a terminal
(used by `embsqlite embed-multi` and `embsqlite demo`)."""
from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Optional

from .collection import Collection
from .inputs import Item


def progress_bar(total: Optional[int], description: str = "Embedding") -> Any:
    """A tqdm bar on stderr (items/s, and ETA when `total` is known), silent when stderr is
    not a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit=" items",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
        smoothing=0.1,
    )


def embed_items(collection: Collection, items: Iterable[Item], store: bool,
                batch_size: int, total: Optional[int], dask: Any = None) -> int:
    """Write `items` in batches of `batch_size`, advancing a progress bar after each batch
    commits; with `dask`, the model runs on that cluster (see cluster.py)."""
    iterator = iter(items)
    written = 0
    with progress_bar(total) as bar:
        if dask is not None:
            from . import cluster

            def committed(count: int) -> None:
                nonlocal written
                written += count
                bar.update(count)

            cluster.embed(collection, iterator, store, batch_size, dask, on_commit=committed)
            return written
        while True:
            batch = list(itertools.islice(iterator, batch_size))
            if not batch:
                return written
            collection.embed_multi_with_metadata(batch, store=store, batch_size=len(batch))
            written += len(batch)
            bar.update(len(batch))
