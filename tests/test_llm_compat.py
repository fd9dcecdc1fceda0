"""Compatibility with the real `llm` package (0.36): its databases open in embsqlite and
ours open in llm, both ways, with the same ids, scores, content and metadata."""
from __future__ import annotations

import hashlib
import random
import re
import shutil
import sqlite3

import llm  # the real llm 0.36, a test extra (`pip install -e .[test]`); never skipped
import pytest
import sqlite_utils
from conftest import CountingModel
from llm.embeddings_migrations import embeddings_migrations

import embsqlite
from embsqlite import Collection, changes, schema
from embsqlite.hashing import HashingModel

WRITES = ("CREATE", "ALTER", "INSERT", "UPDATE", "DELETE", "DROP", "REPLACE", "BEGIN")


class LlmHashing(llm.EmbeddingModel):
    """embsqlite's hashing model, packaged as an llm embedding model with the same id."""

    model_id = "hashing"
    supports_binary = True

    def __init__(self):
        self.inner = HashingModel()

    def embed_batch(self, items, key=None):
        return self.inner.embed_batch(list(items))


TEXTS = [
    "the quick brown fox", "a lazy dog sleeps", "foxes and dogs", "stock market news",
    "brown bread recipe", "quick sort algorithm", "dogs chase foxes", "market of foxes",
    "sleeping in the sun", "the brown dog", "news about bread", "sorting algorithms compared",
]


def sample_entries():
    return [
        (f"doc-{i:02d}", text, {"n": i, "tags": ["x", str(i)]} if i % 3 else None)
        for i, text in enumerate(TEXTS)
    ]


def schema_of(path):
    """The schema, without embsqlite's change tokens (checked to be exactly ours)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "select type, name, tbl_name, sql from sqlite_master order by type, name"
        ).fetchall()
    finally:
        conn.close()
    ours = {(t, n, s) for t, n, _, s in rows if n.startswith(changes.TABLE)}
    table = {("table", changes.TABLE, changes.TABLE_SQL)}
    # the table alone once llm's migrations rebuilt `embeddings` (its triggers go with it)
    assert ours in (set(), table, table | {("trigger", n, s) for n, s in changes.TRIGGERS.items()}), ours
    return [row for row in rows if not row[1].startswith(changes.TABLE)]


def as_tuples(entries):
    return [(e.id, e.score, e.content, e.metadata) for e in entries]


def assert_same_results(ours, theirs):
    assert [e.id for e in ours] == [e.id for e in theirs]
    assert [e.score for e in ours] == pytest.approx([e.score for e in theirs], rel=1e-12, abs=1e-13)
    assert [(e.content, e.metadata) for e in ours] == [(e.content, e.metadata) for e in theirs]


def random_queries(count=5, dims=256, seed=7):
    """Float32-exact query vectors: embsqlite ranks in float32 (as vectors are stored),
    llm in double, so only float32-exact queries can give the very same scores."""
    rng = random.Random(seed)
    return [
        embsqlite.decode(embsqlite.encode([rng.gauss(0, 1) for _ in range(dims)]))
        for _ in range(count)
    ]


def full_ranking(entries):
    """A tie-independent view of a complete ranking: sorted by (score, id)."""
    return sorted((-round(e.score, 9), e.id, e.content, str(e.metadata)) for e in entries)


def test_llm_database_opens_and_searches_the_same_in_embsqlite(tmp_path):
    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed_multi_with_metadata(sample_entries(), store=True)
    theirs.embed("binary", b"\x89PNG fox bytes", store=True)
    ours = Collection("docs", str(path))
    assert ours.model_id == "hashing" and ours.id == theirs.id
    assert ours.count() == theirs.count() == len(TEXTS) + 1
    for query in random_queries():
        assert_same_results(ours.similar_by_vector(query, number=6), theirs.similar_by_vector(query, number=6))
    everything = ours.count()
    assert full_ranking(ours.similar("brown fox", number=everything)) == full_ranking(
        theirs.similar("brown fox", number=everything)
    )
    assert full_ranking(ours.similar_by_id("doc-02", number=everything)) == full_ranking(
        theirs.similar_by_id("doc-02", number=everything)
    )
    stored = dict(ours.conn.execute("select id, content_blob from embeddings where id = 'binary'"))
    assert stored == {"binary": b"\x89PNG fox bytes"}


def test_embsqlite_recognises_llm_content_hashes(tmp_path):
    path = tmp_path / "llm.db"
    theirs = llm.Collection("docs", sqlite_utils.Database(path), model=LlmHashing())
    theirs.embed_multi([("a", "shared text"), ("b", "other text")])
    model = CountingModel("hashing", 256)
    ours = Collection("docs", str(path), model=model)
    ours.embed_multi([("a", "shared text"), ("c", "shared text"), ("d", "brand new")])
    assert model.items == ["brand new"]
    vectors = dict(ours.conn.execute("select id, embedding from embeddings"))
    assert vectors["c"] == vectors["a"]


def test_embsqlite_database_opens_in_llm_with_no_migration_and_searches_the_same(tmp_path):
    path = tmp_path / "ours.db"
    ours = Collection("docs", str(path), model_id="hashing")
    ours.embed_multi_with_metadata(sample_entries(), store=True)
    assert ours.conn.execute("pragma journal_mode").fetchone()[0] == "wal"

    reference = tmp_path / "reference.db"
    llm.Collection("docs", sqlite_utils.Database(reference), model=LlmHashing())
    assert schema_of(path) == schema_of(reference)

    db = sqlite_utils.Database(path)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    assert embeddings_migrations.pending(db) == []
    theirs = llm.Collection("docs", db, model=LlmHashing())
    results = [theirs.similar_by_vector(q, number=5) for q in random_queries()]
    db.conn.set_trace_callback(None)
    assert statements, "the trace saw llm's queries"
    assert [s for s in statements if s.lstrip().upper().startswith(WRITES)] == []
    assert db.conn.total_changes == 0
    assert theirs.id == ours.id and theirs.model_id == "hashing" and theirs.count() == ours.count()
    for query, theirs_result in zip(random_queries(), results):
        assert_same_results(ours.similar_by_vector(query, number=5), theirs_result)

    # llm accepts new rows; embsqlite sees them and ranks them the same
    theirs.embed_multi_with_metadata(
        [("llm-1", "foxes in the market", {"from": "llm"}), ("llm-2", "bread and dogs", None)],
        store=True,
    )
    assert ours.count() == len(TEXTS) + 2
    for query in random_queries(seed=11):
        assert_same_results(ours.similar_by_vector(query, number=8), theirs.similar_by_vector(query, number=8))
    assert [e.id for e in ours.similar_by_vector(embsqlite.decode(embsqlite.encode(
        HashingModel().embed("foxes in the market"))), number=1)] == ["llm-1"]
    assert sqlite3.connect(path).execute("pragma integrity_check").fetchone()[0] == "ok"


def _old_llm_database(path, stop_before, old_migrations_table=False):
    """A database as an older llm left it: llm's own migrations up to `stop_before`,
    then rows written with the columns that existed at that stage."""
    db = sqlite_utils.Database(path)
    embeddings_migrations.apply(db, stop_before=stop_before)
    db["collections"].insert({"name": "docs", "model": "hashing"})
    db["collections"].insert({"name": "other", "model": "hashing"})
    columns = set(db["embeddings"].columns_dict)
    model = HashingModel()
    for i, text in enumerate(TEXTS):
        row = {
            "collection_id": 1 + i % 2,
            "id": f"doc-{i:02d}",
            "embedding": embsqlite.encode(model.embed(text)),
            "content": text if i % 4 else None,
            "metadata": f'{{"n": {i}}}' if i % 3 else None,
        }
        if "updated" in columns:
            row["updated"] = 1_600_000_000 + i
        if "content_hash" in columns:  # llm then hashed the text (or the id: anything unique)
            row["content_hash"] = hashlib.md5((text if row["content"] else row["id"]).encode()).digest()
        db["embeddings"].insert(row)
    if old_migrations_table:  # sqlite-migrate's table, keyed by (migration_set, name)
        names = [r["name"] for r in db.query("select name from _sqlite_migrations order by id")]
        db["_sqlite_migrations"].drop()
        db["_sqlite_migrations"].create(
            {"migration_set": str, "name": str, "applied_at": str}, pk=("migration_set", "name")
        )
        db["_sqlite_migrations"].insert_all(
            {"migration_set": "llm.embeddings", "name": n, "applied_at": "2023-09-01"} for n in names
        )
    db.close()


def _rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "select collection_id, id, embedding, content, content_blob, content_hash, "
            "metadata, updated from embeddings order by collection_id, id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "stop_before, old_table",
    [
        ("m002_foreign_key", False),
        ("m003_add_updated", False),
        ("m004_store_content_hash", False),
        ("m004_store_content_hash", True),
        ("m005_add_content_blob", False),
    ],
)
def test_an_older_llm_database_is_upgraded_the_way_llm_does(tmp_path, stop_before, old_table):
    original = tmp_path / "old.db"
    _old_llm_database(original, stop_before, old_table)
    ours_path, llms_path = tmp_path / "ours.db", tmp_path / "llms.db"
    shutil.copy(original, ours_path)
    shutil.copy(original, llms_path)

    ours = Collection("docs", str(ours_path))
    theirs = llm.Collection("docs", sqlite_utils.Database(llms_path), model=LlmHashing())

    assert schema_of(ours_path) == schema_of(llms_path)
    names = "select name from _sqlite_migrations where migration_set = 'llm.embeddings' order by id"
    assert [r[0] for r in sqlite3.connect(ours_path).execute(names)] == [
        r[0] for r in sqlite3.connect(llms_path).execute(names)
    ] == list(schema.MIGRATION_NAMES)

    mine, reference = _rows(ours_path), _rows(llms_path)
    assert len(mine) == len(reference) == len(TEXTS)
    for a, b in zip(mine, reference):
        assert a[:5] == b[:5] and a[6] == b[6]  # everything but the hash and time
        assert len(a[5]) == len(b[5]) == 16
        if a[3] is not None:  # content: MD5 of it; no content: a random digest
            assert a[5] == b[5] == hashlib.md5(a[3].encode()).digest()
        assert a[7] is not None and b[7] is not None
        if stop_before in ("m002_foreign_key", "m003_add_updated"):
            assert abs(a[7] - b[7]) < 60  # both filled in with the time of the upgrade
        else:
            assert a[7] == b[7] == 1_600_000_000 + int(a[1][4:])  # kept

    # the upgraded database searches the same, and llm finds nothing to migrate in it
    for query in random_queries():
        assert_same_results(ours.similar_by_vector(query, number=4), theirs.similar_by_vector(query, number=4))
    db = sqlite_utils.Database(ours_path)
    assert embeddings_migrations.pending(db) == []
    llm.Collection("docs", db, model=LlmHashing())
    assert db.conn.total_changes == 0
    assert sqlite3.connect(ours_path).execute("pragma integrity_check").fetchone()[0] == "ok"
    assert sqlite3.connect(ours_path).execute("pragma foreign_key_check").fetchall() == []


# The command line and the module-level API, side by side with llm's own. Each test runs
# llm's real CLI (`llm.cli.cli`) and ours on the same input, with one model registered
# through an llm plugin (embsqlite reaches it through its llm bridge), and compares
# outputs and exit codes.


class VowelCounts(llm.EmbeddingModel):
    """Counts of a, e, i, o, u and of the other characters: ints, as some models return,
    and small enough that llm's Python scores and our float32 ones are the same floats."""

    model_id = "vowel-counts"
    supports_binary = True

    def __init__(self):
        self.batches = 0  # the model's own counter, reachable through Collection.model()

    def embed_batch(self, items, key=None):
        self.batches += 1
        for item in items:
            text = item.decode("latin-1") if isinstance(item, bytes) else item
            counts = [text.lower().count(vowel) for vowel in "aeiou"]
            yield counts + [len(text) - sum(counts)]


class VowelPlugin:
    def __init__(self):
        self.model = VowelCounts()

    @llm.hookimpl
    def register_embedding_models(self, register):
        register(self.model, aliases=("vowels",))


@pytest.fixture
def side_by_side(tmp_path, monkeypatch):
    """`run(*args)` invokes llm and embsqlite with the same arguments (each with its own
    database and user directory) and returns both click results."""
    from click.testing import CliRunner
    from llm.cli import cli as llm_cli
    from llm.plugins import pm

    from embsqlite.cli import cli as our_cli

    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in ("LLM_EMBEDDING_MODEL", "LLM_EMBEDDINGS_DB", "EMBSQLITE_DATABASE",
                 "EMBSQLITE_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    plugin = VowelPlugin()
    pm.register(plugin, name="embsqlite-test-vowels")
    monkeypatch.chdir(tmp_path)

    def run(*args, input=None, database=True):
        extra_llm = ["-d", str(tmp_path / "llm.db")] if database else []
        extra_ours = ["-d", str(tmp_path / "ours.db")] if database else []
        theirs = CliRunner().invoke(llm_cli, [*args, *extra_llm], input=input)
        ours = CliRunner().invoke(our_cli, [*args, *extra_ours], input=input)
        return theirs, ours

    run.model = plugin.model
    yield run
    pm.unregister(name="embsqlite-test-vowels")


def last_line(text):
    return text.rstrip("\n").splitlines()[-1] if text.strip() else ""


_SCORE = re.compile(rb"(?:(?<=\()|(?<=: ))(-?[01]\.\d{6,}(?:e-\d+)?)(?=\)|,)")


def _scores_to_13_digits(output: bytes) -> bytes:
    """Scores in `similar` output (`id (score)` and `"score": x,`) to 13 significant digits:
    embsqlite computes dot / sqrt(|a|^2 |b|^2) in C (one rounding fewer than llm's
    dot / (|a| |b|)), so the 16th-17th digits may differ; README lists this difference."""
    return _SCORE.sub(lambda m: format(float(m.group(1)), ".13g").encode(), output)


def same(theirs, ours, *, error_line_only=False, progress=False, scores=False):
    """Same exit code and output: all of stdout; all of stderr, or (llm printing click's
    usage text first) its last line, the error, which is then ours' only line. With
    `progress`, llm's progress bar (on stdout, even off a terminal) is left out; with
    `scores`, similarity scores are compared to 13 significant digits."""
    assert theirs.exception is None or isinstance(theirs.exception, SystemExit), theirs.exception
    assert ours.exception is None or isinstance(ours.exception, SystemExit), ours.exception
    stdout, our_stdout = theirs.stdout_bytes, ours.stdout_bytes
    if progress:
        stdout = b"".join(line for line in stdout.splitlines(True)
                          if not line.startswith((b"Embedding", b"\r")))
    if scores:
        stdout, our_stdout = _scores_to_13_digits(stdout), _scores_to_13_digits(our_stdout)
        assert stdout.count(b"(") + stdout.count(b'"score"') == our_stdout.count(b"(") + our_stdout.count(b'"score"')
    assert (ours.exit_code, our_stdout) == (theirs.exit_code, stdout)
    if error_line_only:
        assert ours.stderr == last_line(theirs.stderr) + "\n"
    else:
        assert ours.stderr == theirs.stderr


def test_embed_prints_the_models_values_in_every_format_as_llm(side_by_side):
    for args in (["embed", "-m", "vowel-counts", "-c", "Ab Oee"],
                 ["embed", "-m", "vowels", "-c", "Ab Oee", "-f", "json"],
                 ["embed", "-m", "vowels", "-c", "Ab Oee", "-f", "hex"],
                 ["embed", "-m", "vowels", "-c", "Ab Oee", "-f", "base64"],
                 ["embed", "-m", "vowels", "-c", "Ab Oee", "-f", "blob"],
                 ["embed", "-m", "vowels", "--binary", "-f", "blob"]):
        theirs, ours = side_by_side(*args, input=b"raw \x00 bytes", database=False)
        same(theirs, ours)
        assert theirs.exit_code == 0
    theirs, ours = side_by_side("embed", "-m", "vowels", "-c", "Ab Oee", database=False)
    assert ours.stdout == "[1, 2, 0, 1, 0, 2]\n"  # ints stay ints
    theirs, ours = side_by_side("embed", "-m", "vowels", "-c", "Ab Oee", "-f", "blob", database=False)
    assert ours.stdout_bytes == embsqlite.encode([1, 2, 0, 1, 0, 2]) + b"\n"


def test_embed_errors_as_llm(side_by_side):
    side_by_side("embed", "stories", "one", "-m", "vowels", "-c", "a first story")
    cases = [
        (["embed", "-c", "Content", "stories"], False),  # a collection without an id
        (["embed", "-m", "vowels", "-c", "x", "--store"], False),
        (["embed", "stories", "two", "-c", "x", "--metadata", "{bad"], True),
        (["embed", "stories", "two", "-c", "x", "--metadata", "[1, 2]"], True),
        (["embed", "stories", "two", "-c", ""], False),
        (["embed", "stories", "two", "-i", "missing.txt"], True),
        (["similar", "stories", "-i", "missing.txt"], True),
        (["embed-multi", "stories", "missing.csv"], True),
    ]
    for args, usage in cases:
        theirs, ours = side_by_side(*args)
        same(theirs, ours, error_line_only=usage)
        assert ours.exit_code == (2 if usage else 1), (args, ours.stderr)


def test_embed_metadata_messages_are_llms(side_by_side):
    side_by_side("embed", "stories", "one", "-m", "vowels", "-c", "a first story")
    theirs, ours = side_by_side("embed", "stories", "two", "-c", "x", "--metadata", "{bad")
    same(theirs, ours, error_line_only=True)
    assert ours.stderr == "Error: Invalid value for '--metadata': metadata must be valid JSON\n"
    theirs, ours = side_by_side("embed", "stories", "two", "-c", "x", "--metadata", '"text"')
    same(theirs, ours, error_line_only=True)
    assert ours.stderr == "Error: Invalid value for '--metadata': metadata must be a JSON object\n"
    theirs, ours = side_by_side("embed", "-c", "Content", "stories")
    same(theirs, ours)
    assert (ours.exit_code, ours.stderr) == (1, "Error: Must provide both collection and id\n")


def _fill(run):
    """The same items in both databases, with stored content and metadata."""
    for args in (["embed", "stories", "aeiou", "-m", "vowels", "-c", "a e i o u", "--store"],
                 ["embed", "stories", "apple", "-c", "an apple a day\n", "--store",
                  "--metadata", '{"fruit": true, "tags": ["a", "b"]}'],
                 ["embed", "stories", "oops", "-c", "oops, ooh\nsecond line", "--store"],
                 ["embed", "stories", "bare", "-c", "no stored content here"],
                 ["embed", "stories", "meta", "-c", "metadata only", "--metadata", '{"n": 1}']):
        theirs, ours = run(*args)
        assert theirs.exit_code == ours.exit_code == 0, (theirs.output, ours.output)


def test_missing_collection_and_id_as_llm(side_by_side):
    _fill(side_by_side)
    for args in (["similar", "nope", "-c", "x"], ["similar", "stories", "no-such-id"],
                 ["collections", "delete", "nope"], ["similar", "stories"]):
        theirs, ours = side_by_side(*args)
        same(theirs, ours)
        assert ours.exit_code == 1
    theirs, ours = side_by_side("similar", "nope", "-c", "x")
    assert ours.stderr == "Error: Collection does not exist\n"
    theirs, ours = side_by_side("similar", "stories", "no-such-id")
    assert ours.stderr == "Error: ID not found in collection\n"


def test_similar_output_plain_and_json_as_llm(side_by_side):
    _fill(side_by_side)
    for args in (["similar", "stories", "-c", "a pear a peach", "--plain"],
                 ["similar", "stories", "apple", "-p", "-n", "3"],
                 ["similar", "stories", "-c", "oo", "-p", "--prefix", "a"],
                 ["similar", "stories", "-c", "a pear a peach"],
                 ["similar", "stories", "oops", "-n", "2"]):
        theirs, ours = side_by_side(*args)
        same(theirs, ours, scores=True)
        assert theirs.exit_code == 0 and theirs.stdout
    theirs, ours = side_by_side("similar", "stories", "-c", "a a a", "-p")
    same(theirs, ours, scores=True)
    # Content ending in a newline: llm's indent keeps it, echo adds one, then a blank line.
    assert '\n\n  an apple a day\n\n  {"fruit": true, "tags": ["a", "b"]}\n\n' in ours.stdout


def test_files_errors_and_undecodable_files_as_llm(side_by_side, tmp_path):
    theirs, ours = side_by_side("embed-multi", "docs", "-m", "vowels", "--files",
                                str(tmp_path / "missing"), "*.txt")
    same(theirs, ours, error_line_only=True, progress=True)
    assert (ours.exit_code, ours.stderr) == (2, f"Error: Invalid directory: {tmp_path / 'missing'}\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("plain ascii text")
    (docs / "bad.txt").write_bytes(b"caf\xe9 cr\xe8me")
    theirs, ours = side_by_side("embed-multi", "docs", "-m", "vowels", "--files", str(docs), "*.txt",
                                "--encoding", "utf-8", "--store")
    same(theirs, ours, progress=True)
    assert ours.exit_code == 0 and ours.stderr == f"Could not decode text in file {docs / 'bad.txt'}\n"
    theirs, ours = side_by_side("collections", "list")
    same(theirs, ours)
    assert ours.stdout == "docs: vowel-counts\n  1 embedding\n"
    theirs, ours = side_by_side("collections", "list", "--json")
    same(theirs, ours)
    theirs, ours = side_by_side("collections")
    same(theirs, ours)


def test_embed_models_list_and_default_as_llm(side_by_side):
    for args in (["embed-models", "list", "-q", "vowel"], ["embed-models", "-q", "vowels"],
                 ["embed-models", "list", "-q", "count", "-q", "vow"],
                 ["embed-models", "default", "vowels"], ["embed-models", "default"],
                 ["embed-models", "default", "no-such-model"],
                 ["embed-models", "default", "--remove-default"]):
        theirs, ours = side_by_side(*args, database=False)
        same(theirs, ours)
    theirs, ours = side_by_side("embed-models", "list", "-q", "vowel", database=False)
    assert ours.stdout == "VowelCounts: vowel-counts (aliases: vowels)\n"
    side_by_side("embed-models", "default", "vowels", database=False)
    theirs, ours = side_by_side("embed-models", "default", database=False)
    assert ours.stdout == theirs.stdout == "vowel-counts\n"
    theirs, ours = side_by_side("embed-models", "default", "no-such-model", database=False)
    assert (ours.exit_code, ours.stderr) == (1, "Error: Unknown embedding model: no-such-model\n")
    # Every model llm lists, ours lists the same way (after our own models).
    theirs, ours = side_by_side("embed-models", database=False)
    assert ours.stdout.endswith(theirs.stdout)


def test_collection_model_is_llms_model(side_by_side, tmp_path):
    """`Collection.model()` of a collection made with an llm model behaves as llm's model
    object: its own attributes are reachable, and it embeds as llm's does."""
    model = side_by_side.model
    ours = Collection("c", str(tmp_path / "py.db"), model_id="vowels")
    theirs = llm.Collection("c", sqlite_utils.Database(tmp_path / "llm-py.db"), model_id="vowels")
    assert ours.model().model_id == theirs.model().model_id == "vowel-counts"
    before = model.batches
    ours.embed("x", "some text")
    assert ours.model().batches == theirs.model().batches == model.batches == before + 1
    assert ours.model().embed("Ab Oee") == theirs.model().embed("Ab Oee") == [1, 2, 0, 1, 0, 2]
    assert list(ours.model().embed_multi(["a", "e"], batch_size=1)) == list(
        theirs.model().embed_multi(["a", "e"], batch_size=1))
    assert ours.model().embed("a", key="unused") == theirs.model().embed("a", key="unused")
    assert str(ours.model()) == str(theirs.model()) == "VowelCounts: vowel-counts"
    assert ours.model().supports_binary is True


def test_decode_and_cosine_similarity_as_llm():
    rng = random.Random(5)
    for dims in (1, 3, 384):
        values = [rng.gauss(0, 1) for _ in range(dims)]
        blob = embsqlite.encode(values)
        assert blob == llm.encode(values)
        assert type(embsqlite.decode(blob)) is type(llm.decode(blob)) is tuple
        assert embsqlite.decode(blob) == llm.decode(blob)
        other = [rng.gauss(0, 1) for _ in range(dims)]
        assert embsqlite.cosine_similarity(values, other) == llm.cosine_similarity(values, other)
        ints = [rng.randint(-5, 5) or 1 for _ in range(dims)]
        assert embsqlite.cosine_similarity(ints, values) == llm.cosine_similarity(ints, values)
    # Where llm fails or silently truncates, we say so (README, "Differences from llm").
    assert embsqlite.cosine_similarity([0.0, 0.0], [1.0, 2.0]) == 0.0
    with pytest.raises(ZeroDivisionError):
        llm.cosine_similarity([0.0, 0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="cosine_similarity: vectors of different lengths"):
        embsqlite.cosine_similarity([1.0, 2.0], [1.0])
