"""Shared fixtures: real SQLite files, the compiled extension, random float32 vectors."""
from __future__ import annotations

import random
import shutil
import sqlite3

import pytest

import embsqlite


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
