"""The platforms embsqlite supports, Linux and macOS, and the loadable extension's file
name on each. Importing this module on any other platform raises RuntimeError, and
setup.py runs this file too, so the build and the code agree."""
from __future__ import annotations

import sys

# sys.platform -> the plain SQLite loadable extension, next to this file once built.
LOADABLE_FILENAMES = {"linux": "embsqlite.so", "darwin": "embsqlite.dylib"}


def loadable_filename(platform: str = sys.platform) -> str:
    """The loadable extension's file name on `platform`; RuntimeError if unsupported."""
    try:
        return LOADABLE_FILENAMES[platform]
    except KeyError:
        raise RuntimeError(
            f"embsqlite supports Linux and macOS only, not {platform!r} (sys.platform)"
        ) from None


LOADABLE_FILENAME = loadable_filename()  # this platform's, or the RuntimeError above
