"""A test plugin that cannot be imported: it needs a package that is not installed."""
from __future__ import annotations

import embsqlite_missing_dependency  # noqa: F401
