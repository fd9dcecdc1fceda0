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
        # the writer's conflict rule applies inside the triggers too: none may stop them
        ("insert or ignore into embeddings (collection_id, id) values ({a}, 'new')", {"a"}),
        ("insert or ignore into embeddings (collection_id, id) values ({a}, 'a1')", set()),
        ("update or ignore embeddings set embedding = x'0000803f' where id = 'a1'", {"a"}),
        ("insert or abort into embeddings (collection_id, id) values ({a}, 'new')", {"a"}),
        ("insert or fail into embeddings (collection_id, id) values ({a}, 'new')", {"a"}),
        ("insert or rollback into embeddings (collection_id, id) values ({b}, 'new')", {"b"}),
        ("update or replace embeddings set content = 'y' where id = 'b1'", {"b"}),
        ("insert into embeddings (collection_id, id) values ({a}, 'a1')"
         " on conflict do update set content = 'upserted'", {"a"}),
        ("insert into embeddings (collection_id, id) values ({a}, 'a1'), ({b}, 'new')"
         " on conflict do nothing", {"b"}),
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
    assert all(state.schema == before["a"].schema for state in after.values())


def _recorded(conn, cid):
    """The state a copy of every row of collection `cid` would record."""
    first, last = conn.execute("select ifnull(min(rowid), 0), ifnull(max(rowid), 0) from embeddings"
                               " where collection_id = ?", (cid,)).fetchone()
    return changes.recorded(conn, changes.state(conn, cid), first, last)


@pytest.mark.parametrize("deleted, moved", [("a1", {"a", "b"}), ("b1", {"b"}), ("b2", set())])
def test_a_logical_copy_that_renumbers_rows_reads_as_changed(db, sqlite3_shell, deleted, moved):
    """`.dump` replayed into a new file keeps the schema cookie and the tokens, but rows are
    numbered afresh: a copy of a collection whose rows moved (a gap below them) is no
    longer unchanged; one whose rows kept their rowids still is."""
    path, conn = db
    conn.execute("delete from embeddings where id = ?", (deleted,))
    ids = _ids(conn)
    before = {name: _recorded(conn, cid) for name, cid in ids.items()}
    dump = subprocess.run([sqlite3_shell, str(path), ".dump"], check=True, capture_output=True, text=True).stdout
    copy = path.with_name("copy.db")
    subprocess.run([sqlite3_shell, str(copy)], input=dump, check=True, text=True)
    other = sqlite3.connect(copy)
    after = {name: changes.state(other, cid) for name, cid in ids.items()}
    assert all(after[name][:2] == before[name][:2] for name in ids)  # what a dump keeps
    assert {name for name in ids if not changes.unchanged(other, before[name], after[name])} == moved


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
        "alter table embeddings add column extra text",
        "drop trigger embsqlite_changes_update",
    ],
)
def test_ddl_of_embeddings_and_our_triggers_changes_the_state(db, ddl):
    path, conn = db
    cid = _ids(conn)["a"]
    before = changes.state(conn, cid)
    conn.execute(ddl)
    assert changes.state(conn, cid) != before


@pytest.mark.parametrize(
    "ddl",
    [
        "vacuum",  # keeps rowids (a VACUUM that could not would move the first or last row)
        "create table unrelated (x)",
        "create index by_updated on embeddings (updated)",
        "create table [sqlite-utils probe] (id integer primary key, x); drop table [sqlite-utils probe]",
    ],
)
def test_ddl_elsewhere_leaves_the_state(db, ddl):
    """The schema cookie moves with any DDL (sqlite-utils creates and drops a table to test
    for upserts): the state reads only the definition of `embeddings` and our triggers."""
    path, conn = db
    cid = _ids(conn)["a"]
    before = changes.state(conn, cid)
    conn.executescript(ddl)
    assert changes.state(conn, cid) == before


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


def test_sqlite_utils_upserts_and_ignores_change_the_token(db):
    """sqlite-utils' upsert (an INSERT ... ON CONFLICT DO UPDATE) and insert(ignore=True)
    (INSERT OR IGNORE) write rows like any other client: each changes the token, none
    fails."""
    path, conn = db
    table = sqlite_utils.Database(sqlite3.connect(path))["embeddings"]
    a = _ids(conn)["a"]
    for write in (
        lambda: table.upsert({"collection_id": a, "id": "a1", "content": "up"}, pk=("collection_id", "id")),
        lambda: table.insert({"collection_id": a, "id": "fresh", "content": "x"}, ignore=True),
        lambda: table.upsert_all([{"collection_id": a, "id": f"u{i}"} for i in range(3)],
                                 pk=("collection_id", "id")),
    ):
        before = changes.state(conn, a)
        write()
        table.db.conn.commit()
        assert changes.state(conn, a).token != before.token


def test_triggers_of_an_older_version_read_as_untracked_until_installed_again(db):
    """A database whose triggers are not exactly today's (an older embsqlite's) is not
    tracked, so no copy built then is trusted; install replaces them and gives fresh
    tokens."""
    path, conn = db
    a = _ids(conn)["a"]
    before = changes.state(conn, a)
    conn.execute('drop trigger "embsqlite_changes_insert"')
    conn.execute('create trigger "embsqlite_changes_insert" after insert on "embeddings" begin'
                 ' insert or replace into "embsqlite_changes" ("collection_id", "token")'
                 " values (ifnull(new.\"collection_id\", ''), random()); end")
    assert changes.state(conn, a) is None and not changes.tracked(conn)
    assert changes.install(conn)
    after = changes.state(conn, a)
    assert after is not None and after.token != before.token


@pytest.mark.parametrize("table", ["embsqlite_changes", "embeddings"])
def test_a_temporary_table_hiding_ours_leaves_no_state_and_is_never_written(db, table):
    """A temporary table of this connection named like `embeddings` or the tokens' table
    would be read instead of main's: no copy is trusted, and install and forget leave the
    temporary table alone."""
    path, conn = db
    a = _ids(conn)["a"]
    assert changes.state(conn, a) is not None
    conn.execute(f'create temp table "{table}" (collection_id, token)')
    conn.execute(f'insert into temp."{table}" values (?, 1)', (a,))
    assert changes.state(conn, a) is None
    assert changes.tracked(conn) and not changes.install(conn)
    assert conn.execute(f'select * from temp."{table}"').fetchall() == [(a, 1)]
    changes.forget(conn)
    assert conn.execute(f'select * from temp."{table}"').fetchall() == [(a, 1)]
    assert not changes.tracked(conn)
    assert conn.execute("select count(*) from main.sqlite_master where name = 'embsqlite_changes'").fetchone()[0] == 0
    assert not changes.install(conn)  # the triggers would go on the temporary table
    conn.execute(f'drop table temp."{table}"')
    assert changes.install(conn) and changes.state(conn, a) is not None
