"""Exceptions of the cache package; messages read ``file: field: problem``."""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CacheFormatError",
    "CacheIncompleteError",
    "CacheExistsError",
    "CacheInputError",
    "CacheWarning",
]


class CacheError(ValueError):
    """Base of every cache problem; command lines turn it into one line per problem and exit 2."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class CacheFormatError(CacheError):
    """The files exist but break the format (shape, dtype, values, version, checksum)."""


class CacheIncompleteError(CacheError):
    """A dump or import was interrupted: no manifest, or shards missing."""


class CacheExistsError(CacheError):
    """The output folder already holds a complete cache and ``overwrite`` was not given."""


class CacheInputError(CacheError):
    """What a user handed to a writer or importer is inconsistent."""


class CacheWarning(UserWarning):
    """Suspicious but legal input (the same records as search and holdout); command lines print one line."""
