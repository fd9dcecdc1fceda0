"""Where embsqlite keeps the user's files: the saved default model and the default database.

`$EMBSQLITE_USER_PATH` names one directory for both (as `$LLM_USER_PATH` does for llm);
unset, the platform's config and data directories are used (platformdirs).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional

USER_PATH_ENV = "EMBSQLITE_USER_PATH"
APP_NAME = "embsqlite"


def user_path() -> Optional[Path]:
    """`$EMBSQLITE_USER_PATH` as a path, or None when it is unset or empty; a path that
    exists and is not a directory raises NotADirectoryError naming the variable."""
    value = os.environ.get(USER_PATH_ENV, "")
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{USER_PATH_ENV} must name a directory", str(path))
    return path


def config_dir() -> Path:
    """The directory of the saved default model (e.g. ~/.config/embsqlite)."""
    override = user_path()
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """The directory of the default database (e.g. ~/.local/share/embsqlite)."""
    override = user_path()
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))
