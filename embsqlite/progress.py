"""The progress bar of `embsqlite embed-multi` and `embsqlite demo`: its `update` is the
`progress` callback of `Collection.embed_multi_with_metadata`."""
from __future__ import annotations

import sys
from typing import Any, Optional


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
