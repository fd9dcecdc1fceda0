"""The embeddings database schema, exactly as the `llm` package (0.36) leaves it.

llm creates its tables through a chain of sqlite-utils migrations and records each
one in ``_sqlite_migrations`` under the migration set ``llm.embeddings``. We create
the same final tables (same column order, same index names, same SQL text) and
record the same migration names, so llm finds nothing to migrate in a database we
made. A database left by an older llm (before ``content_hash`` or ``content_blob``)
is brought to the final shape with the data effects llm's own migrations have:
``updated`` filled with the current time where missing, ``content_hash`` set to the
MD5 of ``content`` (a random digest where there is no content).

A table is treated as llm's only when its columns (names, declared types, primary key)
are exactly those of one of llm's migration stages (``EMBEDDINGS_STAGES``); any other
table named ``collections`` or ``embeddings`` belongs to someone else and is never
written: `ForeignTableError` is raised before anything changes.

Everything here speaks plain DB-API (``execute``/``fetchall``), so it works on
stdlib sqlite3, pysqlite3 and apsw connections alike.
"""
from __future__ import annotations

import datetime
import os
import re
import time
from typing import Any, Optional

from .transaction import transaction

MIGRATION_SET = "llm.embeddings"
MIGRATIONS_TABLE = "_sqlite_migrations"

# llm's migrations, in order (llm/embeddings_migrations.py).
MIGRATION_NAMES = (
    "m001_create_tables",
    "m002_foreign_key",
    "m003_add_updated",
    "m004_store_content_hash",
    "m005_add_content_blob",
)

# The SQL text sqlite-utils writes for these tables, so sqlite_master reads the same.
MIGRATIONS_TABLE_SQL = """CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
)"""
MIGRATIONS_INDEX_SQL = """CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name")"""

COLLECTIONS_SQL = """CREATE TABLE "collections" (
   "id" INTEGER PRIMARY KEY,
   "name" TEXT,
   "model" TEXT
)"""
COLLECTIONS_INDEX_SQL = """CREATE UNIQUE INDEX "idx_collections_name"
    ON "collections" ("name")"""

EMBEDDINGS_COLUMNS = (
    "collection_id",
    "id",
    "embedding",
    "content",
    "content_blob",
    "content_hash",
    "metadata",
    "updated",
)
EMBEDDINGS_SQL = """CREATE TABLE "embeddings" (
   "collection_id" INTEGER REFERENCES "collections"("id"),
   "id" TEXT,
   "embedding" BLOB,
   "content" TEXT,
   "content_blob" BLOB,
   "content_hash" BLOB,
   "metadata" TEXT,
   "updated" INTEGER,
   PRIMARY KEY ("collection_id", "id")
)"""
# The embeddings table's columns after each of llm's migrations, oldest first: m001
# (m002 adds only a foreign key), m003 (+updated), m004 (+content_hash), m005 (final).
EMBEDDINGS_STAGES = (
    ("collection_id", "id", "embedding", "content", "metadata"),
    ("collection_id", "id", "embedding", "content", "metadata", "updated"),
    ("collection_id", "id", "embedding", "content", "content_hash", "metadata", "updated"),
    EMBEDDINGS_COLUMNS,
)
COLLECTIONS_COLUMNS = ("id", "name", "model")
# Declared type and primary-key position of every column llm ever gave these tables.
_COLUMN_TYPES = {
    "collection_id": ("INTEGER", 1),
    "id": ("TEXT", 2),
    "embedding": ("BLOB", 0),
    "content": ("TEXT", 0),
    "content_blob": ("BLOB", 0),
    "content_hash": ("BLOB", 0),
    "metadata": ("TEXT", 0),
    "updated": ("INTEGER", 0),
}
_COLLECTIONS_TYPES = {"id": ("INTEGER", 1), "name": ("TEXT", 0), "model": ("TEXT", 0)}
# The migrations table as sqlite-utils 4 makes it, and as older sqlite-migrate made it.
MIGRATIONS_SHAPES = (("id", "migration_set", "name", "applied_at"), ("migration_set", "name", "applied_at"))
CONTENT_HASH_INDEX = "idx_embeddings_content_hash"
EMBEDDINGS_INDEX_SQL = """CREATE INDEX "idx_embeddings_content_hash"
    ON "embeddings" ("content_hash")"""

def quote(name: str) -> str:
    """`name` as an SQL identifier in double quotes, any quote inside doubled."""
    return '"' + name.replace('"', '""') + '"'


SQLITE_READONLY = 8


def is_read_only_error(error: BaseException) -> bool:
    """Whether `error` is SQLite's SQLITE_READONLY (any extended code), from the stdlib
    module (sqlite_errorcode) or apsw (ReadOnlyError)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == SQLITE_READONLY
    return type(error).__name__ == "ReadOnlyError"



def table_exists(conn: Any, name: str) -> bool:
    row = conn.execute(
        "select count(*) from sqlite_master where type = 'table' and name = ? collate nocase",
        (name,),
    ).fetchone()
    return bool(row[0])


class ForeignTableError(ValueError):
    """A table or view has a name llm uses but is not llm's; it is left untouched."""


def has_schema(conn: Any) -> bool:
    """True when both llm tables exist (read-only); ForeignTableError when either
    name is taken by something that is not llm's."""
    embeddings_stage(conn)
    return table_exists(conn, "collections") and table_exists(conn, "embeddings")


def _shape(conn: Any, table: str) -> tuple[tuple[str, str, int], ...]:
    """(name, declared type, primary-key position) of each column, in order."""
    rows = conn.execute(f'pragma table_info("{table}")').fetchall()
    return tuple((row[1], (row[2] or "").upper(), row[5]) for row in rows)


def _stage_shape(columns: tuple[str, ...], types: dict) -> tuple[tuple[str, str, int], ...]:
    return tuple((column, *types[column]) for column in columns)


def _has_unique_name_index(conn: Any) -> bool:
    """A unique index on collections(name) that an upsert can name: not partial, the
    default (BINARY) collation."""
    for index in conn.execute('pragma index_list("collections")').fetchall():
        if index[2] and not index[4] and _index_keys(conn, index[1]) == [("name", "BINARY", 0)]:
            return True
    return False


def _index_keys(conn: Any, index: str) -> list[tuple[str, str, int]]:
    """(column, collation, descending) of each key column of `index`."""
    rows = conn.execute(f"pragma index_xinfo({quote(index)})").fetchall()
    return [(row[2], str(row[4]).upper(), row[3]) for row in rows if row[5]]


def _primary_key_index(conn: Any, table: str) -> Optional[str]:
    """The index SQLite made for `table`'s PRIMARY KEY; None when it is the rowid."""
    for index in conn.execute(f"pragma index_list({quote(table)})").fetchall():
        if index[3] == "pk":
            return str(index[1])
    return None


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`|\[[^\]]*\]")


def _plain_table_problem(conn: Any, table: str) -> Optional[str]:
    """Why `table` is not a plain rowid table as llm makes it (WITHOUT ROWID, STRICT,
    generated or hidden columns, CHECK constraints), or None."""
    listed = [row for row in conn.execute(f"pragma table_list({quote(table)})").fetchall()]
    if listed:
        row = next((row for row in listed if row[0] == "main"), listed[0])
        if row[4]:
            return "it is WITHOUT ROWID"
        if row[5]:
            return "it is STRICT"
    else:  # SQLite before 3.37 has no table_list (nor STRICT tables)
        try:
            conn.execute(f"select rowid from {quote(table)} limit 0")
        except Exception:
            return "it is WITHOUT ROWID"
    if any(row[6] for row in conn.execute(f"pragma table_xinfo({quote(table)})").fetchall()):
        return "it has generated or hidden columns"
    sql_row = conn.execute(
        "select sql from sqlite_master where type = 'table' and name = ? collate nocase", (table,)
    ).fetchone()
    if sql_row and re.search(r"\bCHECK\b", _QUOTED.sub("", sql_row[0] or ""), re.IGNORECASE):
        return "it has CHECK constraints"
    return None


def content_hash_index_exists(conn: Any) -> bool:
    """Whether llm's index on embeddings(content_hash) is there; ForeignTableError when an
    index of its name indexes something else."""
    row = conn.execute(
        "select tbl_name from sqlite_master where type = 'index' and name = ? collate nocase",
        (CONTENT_HASH_INDEX,),
    ).fetchone()
    if row is None:
        return False
    if row[0].lower() != "embeddings" or _index_keys(conn, CONTENT_HASH_INDEX) != [
        ("content_hash", "BINARY", 0)
    ]:
        raise _foreign(CONTENT_HASH_INDEX, "it is not an index on embeddings(content_hash)")
    return True


def _foreign(table: str, why: str) -> ForeignTableError:
    return ForeignTableError(
        f"table {table!r} is not llm's ({why}); embsqlite leaves it untouched: "
        "use another database file, or rename that table"
    )


def _check_object(conn: Any, name: str) -> bool:
    """Whether a table `name` exists; ForeignTableError when a view or index has it."""
    row = conn.execute(  # SQLite's names ignore ASCII case: EMBEDDINGS is embeddings
        "select type from sqlite_master where name = ? collate nocase", (name,)
    ).fetchone()
    if row is not None and row[0] != "table":
        raise _foreign(name, f"it is {'an' if row[0] == 'index' else 'a'} {row[0]}")
    return row is not None


def embeddings_stage(conn: Any) -> Optional[int]:
    """Which of EMBEDDINGS_STAGES the embeddings table is at (None: no such table), after
    checking that `collections` and `embeddings` are llm's. Reads only."""
    if _check_object(conn, "collections"):
        if _shape(conn, "collections") != _stage_shape(COLLECTIONS_COLUMNS, _COLLECTIONS_TYPES):
            raise _foreign("collections", "its columns are not (id INTEGER PRIMARY KEY, name TEXT, model TEXT)")
        problem = _plain_table_problem(conn, "collections")
        if problem:
            raise _foreign("collections", problem)
        if _primary_key_index(conn, "collections") is not None:
            raise _foreign("collections", "its id is not a rowid alias (INTEGER PRIMARY KEY)")
        if not _has_unique_name_index(conn):
            raise _foreign("collections", "it has no full unique index on name with the default collation")
    if _check_object(conn, MIGRATIONS_TABLE):
        if tuple(_columns(conn, MIGRATIONS_TABLE)) not in MIGRATIONS_SHAPES:
            raise _foreign(MIGRATIONS_TABLE, "its columns are not those sqlite-utils gives it")
    if not _check_object(conn, "embeddings"):
        return None
    shape = _shape(conn, "embeddings")
    for stage, columns in enumerate(EMBEDDINGS_STAGES):
        if shape == _stage_shape(columns, _COLUMN_TYPES):
            problem = _plain_table_problem(conn, "embeddings")
            if problem:
                raise _foreign("embeddings", problem)
            key = _primary_key_index(conn, "embeddings")
            if key is None or _index_keys(conn, key) != [
                ("collection_id", "BINARY", 0), ("id", "BINARY", 0)
            ]:
                raise _foreign("embeddings", "its primary key (collection_id, id) does not "
                               "use the default collation and order")
            if stage >= 2:
                content_hash_index_exists(conn)
            return stage
    raise _foreign(
        "embeddings",
        "its columns match none of llm's: " + ", ".join(f"{c[0]} {c[1]}".strip() for c in shape),
    )


def _columns(conn: Any, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'pragma table_info("{table}")').fetchall()]


def applied_migrations(conn: Any) -> list[str]:
    if not table_exists(conn, MIGRATIONS_TABLE):
        return []
    return [
        row[0]
        for row in conn.execute(
            f"select name from {MIGRATIONS_TABLE} where migration_set = ? order by rowid",
            (MIGRATION_SET,),
        ).fetchall()
    ]


def pending_migrations(conn: Any) -> list[str]:
    applied = set(applied_migrations(conn))
    return [name for name in MIGRATION_NAMES if name not in applied]


def ensure_schema(conn: Any) -> None:
    """Create or upgrade the llm schema on `conn`; does nothing (no write) when current,
    and raises ForeignTableError (no write) when a table of llm's name is not llm's."""
    final = len(EMBEDDINGS_STAGES) - 1
    stage = embeddings_stage(conn)
    migrations_ok = table_exists(conn, MIGRATIONS_TABLE) and tuple(
        _columns(conn, MIGRATIONS_TABLE)
    ) == MIGRATIONS_SHAPES[0]
    current = (
        stage == final and table_exists(conn, "collections") and content_hash_index_exists(conn)
    )
    if migrations_ok and current and not pending_migrations(conn):
        return
    with transaction(conn):
        stage = embeddings_stage(conn)  # again, now that no one else can write
        _ensure_migrations_table(conn)
        pending = pending_migrations(conn)
        if not table_exists(conn, "collections"):
            conn.execute(COLLECTIONS_SQL)
            conn.execute(COLLECTIONS_INDEX_SQL)
        if stage is None:
            conn.execute(EMBEDDINGS_SQL)
            conn.execute(EMBEDDINGS_INDEX_SQL)
        elif stage != final:
            _upgrade_embeddings(conn, EMBEDDINGS_STAGES[stage])
        elif not content_hash_index_exists(conn):  # as llm's m004 makes it
            conn.execute(EMBEDDINGS_INDEX_SQL)
        now = str(datetime.datetime.now(datetime.timezone.utc))
        for name in pending:
            conn.execute(
                f"insert into {MIGRATIONS_TABLE} (migration_set, name, applied_at) "
                "values (?, ?, ?)",
                (MIGRATION_SET, name, now),
            )


def llm_tables(conn: Any) -> set[str]:
    """Which of the tables ensure_schema makes exist now (to undo it with drop_created)."""
    return {t for t in (MIGRATIONS_TABLE, "collections", "embeddings") if table_exists(conn, t)}


def drop_created(conn: Any, existed: set[str]) -> None:
    """Undo ensure_schema on a database that had no llm tables (`existed`, from llm_tables
    before it ran), as long as no collection has been stored since: a command that failed
    before writing anything leaves the database as it found it."""
    if existed & {"collections", "embeddings"} or not table_exists(conn, "collections"):
        return
    with transaction(conn):
        if conn.execute("select count(*) from collections").fetchone()[0]:
            return
        conn.execute('drop table if exists "embeddings"')
        conn.execute('drop table "collections"')
        if MIGRATIONS_TABLE not in existed:
            conn.execute(f"drop table {MIGRATIONS_TABLE}")
        else:
            conn.execute(f"delete from {MIGRATIONS_TABLE} where migration_set = ?", (MIGRATION_SET,))


def _ensure_migrations_table(conn: Any) -> None:
    """sqlite-utils 4's table, converting the older (migration_set, name) key to an id."""
    if not table_exists(conn, MIGRATIONS_TABLE):
        conn.execute(MIGRATIONS_TABLE_SQL)
        conn.execute(MIGRATIONS_INDEX_SQL)
        return
    if _columns(conn, MIGRATIONS_TABLE) == ["id", "migration_set", "name", "applied_at"]:
        return
    conn.execute(f"alter table {MIGRATIONS_TABLE} rename to _embsqlite_old_migrations")
    conn.execute(MIGRATIONS_TABLE_SQL)
    conn.execute(
        f"insert into {MIGRATIONS_TABLE} (id, migration_set, name, applied_at) "
        "select rowid, migration_set, name, applied_at from _embsqlite_old_migrations "
        "order by rowid"
    )
    conn.execute("drop table _embsqlite_old_migrations")
    conn.execute(MIGRATIONS_INDEX_SQL)


def _upgrade_embeddings(conn: Any, existing: tuple[str, ...]) -> None:
    """Rebuild an older llm `embeddings` table (with the `existing` columns of one of
    llm's stages) into the final one, keeping every row."""
    select = ", ".join(
        f'"{column}"' if column in existing else "NULL" for column in EMBEDDINGS_COLUMNS
    )
    conn.execute('alter table "embeddings" rename to "_embsqlite_old_embeddings"')
    conn.execute(f'drop index if exists "{CONTENT_HASH_INDEX}"')
    conn.execute(EMBEDDINGS_SQL)
    conn.execute(
        f'insert into "embeddings" ({", ".join(EMBEDDINGS_COLUMNS)}) '
        f'select {select} from "_embsqlite_old_embeddings" order by rowid'
    )
    conn.execute('drop table "_embsqlite_old_embeddings"')
    conn.execute(EMBEDDINGS_INDEX_SQL)
    if "updated" not in existing:
        conn.execute(
            "update embeddings set updated = ? where updated is null", (int(time.time()),)
        )
    if "content_hash" not in existing:
        from . import ingest  # the hash rule is ingestion's; ingest reads this module

        # llm: MD5 of the content, or a random digest where there is no content.
        rows = conn.execute(
            "select collection_id, id, content from embeddings where content_hash is null"
        ).fetchall()
        conn.executemany(
            "update embeddings set content_hash = ? where collection_id = ? and id = ?",
            [
                (
                    ingest.content_hash(content if content is not None else os.urandom(16)),
                    collection_id,
                    id_,
                )
                for collection_id, id_, content in rows
            ],
        )
