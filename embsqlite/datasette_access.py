"""Who may see what, asked of Datasette in the words of the running version: 0.65's
`permission_allowed(actor, action, resource, default=True)` or the 1.0 alphas'
`allowed(action=, resource=DatabaseResource|TableResource, actor=)`.

A collection lives in two tables, so it is visible only when the actor may view the
instance, the database, `collections` and `embeddings`: every check must pass (stricter
than 0.65's table pages, where an explicit table `allow` outranks the database's).
"""
from __future__ import annotations

from typing import Any, Optional

COLLECTION_TABLES = ("collections", "embeddings")


def is_datasette_1(datasette: Any) -> bool:
    """True on the 1.0 line (actions and resources), False on 0.6x."""
    return hasattr(datasette, "allowed")


async def allowed(
    datasette: Any, actor: Optional[dict], action: str,
    database: Optional[str] = None, table: Optional[str] = None,
) -> bool:
    """May `actor` do `action` on the instance, `database`, or `table` of `database`?"""
    if is_datasette_1(datasette):
        from datasette.resources import DatabaseResource, TableResource

        resource = None
        if table is not None:
            resource = TableResource(database=database, table=table)
        elif database is not None:
            resource = DatabaseResource(database=database)
        return bool(await datasette.allowed(action=action, resource=resource, actor=actor))
    legacy: Any = None if database is None else (database if table is None else (database, table))
    return bool(await datasette.permission_allowed(actor, action, legacy, default=True))


async def may_view_instance(datasette: Any, actor: Optional[dict]) -> bool:
    return await allowed(datasette, actor, "view-instance")


async def may_view_database(datasette: Any, actor: Optional[dict], database: str) -> bool:
    """May `actor` view the instance and `database`? (Neither check reads the database.)"""
    return await may_view_instance(datasette, actor) and await allowed(
        datasette, actor, "view-database", database)


async def may_view_collections(datasette: Any, actor: Optional[dict], database: str) -> bool:
    """May `actor` see the collections of `database` (instance, database, both tables)?"""
    if not await may_view_database(datasette, actor, database):
        return False
    for table in COLLECTION_TABLES:
        if not await allowed(datasette, actor, "view-table", database, table):
            return False
    return True


async def may_execute_sql(datasette: Any, actor: Optional[dict], database: str) -> bool:
    """May `actor` open `database` in Datasette's SQL editor and run a query there?"""
    return (
        await may_view_instance(datasette, actor)
        and await allowed(datasette, actor, "view-database", database)
        and await allowed(datasette, actor, "execute-sql", database)
    )
