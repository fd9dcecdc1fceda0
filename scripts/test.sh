#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian/Ubuntu machine, then run them.
# System packages: sqlite3 (the shell the tests drive), libsqlite3-dev (sqlite3ext.h,
# needed to build the extension), valgrind and clang (memory checks and fuzzing of the C code).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
[ -f /usr/include/sqlite3ext.h ] || need+=(libsqlite3-dev)
command -v valgrind >/dev/null || need+=(valgrind)
command -v clang >/dev/null || need+=(clang)
# libFuzzer and the sanitizer runtimes of Debian's default clang (tests/test_c_safety.py)
[ -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] || need+=(libclang-rt-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
python3 -m venv .venv
.venv/bin/pip install -q -U pip
.venv/bin/pip install -q -e '.[test,minilm,bench]'
# pytest exits 5 when no test ran; `set -e` makes that a failure too.
.venv/bin/python -m pytest "$@"
