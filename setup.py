"""Build the two native pieces of embsqlite from csrc/embsqlite.c.

- embsqlite/embsqlite.so (.dylib on macOS): the plain SQLite loadable extension, with no
  Python symbols, for the sqlite3 shell, load_extension() and Datasette. It is not a
  Python module, so it carries no Python tag; SQLite derives its entry point,
  sqlite3_embsqlite_init, from the letters before the first dot;
- embsqlite._native: the cffi module (stable ABI, abi3) that registers the same functions
  on Python's own sqlite3 connections (csrc/native_build.py).
The SQLite headers are vendored in csrc/, so a C compiler is all a build needs. Both
builds get the package version (embsqlite/__init__.py) as EMBSQLITE_VERSION.
"""
import os
import runpy

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
LOADABLE = "embsqlite.embsqlite"
# Read by path (the package itself needs the extensions being built here); running it
# refuses an unsupported platform before anything is compiled.
LOADABLE_FILENAME = runpy.run_path(os.path.join(HERE, "embsqlite", "platforms.py"))[
    "LOADABLE_FILENAME"
]


class BuildExt(build_ext):
    """build_ext that names the loadable plainly and passes the version to C."""

    def get_ext_filename(self, fullname: str) -> str:
        # Called with the full dotted name and with its last part alone: ext_map has both.
        filename = super().get_ext_filename(fullname)
        ext = self.ext_map.get(fullname)
        if ext is not None and ext.name == LOADABLE:
            return os.path.join(os.path.dirname(filename), LOADABLE_FILENAME)
        return filename

    def build_extension(self, ext: Extension) -> None:
        version = self.distribution.get_version()
        ext.define_macros = [*ext.define_macros, ("EMBSQLITE_VERSION", f'"{version}"')]
        super().build_extension(ext)


loadable = Extension(
    LOADABLE,
    sources=["csrc/embsqlite.c"],
    include_dirs=["csrc"],  # the vendored sqlite3.h and sqlite3ext.h
    depends=["csrc/embsqlite_dot.h"],
    # Export only the entry points (EMBSQLITE_EXPORT), never sqlite3_api.
    extra_compile_args=["-O3", "-fvisibility=hidden"],
    libraries=["m"],
)

setup(
    ext_modules=[loadable],
    cffi_modules=["csrc/native_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
    # One wheel for CPython 3.9 and later: _native uses the stable ABI and the loadable
    # uses no Python at all.
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
