"""One-line errors for the command line: a click group whose failures print `Error: ...`
on stderr and exit non-zero, never a traceback (`EMBSQLITE_DEBUG=1` shows one for an
unexpected error)."""
from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any

import click

from .collection import Collection
from .inputs import InputError
from .model import ModelNotInstalledError, UnknownModelError

DEBUG_ENV = "EMBSQLITE_DEBUG"

# Exceptions whose message is already a clear sentence for the user.
USER_ERRORS = (
    Collection.DoesNotExist,
    UnknownModelError,
    ModelNotInstalledError,
    InputError,
    ValueError,
    TypeError,
    OSError,
    sqlite3.Error,
)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class OneLineErrors(click.Group):
    """A click group whose errors are one line on stderr, never a traceback."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:  # pragma: no cover - click handles it itself
            result = done.exit_code
        except click.UsageError as error:
            hint = ""
            if error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            return self._fail(f"{error.format_message()}{hint}", error.exit_code, standalone_mode)
        except click.ClickException as error:
            return self._fail(error.format_message(), error.exit_code, standalone_mode)
        except click.Abort:
            return self._fail("aborted", 1, standalone_mode)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other Unix tools do.
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:  # pragma: no cover
                pass
            return self._exit(1, standalone_mode)
        except KeyboardInterrupt:
            return self._fail("interrupted", 130, standalone_mode)
        except USER_ERRORS as error:
            if os.environ.get(DEBUG_ENV):
                raise
            return self._fail(_describe(error), 1, standalone_mode)
        except Exception as error:
            if os.environ.get(DEBUG_ENV):
                raise
            return self._fail(
                f"unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 for details)",
                1,
                standalone_mode,
            )
        return self._exit(result if isinstance(result, int) else 0, standalone_mode)

    def _fail(self, message: str, code: int, standalone: bool) -> Any:
        click.echo(f"Error: {_one_line(message)}", err=True)
        return self._exit(code, standalone)

    @staticmethod
    def _exit(code: int, standalone: bool) -> Any:
        if standalone:
            sys.exit(code)
        return code


def _describe(error: BaseException) -> str:
    """A user error's message; OSError and sqlite3 errors get their context added."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot use {error.filename}: {error.strerror or error}"
    if isinstance(error, sqlite3.Error):
        return f"database error: {error}"
    return str(error) or type(error).__name__
