"""The package's build facts: SQLite's headers vendored in csrc/, the loadable named
plainly, one version everywhere, the licence, and Linux and macOS as the only platforms.
(Building and installing a wheel in fresh venvs is tests/test_wheel.py, slow tier.)"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import embsqlite
from embsqlite import loading, platforms

ROOT = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


def pyproject() -> dict:
    if tomllib is None:
        pytest.fail("reading pyproject.toml needs Python 3.11+ (tomllib)")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_build_includes_the_vendored_sqlite_headers():
    """Both builds include csrc/embsqlite.c, whose "sqlite3ext.h" resolves next to it
    (quoted includes search the file's own directory first), never the system's."""
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build embsqlite"
    result = subprocess.run([gcc, "-H", "-fsyntax-only", str(ROOT / "csrc" / "embsqlite.c")],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    included = [line.split()[-1] for line in result.stderr.splitlines() if line.startswith(".")]
    sqlite_headers = [Path(p).resolve() for p in included if "sqlite3" in Path(p).name]
    assert sqlite_headers == [ROOT / "csrc" / "sqlite3ext.h", ROOT / "csrc" / "sqlite3.h"]


def test_vendored_header_version_is_the_documented_one():
    header = (ROOT / "csrc" / "sqlite3.h").read_text()
    version = re.search(r'#define SQLITE_VERSION\s+"([0-9.]+)"', header).group(1)
    assert f"SQLite {version}" in (ROOT / "csrc" / "README.md").read_text()
    assert "disclaims copyright" in header and "disclaims copyright" in (
        ROOT / "csrc" / "sqlite3ext.h").read_text()


def test_loadable_is_named_plainly_and_native_is_abi3():
    package = Path(embsqlite.__file__).parent
    assert embsqlite.loadable_path() == str(package / "embsqlite.so")
    assert sorted(p.name for p in package.glob("*.so")) == ["_native.abi3.so", "embsqlite.so"]


def test_missing_loadable_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "_HERE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "embsqlite.so"))):
        embsqlite.loadable_path()


def test_version_is_written_once_and_reaches_both_c_builds(loadable, sqlite3_shell, tmp_path):
    """embsqlite.__version__ is the source: setuptools reads it (pyproject has no version
    of its own) and the build passes it to the loadable and to the cffi module."""
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "embsqlite.__version__"}
    assert metadata.version("embsqlite") == embsqlite.__version__
    stdlib = embsqlite.connect()
    assert stdlib.execute("select embsqlite_version()").fetchone()[0] == embsqlite.__version__
    shell = subprocess.run([sqlite3_shell, ":memory:", f".load {loadable}", "select embsqlite_version()"],
                           capture_output=True, text=True, check=True)
    assert shell.stdout.strip() == embsqlite.__version__


def test_licence_file_matches_the_metadata():
    assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    installed = metadata.metadata("embsqlite")
    assert installed["License-Expression"] == "Apache-2.0"
    assert installed.get_all("License-File") == ["LICENSE"]


def test_declared_platforms_are_the_ones_the_code_accepts():
    classifiers = [c for c in pyproject()["project"]["classifiers"] if c.startswith("Operating System")]
    assert classifiers == ["Operating System :: POSIX :: Linux", "Operating System :: MacOS"]
    assert set(platforms.LOADABLE_FILENAMES) == {"linux", "darwin"}
    assert "Platforms: Linux and macOS" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("platform", ["win32", "cygwin", "freebsd14", "emscripten"])
def test_unsupported_platform_is_refused_clearly(platform):
    with pytest.raises(RuntimeError, match=f"Linux and macOS only, not '{platform}'"):
        platforms.loadable_filename(platform)


@pytest.mark.parametrize("what", ["import embsqlite", "runpy.run_path('setup.py')"])
def test_unsupported_platform_fails_at_import_and_at_build(what):
    """On Windows neither the package nor setup.py gets past its first lines: one clear
    error, not a half-built or half-working package. (setuptools is imported before the
    platform is faked: on this machine it cannot import as if on Windows.)"""
    code = ("import runpy, sys, setuptools, setuptools.command.build_ext\n"
            f"sys.platform = 'win32'\n{what}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            cwd=ROOT, timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "RuntimeError: embsqlite supports Linux and macOS only, not 'win32' (sys.platform)")


def test_no_file_name_is_reserved_on_windows():
    """Harmless names everywhere, so a clone works on any file system."""
    reserved = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                *(f"lpt{i}" for i in range(1, 10))}
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout.split()
    assert [p for p in tracked if Path(p).name.split(".")[0].lower() in reserved] == []
