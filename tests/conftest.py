"""Shared fixtures: real SQLite files, the compiled extension, random float32 vectors."""
from __future__ import annotations

import random
import shutil
import sqlite3
import sys

import pytest

import embsqlite
from embsqlite import plugins, registry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked linux_only(reason=...) need Linux tools; elsewhere they are skipped,
    saying which."""
    if sys.platform == "linux":
        return
    for item in items:
        marker = item.get_closest_marker("linux_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason="Linux only: " + marker.kwargs["reason"]))


@pytest.fixture(autouse=True)
def user_path(tmp_path, monkeypatch):
    """Every test (and every process it starts) keeps its user files (saved default model,
    default database) in its own directory, never the real home; no default model from the
    environment leaks in."""
    path = tmp_path / "embsqlite-user"
    monkeypatch.setenv("EMBSQLITE_USER_PATH", str(path))
    monkeypatch.delenv("EMBSQLITE_DEFAULT_MODEL", raising=False)
    return path


@pytest.fixture(autouse=True)
def model_registry():
    """Models and plugins a test registers are forgotten after it, so none leaks into
    another test."""
    state = registry.saved_state()
    plugins_before = set(plugins.pm.get_plugins())
    yield
    for plugin in set(plugins.pm.get_plugins()) - plugins_before:
        plugins.pm.unregister(plugin)
    registry.restore_state(state)


@pytest.fixture
def rng() -> random.Random:
    """A seeded generator, so failures reproduce."""
    return random.Random(20261125)


@pytest.fixture
def conn(tmp_path) -> sqlite3.Connection:
    """A stdlib connection to a real SQLite file, with the C functions."""
    connection = embsqlite.connect(tmp_path / "test.db")
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def loadable() -> str:
    """Path of the plain loadable extension."""
    return embsqlite.loadable_path()


@pytest.fixture(scope="session")
def sqlite3_shell() -> str:
    """The sqlite3 command-line shell (Debian's `sqlite3`, installed by scripts/test.sh)."""
    path = shutil.which("sqlite3")
    assert path, "the sqlite3 shell is required: apt-get install sqlite3"
    return path


class CountingModel(embsqlite.EmbeddingModel):
    """The hashing model's vectors under another id, recording every batch it is sent."""

    supports_binary = True

    def __init__(self, model_id: str = "counting", dimensions: int = 64):
        from embsqlite.hashing import HashingModel

        self.model_id = model_id
        self.inner = HashingModel(dimensions)
        self.batches: list[list] = []

    @property
    def items(self) -> list:
        """Every item sent to the model, in order."""
        return [item for batch in self.batches for item in batch]

    def embed_batch(self, items):
        batch = list(items)
        self.batches.append(batch)
        return self.inner.embed_batch(batch)


class VectorModel(embsqlite.EmbeddingModel):
    """Embeds 'x,y,z' text as that vector, so tests choose their vectors."""

    model_id = "test-literal-vectors"

    def embed_batch(self, items):
        for item in items:
            yield [float(v) for v in item.split(",")]


@pytest.fixture
def counting_model() -> CountingModel:
    """A fresh CountingModel (64 dimensions) for collection tests."""
    return CountingModel()


@pytest.fixture
def python_calls():
    """A function that runs `action()` and returns (Python function calls made, its result):
    how the tests prove no Python function runs per row."""

    def run(action):
        calls = 0

        def profile(frame, event, arg):
            nonlocal calls
            calls += event == "call"

        sys.setprofile(profile)
        try:
            result = action()
        finally:
            sys.setprofile(None)
        return calls, result

    return run


@pytest.fixture
def sql_and_cache_only():
    """Searches from SQL and the in-memory cache only (no vector files), for tests about
    those paths' statements; tests/test_vectorfile.py covers the vector file."""
    from embsqlite import vectorfile

    vectorfile.configure(enabled=False)
    yield
    vectorfile.configure(enabled=True)
