#!/usr/bin/env bash
# The host tests (tests/test_hosts.py, slow ones included) on the oldest and newest CPython
# that pyenv has here (3.9 and 3.13; the handle-reading code is gated on that range), each
# in a venv of its own (.venv-py3.9, .venv-py3.13, kept between runs) with the package
# installed from one abi3 wheel built here and only the test dependencies these tests
# import (llm 0.36 needs Python 3.10, and no test that needs it is collected). The tests
# run from outside the source tree, so they import the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
log=$wheels/pip.log
quiet() {  # run a pip command with its output in $log, shown only if it fails
  "$@" >>"$log" 2>&1 || { grep -v '^WARNING: Location' "$log" | tail -n 15 >&2; exit 1; }
}
quiet .venv/bin/pip wheel -q --no-deps -w "$wheels" .
for version in 3.9 3.13; do
  python=$(ls -d "$root"/versions/"$version".*/bin/python 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$python" ]; then
    echo "pyenv has no Python $version (under $root/versions)" >&2
    exit 1
  fi
  venv=.venv-py$version
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  quiet "$venv/bin/pip" install -q --force-reinstall --no-deps "$wheels"/embsqlite-*.whl
  quiet "$venv/bin/pip" install -q "$(ls "$wheels"/embsqlite-*.whl)" pytest numpy apsw \
    "pysqlite3-binary; platform_system == 'Linux'"
  echo "test_hosts.py on $("$venv/bin/python" --version)"
  (cd "$wheels" && "$here/$venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts= \
    --rootdir "$here" "$here/tests/test_hosts.py")
done
