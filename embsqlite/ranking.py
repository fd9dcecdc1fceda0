"""The one statement that ranks a collection, for `Collection` and the Datasette page.

The inner query orders the collection's ids by the C cosine_similarity and keeps the top
`number` (LIMIT), reading only ids and vectors; the outer query joins the content and
metadata of those rows alone. A prefix is a range on the primary key (idorder.prefix_range),
never LIKE. Each argument is an SQL expression: a placeholder, or for Datasette the
readable `embedding_from_text(...)` and `(select id from collections ...)`. A filter
(filters.py) is one more condition of the inner query's WHERE, in parentheses, so only the
rows it keeps are ranked; `filter_sql` is the statement that lists those rows alone.
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
    where: Optional[str] = None,
    rowids: Optional[str] = None,
) -> str:
    """`select id, score, content, metadata`, best first, ties by id: the top `number`
    rows of `collection` for the vector `query`, ids in [low, high), without `skip_id`,
    for which the boolean expression `where` (a rendered filter) is true; with `rowids`
    (a JSON array of rowids: an index's candidates) only those rows."""
    if rowids is not None:  # looked up by rowid; no index may turn it into a scan
        not_indexed = True
    table, where_sql = _rows(collection, where, not_indexed)
    where_sql += _bounds(low, high, skip_id)
    if rowids is not None:
        where_sql += f" and rowid in (select value from json_each({rowids}))"
    return f"""select e.id, r.score, e.content, e.metadata from (
  select id, cosine_similarity(embedding, {query}) as score
  from {table}
  where {where_sql}
  order by score desc, id
  limit {number}
) as r
join embeddings as e on e.collection_id = {collection} and e.id = r.id
order by r.score desc, r.id"""


def _rows(collection: str, where: Optional[str], not_indexed: bool = False) -> tuple[str, str]:
    """The table and the conditions of the rows a search may rank: the collection's, with
    an embedding and an id, kept by `where`. With `not_indexed` (the only collection in the file)
    the collection's primary-key index is not used: reading the table in order beats
    walking the index and fetching each row (~7% at 100,000 rows). With a filter that is
    said by `+collection_id` rather than NOT INDEXED, so an index on the filter's own
    expression (say `json_extract(metadata, '$.kind')`) can still pick the rows."""
    table = "embeddings not indexed" if not_indexed and where is None else "embeddings"
    column = "+collection_id" if not_indexed and where is not None else "collection_id"
    # a row without an id cannot be returned (the outer join is on id): never ranked, so
    # it takes no place of the top `number`, as every copy of the vectors leaves it out
    rows = f"{column} = {collection}\n    and embedding is not null\n    and id is not null"
    return table, rows if where is None else f"{rows}\n    and ({where})"


def _bounds(low: Optional[str], high: Optional[str], skip_id: Optional[str]) -> str:
    """The conditions of a prefix range [low, high) and a skipped id."""
    sql = ""
    if low is not None:
        sql += f" and id >= {low}" + ("" if high is None else f" and id < {high}")
    if skip_id is not None:
        sql += f" and id != {skip_id}"
    return sql


def filter_sql(
    collection: str, where: str, columns: str = "rowid", not_indexed: bool = False,
    low: Optional[str] = None, high: Optional[str] = None, skip_id: Optional[str] = None,
) -> str:
    """The rows of `collection` that a search filtered by `where` may rank, in no order:
    the same conditions as `ranking_sql`'s inner query (with its prefix range, so the
    filter meets the rows the SQL path meets), without the ranking."""
    table, rows = _rows(collection, where, not_indexed)
    return f"select {columns} from {table} where {rows}{_bounds(low, high, skip_id)}"
