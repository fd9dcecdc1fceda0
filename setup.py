"""Build the two native pieces of embsqlite from csrc/embsqlite.c.

- embsqlite/embsqlite.<python-tag>.so: the plain SQLite loadable extension, with no
  Python symbols, for the sqlite3 shell, load_extension() and Datasette. SQLite derives
  its entry point, sqlite3_embsqlite_init, from the letters before the first dot;
- embsqlite._native: the cffi module that registers the same functions on Python's own
  sqlite3 connections (csrc/native_build.py).
Both need sqlite3ext.h (Debian: libsqlite3-dev).
"""
import sys

from setuptools import Extension, setup

LOADABLE = "embsqlite.embsqlite"


loadable = Extension(
    LOADABLE,
    sources=["csrc/embsqlite.c"],
    depends=["csrc/embsqlite_dot.h"],
    # Export only the entry points (EMBSQLITE_EXPORT), never sqlite3_api.
    extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-fvisibility=hidden"],
    libraries=[] if sys.platform == "win32" else ["m"],
)

setup(
    ext_modules=[loadable],
    cffi_modules=["csrc/native_build.py:ffibuilder"],
)
