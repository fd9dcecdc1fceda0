"""The package as users get it: `python -m build` makes the sdist and, from that sdist
alone, one cp39-abi3 wheel; the wheel installs without a compiler into fresh venvs of the
oldest and newest CPython this machine has (pyenv's 3.9 and 3.13) and works there: the
hashing model, a search, the C functions on stdlib sqlite3, the loadable in the sqlite3
shell. Dependencies of those venvs come from PyPI (pip's cache makes repeats fast)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import embsqlite

pytestmark = [pytest.mark.slow,
              pytest.mark.linux_only(reason="a linux_x86_64 wheel and pyenv's Pythons")]

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ["3.9", "3.13"]  # the oldest and newest CPython that pyenv holds here

# Runs inside the fresh venv, from a directory with no embsqlite source in it.
SMOKE = r"""
import json, os, sqlite3, subprocess, sys
import embsqlite
from embsqlite import _native

db, shell = sys.argv[1], sys.argv[2]
pets = embsqlite.Collection("pets", db, model_id="hashing")
pets.embed_multi([("hound", "my happy hound"), ("cat", "my sleepy cat on the sofa"),
                  ("crash", "stock market crash")], store=True)
best = pets.similar("a happy hound", number=1)[0]
stdlib = sqlite3.connect(db)  # opened after the import: the C functions are on it
c_version = stdlib.execute("select embsqlite_version()").fetchone()[0]
query = "select id, round(cosine_similarity(embedding, (select embedding from embeddings where id = 'hound')), 6) from embeddings order by id"
shell_out = subprocess.run([shell, db, ".load " + embsqlite.loadable_path(), "select embsqlite_version()", query],
                           capture_output=True, text=True, check=True).stdout.split()
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "package": os.path.dirname(embsqlite.__file__),
    "native": os.path.basename(_native.__file__),
    "loadable": os.path.basename(embsqlite.loadable_path()),
    "version": embsqlite.__version__,
    "c_version": c_version,
    "best": [best.id, round(best.score, 6)],
    "stdlib": [list(r) for r in stdlib.execute(query)],
    "shell": shell_out,
}))
"""


def pyenv_python(version: str) -> Path:
    """pyenv's python<version> on this machine (scripts/test.sh's machine has 3.9 to 3.13)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    assert found, f"Python {version} from pyenv is needed here (pyenv install {version}) under {root}"
    return found[-1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel built from it, by `python -m build` (isolated build envs)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_sdist_holds_what_a_build_needs_and_no_tests(dist):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("LICENSE", "setup.py", "pyproject.toml", "csrc/embsqlite.c", "csrc/native.c",
                   "csrc/native_build.py", "csrc/sqlite3.h", "csrc/sqlite3ext.h",
                   "embsqlite/platforms.py", "embsqlite/data/tokenizer.json"):
        assert needed in names, needed
    assert not [n for n in names if n.split("/")[0] in ("tests", "fuzz", "benchmarks", "scripts")]


def test_wheel_is_abi3_with_the_loadable_named_plainly(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"embsqlite-{embsqlite.__version__}-cp39-abi3-linux_x86_64.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.endswith(".so")) == ["embsqlite/_native.abi3.so",
                                                            "embsqlite/embsqlite.so"]
    assert f"embsqlite-{embsqlite.__version__}.dist-info/licenses/LICENSE" in names


@pytest.mark.parametrize("version", PYTHONS)
def test_wheel_installs_without_a_compiler_and_works(dist, version, tmp_path, sqlite3_shell):
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([str(pyenv_python(version)), "-m", "venv", "--upgrade-deps", str(venv)],
                   check=True, capture_output=True, timeout=300)
    # No compiler anywhere: only the venv on PATH, CC a command that fails, and pip told
    # to take wheels only, so any attempt to build from source fails the install.
    bare = {"PATH": str(venv / "bin"), "HOME": os.environ.get("HOME", str(tmp_path)),
            "CC": "/bin/false", "CXX": "/bin/false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--only-binary=:all:", str(wheel)],
                             capture_output=True, text=True, check=False, env=bare, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp_path / "work"
    work.mkdir()
    env = {**bare, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    run = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", SMOKE, str(work / "smoke.db"),
                          sqlite3_shell], capture_output=True, text=True, check=False, env=env, cwd=work,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["python"] == [int(part) for part in version.split(".")]
    assert Path(report["package"]).is_relative_to(venv)
    assert (report["native"], report["loadable"]) == ("_native.abi3.so", "embsqlite.so")
    assert report["version"] == report["c_version"] == embsqlite.__version__
    assert report["best"][0] == "hound"
    shell_version, *shell_rows = report["shell"]
    assert shell_version == embsqlite.__version__
    assert shell_rows == [f"{id_}|{score}" for id_, score in report["stdlib"]]
    # one word ("my") shared by 3 and 6 distinct words, in distinct buckets: 1/sqrt(3*6)
    assert dict(report["stdlib"]) == {"cat": round(1 / 18 ** 0.5, 6), "crash": 0.0, "hound": 1.0}
