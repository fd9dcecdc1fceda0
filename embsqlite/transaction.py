"""One transaction on any DB-API connection (stdlib sqlite3, pysqlite3, apsw): BEGIN and
COMMIT, or a savepoint inside a transaction the caller already holds."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def in_transaction(conn: Any) -> bool:
    """Whether `conn` (stdlib/pysqlite3 or apsw) has a transaction open."""
    state = getattr(conn, "in_transaction", None)
    if isinstance(state, bool):
        return state
    return not conn.getautocommit()  # older apsw


@contextmanager
def savepoint(conn: Any, name: str = "embsqlite") -> Iterator[None]:
    """A savepoint of the transaction `conn` holds: released at the end, rolled back to
    (and released) on any exception, which is re-raised."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if in_transaction(conn):
            conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            conn.execute(f"RELEASE SAVEPOINT {name}")
        raise
    conn.execute(f"RELEASE SAVEPOINT {name}")


@contextmanager
def transaction(conn: Any) -> Iterator[None]:
    """One transaction: BEGIN/COMMIT, or a savepoint inside the caller's own transaction.

    On any exception everything done inside is rolled back and the exception re-raised.
    """
    if in_transaction(conn):
        with savepoint(conn):
            yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if in_transaction(conn):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def read_transaction(conn: Any) -> Iterator[None]:
    """One read transaction (a deferred BEGIN, then COMMIT), so that several statements
    see the same database; inside the caller's transaction, that one already does."""
    if in_transaction(conn):
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if in_transaction(conn):
            conn.execute("COMMIT")
