#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian/Ubuntu machine (scripts/setup.sh),
# then run them. Arguments go to pytest, whose default is the fast tier (pyproject's addopts
# leave out tests marked `slow`; `-m slow` runs only those).
# With no arguments (as CI runs it), every step below runs and the script fails if any
# failed: the fast tier, the slow tier, ruff, mypy, the host tests on Python 3.9 and 3.13
# (scripts/host_tests.sh), and the Datasette plugin's tests on the Datasette 1.0 line in a
# venv of its own (.venv-datasette1), since .venv has the 0.65 line. pytest exits 5 when no
# test ran, which fails its step like any other non-zero code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
failed=()
step() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  if "$@"; then
    echo "== $name: passed in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED after $((SECONDS - start)) s"
    failed+=("$name")
  fi
}
datasette1() {
  python3 -m venv .venv-datasette1
  .venv-datasette1/bin/pip install -q -U pip
  .venv-datasette1/bin/pip install -q -e ".[test,minilm]" datasette==1.0a41
  .venv-datasette1/bin/python -m pytest -o addopts= tests/test_datasette.py
}
step "fast tier" .venv/bin/python -m pytest
step "slow tier" .venv/bin/python -m pytest -m slow
step "ruff" .venv/bin/ruff check .
step "mypy" .venv/bin/mypy
step "host tests on Python 3.9 and 3.13" bash scripts/host_tests.sh
step "Datasette 1.0" datasette1
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed steps: %s\n' "${failed[*]}" >&2
  exit 1
fi
