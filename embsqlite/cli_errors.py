"""One-line errors for the command line. Known user errors become `UserError` (a
`click.ClickException`) where they happen; usage errors are shown in one line too (exit 2).
Anything else is a bug and shows its traceback."""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import click


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(message).split())


class UserError(click.ClickException):
    """An error in what the user asked for, printed as `Error: <one line>`, exit 1."""

    def format_message(self) -> str:
        return one_line(self.message)


class OneLineUsageError(UserError):
    """A usage error (bad or missing option or argument), one line, exit 2."""

    exit_code = 2


def describe(error: BaseException) -> str:
    """A known error's message; OSError and sqlite3 errors get their context added."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot use {error.filename}: {error.strerror or error}"
    if isinstance(error, sqlite3.Error):
        return f"database error: {error}"
    return str(error) or type(error).__name__


@contextlib.contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the named exception types, raised inside the block, into a `UserError`."""
    try:
        yield
    except kinds as error:
        raise UserError(describe(error)) from None


# Shown as help, not as an error (click >= 8.2 raises it for a bare group).
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line_usage(error: click.UsageError) -> click.ClickException:
    return error if isinstance(error, _HELP) else OneLineUsageError(error.format_message())


class OneLineUsageGroup(click.Group):
    """A click group that shows usage errors (its own and its commands') as one line, like
    every other error, instead of the usage text."""

    def make_context(
        self, info_name: Any, args: Any, parent: Any = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            raise _one_line_usage(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        from .schema import ForeignTableError

        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _one_line_usage(error) from None
        except ForeignTableError as error:  # any command reaching a table that is not llm's
            raise UserError(describe(error)) from None
