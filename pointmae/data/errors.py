"""One error type for bad data on disk, so that every message names the file (and line)."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad or missing data. `path` and `line` (1-based, when the format has lines) are kept as
    attributes and are part of the message, so a user can open the file at the right place."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.message = message          # without the location, for callers that add context
        where = str(self.path) if self.path is not None else "<memory>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}")


def require_file(path) -> Path:
    """The path as a Path, or a DataError naming it when it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    return path
