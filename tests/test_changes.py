"""The change token: every write to a collection, by anyone, changes it; nothing else does."""
from __future__ import annotations

import sqlite3
import subprocess

import llm
import pytest
import sqlite_utils

import embsqlite
from embsqlite import changes, schema
from tests.test_llm_compat import LlmHashing


@pytest.fixture
def db(tmp_path):
    """A database with two collections of two rows each, tracked."""
    path = tmp_path / "changes.db"
    for name in ("a", "b"):
        collection = embsqlite.Collection(name, path, model_id="hashing")
        collection.embed_multi([(f"{name}1", "one dog"), (f"{name}2", "two cats")])
        collection.close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert changes.tracked(conn)  # embsqlite's batches install the triggers
    assert not changes.install(conn)
    yield path, conn
    conn.close()


def _ids(conn):
    return dict(conn.execute("select name, id from collections").fetchall())


def test_install_is_idempotent_and_writes_nothing_the_second_time(db):
    path, conn = db
    before = changes.state(conn, _ids(conn)["a"])
    assert before is not None and before.token is not None
    assert not changes.install(conn)
    assert changes.state(conn, _ids(conn)["a"]) == before


@pytest.mark.parametrize(
    "statement, touched",
    [
        ("insert into embeddings (collection_id, id) values ({a}, 'new')", {"a"}),
        ("update embeddings set embedding = x'0000803f' where id = 'a1'", {"a"}),
        ("update embeddings set content = 'x' where id = 'a1'", {"a"}),
        ("update embeddings set collection_id = {b} where id = 'a1'", {"a", "b"}),
        ("delete from embeddings where id = 'b2'", {"b"}),
        ("insert or replace into embeddings (collection_id, id) values ({a}, 'a1')", {"a"}),
        ("update embeddings set updated = updated where 0", set()),
        ("select * from embeddings", set()),
    ],
)
def test_each_write_changes_the_token_of_the_collections_it_touches(db, statement, touched):
    path, conn = db
    ids = _ids(conn)
    before = {name: changes.state(conn, cid) for name, cid in ids.items()}
    conn.execute(statement.format(**ids))
    after = {name: changes.state(conn, cid) for name, cid in ids.items()}
    assert {name for name in ids if after[name].token != before[name].token} == touched
    assert all(state.schema_version == before["a"].schema_version for state in after.values())
    last = conn.execute("select max(rowid) from embeddings").fetchone()[0]
    assert all(state.last_rowid == last for state in after.values())


def test_a_logical_copy_that_renumbers_rows_reads_another_state(db, sqlite3_shell):
    """`.dump` replayed into a new file keeps the schema cookie and the tokens, but rows are
    numbered afresh: with a gap in the rowids, the largest rowid moves, so the state does."""
    path, conn = db
    conn.execute("delete from embeddings where id = 'a1'")
    before = {cid: changes.state(conn, cid) for cid in _ids(conn).values()}
    dump = subprocess.run([sqlite3_shell, str(path), ".dump"], check=True, capture_output=True, text=True).stdout
    copy = path.with_name("copy.db")
    subprocess.run([sqlite3_shell, str(copy)], input=dump, check=True, text=True)
    other = sqlite3.connect(copy)
    after = {cid: changes.state(other, cid) for cid in before}
    assert all(after[cid].token == before[cid].token for cid in before)  # what a dump keeps
    assert all(after[cid] != before[cid] for cid in before)


def test_a_rolled_back_write_leaves_the_token(db):
    path, conn = db
    cid = _ids(conn)["a"]
    before = changes.state(conn, cid)
    conn.execute("begin")
    conn.execute("delete from embeddings where collection_id = ?", (cid,))
    assert changes.state(conn, cid) != before  # the writer itself sees its change
    conn.execute("rollback")
    assert changes.state(conn, cid) == before


def test_writes_by_llm_and_by_the_sqlite3_shell_change_the_token(db, sqlite3_shell):
    path, conn = db
    cid = _ids(conn)["a"]
    before = changes.state(conn, cid)
    subprocess.run([sqlite3_shell, str(path), "update embeddings set content = 'shell' where id = 'a1'"],
                   check=True)
    after_shell = changes.state(conn, cid)
    assert after_shell != before
    theirs = llm.Collection("a", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed("from-llm", "a bird", store=True)
    assert changes.state(conn, cid) not in (before, after_shell)


def test_odd_collection_ids_written_by_others_never_fail_their_write(db):
    path, conn = db
    for value in (None, "text", 2.5, b"\x00"):
        conn.execute("insert into embeddings (collection_id, id) values (?, 'odd')", (value,))
        conn.execute("update embeddings set content = 'x' where id = 'odd'")
        conn.execute("delete from embeddings where id = 'odd'")
    assert conn.execute("select count(*) from embsqlite_changes").fetchone()[0] <= 2 + 4


@pytest.mark.parametrize(
    "ddl",
    [
        "vacuum",
        "create table unrelated (x)",
        "drop trigger embsqlite_changes_update",
    ],
)
def test_ddl_changes_the_state(db, ddl):
    path, conn = db
    cid = _ids(conn)["a"]
    before = changes.state(conn, cid)
    conn.execute(ddl)
    assert changes.state(conn, cid) != before


def test_a_table_rebuilt_by_sqlite_utils_transform_loses_tracking(db):
    path, conn = db
    sqlite_utils.Database(path)["embeddings"].transform()  # as llm's migrations rebuild tables
    assert changes.state(conn, _ids(conn)["a"]) is None
    assert not changes.tracked(conn)
    assert changes.install(conn)  # and it comes back, with fresh tokens
    assert changes.state(conn, _ids(conn)["a"]) is not None


def test_install_gives_fresh_tokens_so_another_database_never_matches(tmp_path):
    states = []
    for name in ("one.db", "two.db"):
        collection = embsqlite.Collection("a", tmp_path / name, model_id="hashing")
        collection.embed("x", "same text")
        conn = collection.conn
        changes.install(conn)
        states.append(changes.state(conn, collection.id))
        collection.close()
    assert states[0].token != states[1].token


def test_forget_leaves_llms_tables_alone_and_writes_still_work(db):
    path, conn = db
    changes.forget(conn)
    assert not changes.tracked(conn)
    assert schema.llm_tables(conn) == {"_sqlite_migrations", "collections", "embeddings"}
    names = {row[0] for row in conn.execute("select name from sqlite_master")}
    assert not any(name.startswith("embsqlite") for name in names)
    conn.execute("insert into embeddings (collection_id, id) values (1, 'after')")


def test_a_table_of_our_name_that_is_not_ours_is_left_untouched(tmp_path):
    conn = sqlite3.connect(tmp_path / "f.db", isolation_level=None)
    schema.ensure_schema(conn)
    conn.execute("create table embsqlite_changes (x)")
    with pytest.raises(changes.ForeignChangesTable, match="embsqlite_changes"):
        changes.install(conn)
    assert changes.state(conn, 1) is None
    assert conn.execute("select sql from sqlite_master where name = 'embsqlite_changes'"
                        ).fetchone()[0] == "CREATE TABLE embsqlite_changes (x)"
    assert conn.execute("select count(*) from sqlite_master where type = 'trigger'").fetchone()[0] == 0


def test_llm_reads_and_writes_a_tracked_database(db):
    path, conn = db
    theirs = llm.Collection("b", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed_multi([("b3", "a horse"), ("b1", "one dog again")], store=True)
    assert [entry.id for entry in theirs.similar("a horse", number=1)] == ["b3"]
    assert theirs.count() == 3  # b1 replaced, b3 added
