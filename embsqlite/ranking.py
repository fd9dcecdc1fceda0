"""The one statement that ranks a collection, for `Collection` and the Datasette page.

The inner query orders the collection's ids by the C cosine_similarity and keeps the top
`number` (LIMIT), reading only ids and vectors; the outer query joins the content and
metadata of those rows alone. A prefix is a range on the primary key (idorder.prefix_range),
never LIKE. Each argument is an SQL expression: a placeholder, or for Datasette the
readable `embedding_from_text(...)` and `(select id from collections ...)`.
"""
from __future__ import annotations

from typing import Optional


def ranking_sql(
    query: str,
    collection: str,
    number: str,
    low: Optional[str] = None,
    high: Optional[str] = None,
    skip_id: Optional[str] = None,
    not_indexed: bool = False,
    rowids: Optional[str] = None,
) -> str:
    """`select id, score, content, metadata`, best first, ties by id: the top `number`
    rows of `collection` for the vector `query`, ids in [low, high), without `skip_id`;
    with `rowids` (a JSON array of rowids: an index's candidates) only those rows."""
    where = f"collection_id = {collection}\n    and embedding is not null"
    if low is not None:
        where += f" and id >= {low}" + ("" if high is None else f" and id < {high}")
    if skip_id is not None:
        where += f" and id != {skip_id}"
    if rowids is not None:  # looked up by rowid; no index may turn it into a scan
        where += f" and rowid in (select value from json_each({rowids}))"
        not_indexed = True
    # The only collection in a file: reading the table in order beats walking the
    # primary-key index and fetching each row (~7% at 100,000 rows).
    table = "embeddings not indexed" if not_indexed else "embeddings"
    return f"""select e.id, r.score, e.content, e.metadata from (
  select id, cosine_similarity(embedding, {query}) as score
  from {table}
  where {where}
  order by score desc, id
  limit {number}
) as r
join embeddings as e on e.collection_id = {collection} and e.id = r.id
order by r.score desc, r.id"""
