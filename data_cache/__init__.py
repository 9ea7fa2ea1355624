"""The prediction cache: the one contract between the model side (``exits``) and ``search``.

numpy only; the dump (``python -m data_cache.dump``) imports torch lazily.
"""

from ._base import CacheMeta, CacheReader, ExitInfo, UnitInfo
from ._validation import validate_cache
from .errors import (
    CacheError,
    CacheExistsError,
    CacheFormatError,
    CacheIncompleteError,
    CacheInputError,
    CacheWarning,
)
from .format import FORMAT_VERSION
from .memory import InMemoryCache
from .reader import MemmapCache, open_cache
from .writer import CacheWriter, create_cache, save_cache

__all__ = [
    "CacheMeta",
    "CacheReader",
    "ExitInfo",
    "UnitInfo",
    "InMemoryCache",
    "MemmapCache",
    "CacheWriter",
    "open_cache",
    "create_cache",
    "save_cache",
    "validate_cache",
    "FORMAT_VERSION",
    "CacheError",
    "CacheExistsError",
    "CacheFormatError",
    "CacheIncompleteError",
    "CacheInputError",
    "CacheWarning",
]
