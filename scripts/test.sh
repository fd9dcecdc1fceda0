#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian/Ubuntu machine (scripts/setup.sh),
# then run them. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# pytest exits 5 when no test ran; `set -e` makes that a failure too.
.venv/bin/python -m pytest "$@"
