"""Inserts of several batches written by one statement (ingest.PendingInserts): the rows,
the model calls, the progress reports and the failures are those of one statement per
batch; the ids-only statement stores what executemany stores."""
from __future__ import annotations

import sqlite3

import pytest
from conftest import CountingModel

import embsqlite
from embsqlite import Collection, ingest


def _rows(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select rowid, collection_id, id, hex(embedding), content, hex(content_blob), "
            "hex(content_hash), metadata from embeddings order by rowid"
        ).fetchall()
    finally:
        conn.close()


class Recorder:
    """A connection proxy recording the SQL of each statement the collection runs."""

    def __init__(self, conn):
        self._conn = conn
        self.statements: list[str] = []

    def execute(self, sql, params=()):
        self.statements.append(sql)
        return self._conn.execute(sql, params)

    def executemany(self, sql, seq):
        self.statements.append(sql)
        return self._conn.executemany(sql, seq)

    def __getattr__(self, name):
        return getattr(self._conn, name)


@pytest.fixture(autouse=True)
def pending_rows(monkeypatch):
    """These tests are of the opt-in mode that keeps batches pending (the default writes
    each batch as it comes): 1,000 rows per statement unless a test sets another bound."""
    monkeypatch.setattr(ingest, "WRITE_ROWS", 1_000)


def _spy_inserts(monkeypatch) -> list[int]:
    """The number of rows of each insert statement ingest runs, from now on."""
    sizes: list[int] = []
    original = ingest._insert

    def spy(conn, collection_id, rows, *args):
        sizes.append(len(rows))
        return original(conn, collection_id, rows, *args)

    monkeypatch.setattr(ingest, "_insert", spy)
    return sizes


def _workload() -> list[tuple]:
    """Ids written again with other content, contents repeated under other ids, a content
    that an earlier batch's id stops holding, metadata added to unchanged ids."""
    entries: list[tuple] = [(f"a{i:03d}", f"text {i % 37}", None) for i in range(120)]
    entries += [(f"a{i:03d}", f"changed {i}", None) for i in range(0, 120, 9)]
    entries += [(f"b{i:03d}", f"text {i % 50}", None) for i in range(60)]
    entries += [(f"a{i:03d}", f"text {i % 37}", {"n": i}) for i in range(0, 120, 11)]
    entries += [(f"c{i:03d}", f"changed {i}" if i % 2 else "text 0", None) for i in range(0, 120, 9)]
    return entries


@pytest.mark.parametrize("store", [False, True])
def test_pending_inserts_write_the_rows_and_call_the_model_as_one_statement_per_batch(
    tmp_path, monkeypatch, store
):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)
    monkeypatch.setattr(ingest.time, "time", lambda: 1_700_000_000.5)
    results = {}
    for write_rows in (1, 10_000):  # one batch's rows per statement, or all of a group's
        monkeypatch.setattr(ingest, "WRITE_ROWS", write_rows)
        model = CountingModel()
        path = tmp_path / f"w{write_rows}.db"
        reports: list[int] = []
        collection = Collection("docs", str(path), model=model)
        collection.embed_multi_with_metadata(_workload(), store=store, batch_size=7,
                                             progress=reports.append)
        collection.close()
        results[write_rows] = (_rows(path), model.items, reports)
    one, many = results[1], results[10_000]
    assert one[0] == many[0]  # the same rows, rowids, bytes
    assert one[1] == many[1]  # the same items sent to the model, in the same order
    assert one[2] == many[2] == [7] * (len(_workload()) // 7) + [len(_workload()) % 7]


def test_a_write_refused_among_pending_batches_keeps_and_reports_those_before_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)
    path = tmp_path / "refuse.db"
    collection = Collection("docs", str(path), model=CountingModel())
    collection.conn.execute(
        "create trigger refuse after insert on embeddings when new.id = 'j055' "
        "begin select raise(abort, 'refused j055'); end")
    sizes = _spy_inserts(monkeypatch)
    reports: list[int] = []
    with pytest.raises(sqlite3.IntegrityError, match="refused j055"):
        collection.embed_multi_with_metadata(
            ((f"j{i:03d}", f"text {i}", None) for i in range(100)), batch_size=10,
            progress=reports.append)
    assert not collection.conn.in_transaction
    # the batches were pending together: their statement failed, then one per batch ran
    assert sizes == [100] + [10] * 6
    ids = [row[2] for row in _rows(path)]
    assert ids == [f"j{i:03d}" for i in range(50)]
    assert reports == [10] * 5


def test_vectors_of_other_dimensions_than_pending_ones_are_refused_after_writing_them(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)

    class Grows(CountingModel):
        def embed_batch(self, items):
            vectors = list(super().embed_batch(items))
            return [v + [0.5] for v in vectors] if len(self.batches) == 3 else vectors

    path = tmp_path / "dims.db"
    collection = Collection("docs", str(path), model=Grows())
    reports: list[int] = []
    with pytest.raises(ValueError, match="dimensions but collection 'docs' holds"):
        collection.embed_multi_with_metadata(
            ((f"d{i:03d}", f"text {i}", None) for i in range(50)), batch_size=10,
            progress=reports.append)
    assert not collection.conn.in_transaction
    assert [row[2] for row in _rows(path)] == [f"d{i:03d}" for i in range(20)]
    assert reports == [10, 10]


def test_pending_rows_are_bounded_by_rows_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)
    monkeypatch.setattr(ingest, "WRITE_ROWS", 25)
    sizes = _spy_inserts(monkeypatch)
    conn = embsqlite.connect(tmp_path / "bound.db")
    Collection("docs", conn, model=CountingModel()).embed_multi(
        ((f"r{i:03d}", f"text {i}") for i in range(100)), batch_size=10)
    assert sizes == [30, 30, 30, 10]  # once 25 rows are pending; the rest at the commit
    monkeypatch.setattr(ingest, "WRITE_ROWS", 10_000)
    monkeypatch.setattr(ingest, "WRITE_BYTES", 120_000)  # stored content counts
    sizes.clear()
    Collection("more", conn, model=CountingModel()).embed_multi(
        ((f"s{i:03d}", f"{i:04d}" * 1000) for i in range(20)), store=True, batch_size=2)
    # 4 batches of 2 rows of 4,000 characters (counted as 16,000 bytes: up to 4 a
    # character), a 256-byte vector and a 4-character id
    assert sizes == [8, 8, 4]
    sizes.clear()
    kept: list[list] = []
    original_add = ingest.PendingInserts.add
    monkeypatch.setattr(ingest.PendingInserts, "add",
                        lambda self, rows: (kept.append(rows), original_add(self, rows))[1])
    Collection("unstored", conn, model=CountingModel()).embed_multi(
        ((f"u{i:03d}", f"{i:04d}" * 1000) for i in range(20)), batch_size=2)
    assert sizes == [20]  # content that is not stored is neither counted nor kept
    assert all(row[1] is None for rows in kept for row in rows)
    sizes.clear()
    Collection("meta", conn, model=CountingModel()).embed_multi_with_metadata(
        ((f"m{i:03d}", f"meta {i}", {"k": "v" * 4000}) for i in range(20)), batch_size=2)
    assert sizes == [8, 8, 4]  # metadata counts
    sizes.clear()
    Collection("ids", conn, model=CountingModel()).embed_multi(
        ((f"{i:04d}" * 15_000, f"id {i}") for i in range(20)), batch_size=2)
    assert sizes == [2] * 10  # ids count: 60,000 characters each, a batch is over the bound
    conn.close()


TRICKY_IDS = ["plain", "unicode é😀", 'quotes"\\', "tab\tnew\nline\x01\x1f",
              "line sep\u2028\u2029\ufeff", "12", "  spaced  ", "x" * 5000]


def test_the_ids_only_statement_stores_exactly_what_executemany_stores(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest.time, "time", lambda: 1_700_000_000.5)
    entries = [(id_, f"content of {id_!r}", None) for id_ in TRICKY_IDS]
    entries += [(f"bytes {i}", bytes([i, 0, 255]), None) for i in range(3)]
    nul = [("nul\x00inside", "content of an id holding NUL", None)]
    statements = {}
    for way in ("bulk", "executemany"):
        if way == "executemany":
            monkeypatch.setattr(ingest, "bulk_insert_supported", lambda conn: False)
        conn = Recorder(embsqlite.connect(tmp_path / f"{way}.db"))
        collection = Collection("docs", conn, model=CountingModel())
        collection.embed_multi_with_metadata(entries, batch_size=3)
        collection.embed_multi_with_metadata(nul)  # SQLite's JSON ends a string at NUL
        conn.close()
        statements[way] = [sql for sql in conn.statements if "insert or replace" in sql]
    assert statements["bulk"] == [ingest.BULK_IDS_SQL, ingest.INSERT_SQL]
    assert statements["executemany"] == [ingest.INSERT_SQL] * 2
    bulk, many = _rows(tmp_path / "bulk.db"), _rows(tmp_path / "executemany.db")
    assert bulk == many and len(bulk) == len(entries) + 1


def test_a_write_that_rolls_the_group_back_raises_its_own_error_and_reports_nothing_of_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(ingest, "GROUP_SECONDS", 600.0)
    monkeypatch.setattr(ingest, "GROUP_ROWS", 30)
    path = tmp_path / "rollback.db"
    collection = Collection("docs", str(path), model=CountingModel())
    collection.conn.execute(
        "create trigger undo after insert on embeddings when new.id = 'k055' "
        "begin select raise(rollback, 'rolled back at k055'); end")
    reports: list[int] = []
    with pytest.raises(sqlite3.IntegrityError, match="rolled back at k055"):
        collection.embed_multi_with_metadata(
            ((f"k{i:03d}", f"text {i}", None) for i in range(100)), batch_size=10,
            progress=reports.append)
    assert not collection.conn.in_transaction
    assert [row[2] for row in _rows(path)] == [f"k{i:03d}" for i in range(30)]  # the first group
    assert reports == [10] * 3
