"""A change token per collection, kept by triggers on llm's `embeddings` table.

Copies of a collection's vectors kept outside SQLite's pages (the vector file beside the
database, an index) must never be used after anyone changed the collection: our API, llm,
the sqlite3 shell, another process. Three AFTER triggers on `embeddings` (insert, update,
delete) set the collection's row of the table `embsqlite_changes` to a new `random()` token,
inside the writer's own transaction, so a rolled-back or crashed write leaves the token as
it was and a committed one changes it, whatever the writing statement's conflict rule
(`OR IGNORE`, an upsert). The triggers are plain SQL that any SQLite client runs (no
function of ours, an UPDATE and an INSERT ... WHERE NOT EXISTS, which every SQLite version
parses); llm ignores them and the table.

A copy records the `State` it was built from and is valid only while `unchanged` says so:
the three triggers exist with exactly our SQL (a table rebuilt by sqlite-utils'
`transform`, as llm's migrations do to older files, loses them), `embeddings` is defined
as it was (DDL elsewhere does not matter), the token is the same, and the first and the
last row the copy holds are still at their rowids (a copy of the database that numbers
rows afresh, as `.dump` or a VACUUM that cannot keep rowids does, moves one of them
whenever it moves any row between). `install` gives every collection a fresh random token,
so a copy made for one database is never valid for another that happens to share its
schema.

`forget` drops the triggers and the table together. Dropping only the table would make
every later write to `embeddings` fail in every client, because the triggers still name it.
"""
from __future__ import annotations

import hashlib
from typing import Any, NamedTuple, Optional

from .transaction import transaction

TABLE = "embsqlite_changes"
# No declared type and WITHOUT ROWID: any collection_id a client writes (NULL mapped to '')
# is a valid key, so a trigger of ours never makes someone's write fail.
TABLE_SQL = f"""CREATE TABLE "{TABLE}" (
   "collection_id" PRIMARY KEY,
   "token" INTEGER NOT NULL
) WITHOUT ROWID"""


def _bump(row: str) -> str:
    """A new token for the collection of `row`. Two statements that no conflict can stop:
    a statement inside a trigger runs under the writing statement's conflict rule (an
    `INSERT OR IGNORE` would make an `INSERT OR REPLACE` here ignore the row it should
    replace, an upsert would make it fail), and neither can conflict under any rule."""
    key = f'ifnull({row}."collection_id", \'\')'
    return (
        f'UPDATE "{TABLE}" SET "token" = random() WHERE "collection_id" = {key};\n'
        f'  INSERT INTO "{TABLE}" ("collection_id", "token") SELECT {key}, random()'
        f' WHERE NOT EXISTS (SELECT 1 FROM "{TABLE}" WHERE "collection_id" = {key});'
    )


TRIGGERS = {
    f"{TABLE}_insert": f'CREATE TRIGGER "{TABLE}_insert" AFTER INSERT ON "embeddings"\n'
    f"BEGIN\n  {_bump('new')}\nEND",
    f"{TABLE}_update": f'CREATE TRIGGER "{TABLE}_update" AFTER UPDATE ON "embeddings"\n'
    f"BEGIN\n  {_bump('old')}\n  {_bump('new')}\nEND",
    f"{TABLE}_delete": f'CREATE TRIGGER "{TABLE}_delete" AFTER DELETE ON "embeddings"\n'
    f"BEGIN\n  {_bump('old')}\nEND",
}

# The triggers exactly ours, the table ours, the definition of `embeddings`, and no
# temporary table hiding either table from this connection: one statement.
_TRACKING_SQL = (
    "select (select count(*) from main.sqlite_master where type = 'trigger'"
    f" and tbl_name = 'embeddings' and ({' or '.join(['(name = ? and sql = ?)'] * len(TRIGGERS))})),"
    " (select sql from main.sqlite_master where type = 'table' and name = ?),"
    " (select sql from main.sqlite_master where type = 'table' and name = 'embeddings'),"
    " (select count(*) from temp.sqlite_master where name in ('embeddings', ?))"
)
_ROW_SQL = 'select collection_id, id from main."embeddings" where rowid = ?'
_TOKEN_SQL = f'select token from main."{TABLE}" where collection_id = ?'


class State(NamedTuple):
    """A collection's state: `state` reads the schema (a hash of the definition of
    `embeddings`) and the token; a copy of the collection's vectors records, with
    `recorded`, also the smallest and the largest rowid of the rows it copied, each with a
    hash of that row's collection id and id, and `unchanged` compares. Those two rows
    tell a logical copy apart: `.dump` or `iterdump()` replayed into a new file
    reproduces the schema and the tokens but numbers the rows 1, 2, ... again, in rowid
    order (order kept, no gaps), so when the first and the last copied row are both still
    at their rowids, the rows between them fill the same rowids as before: none moved.
    (The last row alone would not do: a row at rowid 0 or below and a gap above it move
    the rows between and cancel out at it.)"""

    schema: int  # a hash of the definition of `embeddings`
    token: Optional[int]
    last_rowid: int = 0
    last_row: int = 0
    first_rowid: int = 0
    first_row: int = 0


class ForeignChangesTable(ValueError):
    """A table named `embsqlite_changes` exists and is not ours; it is left untouched."""


def _hash(value: Any) -> int:
    """A 64-bit hash of a value's repr, never 0 (0 stands for nothing)."""
    digest = hashlib.blake2b(repr(value).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def _row_key(conn: Any, rowid: int) -> int:
    """A hash of the collection id and id of the row of `embeddings` at `rowid` (0: none)."""
    row = conn.execute(_ROW_SQL, (rowid,)).fetchone()
    return 0 if row is None else _hash(tuple(row))


def _tracking(conn: Any) -> tuple[Optional[int], bool]:
    """A hash of the definition of `embeddings` when the table and all three triggers are
    ours (else None), and whether a temporary table of either name hides them from this
    connection (its searches would read that). Not the schema cookie: other tables' DDL,
    such as the table sqlite-utils creates and drops to test for upserts, would make
    every copy stale."""
    count, table_sql, embeddings_sql, shadows = conn.execute(
        _TRACKING_SQL, [part for item in TRIGGERS.items() for part in item] + [TABLE, TABLE]
    ).fetchone()
    ours = count == len(TRIGGERS) and table_sql == TABLE_SQL
    return (_hash(embeddings_sql) if ours else None), bool(shadows)


def tracked(conn: Any) -> bool:
    """Whether this database keeps change tokens now (the table and all three triggers)."""
    return _tracking(conn)[0] is not None


def state(conn: Any, collection_id: int) -> Optional[State]:
    """The collection's state now, or None when the database does not keep tokens (never
    installed, triggers lost to a table rebuild) or the collection has no token (its rows
    deleted from the table: no write since could be told), or a temporary table hides
    `embeddings` or the tokens from this connection: then no copy can be trusted. Call it
    inside the read transaction that also reads what the copy is compared with."""
    tracking, shadowed = _tracking(conn)
    if tracking is None or shadowed:
        return None
    row = conn.execute(_TOKEN_SQL, (collection_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    return State(tracking, row[0])


def recorded(conn: Any, now: State, first_rowid: int, last_rowid: int) -> State:
    """What a copy records: the state `now` (read in the read transaction that read the
    rows), its smallest and largest copied rowid (0 when it copied none) and those rows'
    hashes."""
    return now._replace(last_rowid=last_rowid, last_row=_row_key(conn, last_rowid),
                        first_rowid=first_rowid, first_row=_row_key(conn, first_rowid))


def unchanged(conn: Any, recorded: State, now: State) -> bool:
    """Whether a copy that recorded `recorded` still holds the collection whose state
    reads `now` (in this read transaction): the same schema and token, and its
    first and last copied rows still at their rowids. Other collections' writes leave it
    valid."""
    return (recorded[:2] == now[:2] and _row_key(conn, recorded.last_rowid) == recorded.last_row
            and _row_key(conn, recorded.first_rowid) == recorded.first_row)


def install(conn: Any) -> bool:
    """Create the table and triggers where missing (in one transaction; a no-op, with no
    write, when all are there, or when a temporary table of this connection hides
    `embeddings` or ours: the triggers would go on it). Returns whether anything was
    created. Raises ForeignChangesTable when a table of our name is not ours."""
    ours, shadowed = _tracking(conn)
    if ours is not None or shadowed:
        return False
    with transaction(conn):
        table_sql = conn.execute(
            "select sql from sqlite_master where name = ? collate nocase", (TABLE,)
        ).fetchone()
        if table_sql is not None and table_sql[0] != TABLE_SQL:
            raise ForeignChangesTable(
                f"table {TABLE!r} is not embsqlite's; it is left untouched, so search copies "
                "and indexes cannot be kept for this database"
            )
        if table_sql is None:
            conn.execute(TABLE_SQL)
        present = dict(
            conn.execute(
                "select name, sql from sqlite_master where type = 'trigger' and name in "
                f"({', '.join('?' * len(TRIGGERS))})",
                list(TRIGGERS),
            ).fetchall()
        )
        for name, sql in TRIGGERS.items():
            if present.get(name) != sql:
                if name in present:
                    conn.execute(f'DROP TRIGGER "{name}"')
                conn.execute(sql)
        if conn.execute(
            "select count(*) from sqlite_master where type = 'table' and name = 'collections'"
        ).fetchone()[0]:
            conn.execute(
                f'INSERT OR REPLACE INTO main."{TABLE}" ("collection_id", "token") '
                "SELECT id, random() FROM main.collections"
            )
    return True


def forget(conn: Any) -> None:
    """Drop the triggers and the table (together): the database is llm's alone again."""
    with transaction(conn):
        for name in TRIGGERS:
            conn.execute(f'DROP TRIGGER IF EXISTS main."{name}"')
        row = conn.execute(
            "select sql from main.sqlite_master where type = 'table' and name = ?", (TABLE,)
        ).fetchone()
        if row is not None and row[0] == TABLE_SQL:
            conn.execute(f'DROP TABLE main."{TABLE}"')
