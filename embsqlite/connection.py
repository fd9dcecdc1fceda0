"""Connection policy: the pragmas embsqlite sets on a connection it is given (a busy
timeout, WAL for a new file) and the tuning of connections it opens itself."""
from __future__ import annotations

from typing import Any

from . import settings
from .transaction import in_transaction

# Busy timeout set on connections that have none (milliseconds).
BUSY_TIMEOUT_MS = 5000
# On connections embsqlite opens to WAL files: checkpoint every this many pages (of
# 4 KiB; as many bytes of WAL whatever the page size), and truncate the WAL back to this
# many bytes after a checkpoint.
WAL_AUTOCHECKPOINT_PAGES = 10_000
WAL_AUTOCHECKPOINT_BYTES = WAL_AUTOCHECKPOINT_PAGES * 4096
# Page size of a database file embsqlite creates. A row holds its vector (1 KiB at 256
# dimensions): 16 KiB pages hold 14 such rows, 4 KiB pages 3 with a quarter left empty,
# and a commit writes a quarter as many WAL frames: about 25% more rows per CPU second
# ingested at 200,000 rows (at 1,000,000 it was measured only with ingest.WRITE_ROWS at
# 5,000: each statement journals the larger index pages it changes), a 20% smaller file, a faster
# scan of the table. Files made by others keep theirs.
NEW_FILE_PAGE_SIZE = 16_384
WAL_SIZE_LIMIT = 64 * 2**20
# Memory-mapped reads on file connections we open (SQLite caps it at its own maximum).
MMAP_BYTES = int(settings.env_number("EMBSQLITE_MMAP_MB", 0) * 2**20)


def _is_file_database(conn: Any) -> bool:
    for row in conn.execute("pragma database_list").fetchall():
        if row[1] == "main":
            return bool(row[2])
    return False


def prepare_connection(conn: Any, owned: bool = False) -> None:
    """Give `conn` a busy timeout if it has none, and WAL mode and NEW_FILE_PAGE_SIZE
    pages if it is a new file.

    On a connection we opened ourselves (`owned`) to a WAL database, synchronous=NORMAL:
    a commit survives a crash of the process (not necessarily of the machine) without an
    fsync per transaction; and a checkpoint every ~40 MB of WAL instead of every 4 MB (the
    random content_hash index makes each batch touch many pages; fewer checkpoints copy
    each back fewer times: about 20% faster ingestion, measured). EMBSQLITE_MMAP_MB turns
    on memory-mapped reads for owned file connections: about 20% off a search that runs in
    SQLite, but the mapped file then counts in the process's RSS, so it is off by default.
    """
    if conn.execute("pragma busy_timeout").fetchone()[0] == 0:
        conn.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
    if in_transaction(conn) or not _is_file_database(conn):
        return
    if conn.execute("select count(*) from sqlite_master").fetchone()[0] == 0:
        conn.execute(f"pragma page_size = {NEW_FILE_PAGE_SIZE}")  # no effect once written
        conn.execute("pragma journal_mode = wal").fetchall()
    if owned and conn.execute("pragma journal_mode").fetchone()[0] == "wal":
        conn.execute("pragma synchronous = normal")
        conn.execute(f"pragma wal_autocheckpoint = {wal_autocheckpoint_pages(conn)}")
        conn.execute(f"pragma journal_size_limit = {WAL_SIZE_LIMIT}").fetchall()
    if owned and MMAP_BYTES:
        conn.execute(f"pragma mmap_size = {MMAP_BYTES}").fetchall()


def wal_autocheckpoint_pages(conn: Any) -> int:
    """The WAL checkpoint interval in `conn`'s pages: WAL_AUTOCHECKPOINT_BYTES of WAL."""
    return max(1, WAL_AUTOCHECKPOINT_BYTES // conn.execute("pragma page_size").fetchone()[0])
