"""Reading a collection's rows for a list of keys, `IN (...)` a chunk at a time, so a
list of any length stays below every SQLite's limit on bound parameters."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

IN_CHUNK = 500  # bound parameters per IN (...) list; below every SQLite's limit


def chunks(values: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """Each chunk of `values` with its `?, ?, ...` placeholders."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield chunk, ", ".join("?" * len(chunk))


def by_id(conn: Any, collection_id: int, columns: str, ids: Sequence[str]) -> list[tuple]:
    """`select id, <columns>` for those of `ids` stored in the collection."""
    rows: list[tuple] = []
    for chunk, marks in chunks(ids):
        rows += conn.execute(
            f"select id, {columns} from embeddings where collection_id = ? "
            f"and id in ({marks})",
            (collection_id, *chunk),
        ).fetchall()
    return rows
