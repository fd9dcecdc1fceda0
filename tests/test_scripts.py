"""scripts/setup.sh on a fresh copy of the repository: it installs once, stays silent
while nothing changed, reinstalls (rebuilding the C extension) when a C source changes,
and on a failed build prints where the log is."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _copy_of_the_repository(target: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _setup(repo: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # The python3 of this test run makes the venv: the one setup.sh would find on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, capture_output=True,
                          text=True, timeout=900, env=env)


def _built(repo: Path) -> list[Path]:
    return sorted(repo.joinpath("embsqlite").glob("*.so"))


@pytest.mark.slow
def test_setup_installs_once_then_only_when_the_build_inputs_change(tmp_path):
    repo = _copy_of_the_repository(tmp_path / "repo")
    first = _setup(repo)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == (
        "Installing embsqlite (minilm,datasette) into .venv; the log goes to .venv/install.log ...\n"
    )
    assert first.stderr == ""  # no setuptools banner, no compiler output
    assert "editable" in (repo / ".venv" / "install.log").read_text().lower()
    assert (repo / ".venv" / "bin" / "datasette").exists()  # the Tour's Datasette
    built = {p: p.stat().st_mtime_ns for p in _built(repo)}
    assert len(built) == 2  # the loadable extension and the cffi module

    again = _setup(repo)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert {p: p.stat().st_mtime_ns for p in _built(repo)} == built  # nothing rebuilt

    source = repo / "csrc" / "embsqlite.c"
    source.write_text(source.read_text() + "\n/* changed */\n")
    changed = _setup(repo)
    assert changed.returncode == 0 and changed.stdout.startswith("Installing embsqlite"), changed.stderr
    assert all(p.stat().st_mtime_ns > built[p] for p in built)  # the C extension rebuilt

    source.write_text(source.read_text() + "\nthis is not C\n")
    broken = _setup(repo)
    assert broken.returncode == 1
    assert broken.stderr.rstrip().endswith(
        f"Installation failed; the whole log is {repo}/.venv/install.log")
    assert "error" in broken.stderr.lower()  # the end of the log: the compiler's complaint
