"""Numeric settings read from environment variables (cache size, memory mapping, threads).

A value that is empty or not a finite number in range falls back to the default with a
warning that names the variable: a typo in the environment never stops `import embsqlite`
(and with it the command line or Datasette) from starting.
"""
from __future__ import annotations

import math
import os
import warnings


def env_number(name: str, default: float, minimum: float = 0, integer: bool = False) -> float:
    """The number in environment variable `name` (unset: `default`); a value that is not a
    finite number of at least `minimum` (an integer if `integer`) warns and gives `default`."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        warnings.warn(
            f"{name}={text!r} is not {kind} of at least {minimum:g}; using {default:g}",
            RuntimeWarning, stacklevel=2,
        )
        return default
    return value
