#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian/Ubuntu machine (scripts/setup.sh),
# then run them. Arguments go to pytest.
# With no arguments (as CI runs it), the Datasette plugin's tests run a second time on the
# Datasette 1.0 line, in a venv of its own (.venv-datasette1), since .venv has the 0.65 line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# pytest exits 5 when no test ran; `set -e` makes that a failure too, in both runs.
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
  DATASETTE_1=datasette==1.0a41
  python3 -m venv .venv-datasette1
  .venv-datasette1/bin/pip install -q -U pip
  .venv-datasette1/bin/pip install -q -e ".[test,minilm]" "$DATASETTE_1"
  .venv-datasette1/bin/python -m pytest tests/test_datasette.py
fi
