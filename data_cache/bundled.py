"""The cache shipped with the package (the Fashion-MNIST demo), used when no cache is named, and the
checkpoint it was dumped from (``<cache folder>.checkpoint.pt`` beside it)."""

from __future__ import annotations

from pathlib import Path

from . import format as fmt

__all__ = ["BUNDLED_DIR", "bundled_cache_path", "bundled_checkpoint_path"]

BUNDLED_DIR = Path(__file__).parent / "bundled"


def bundled_cache_path() -> Path | None:
    """The first complete cache under ``data_cache/bundled/``, or None if none is shipped."""
    if not BUNDLED_DIR.is_dir():
        return None
    found = sorted(p.parent for p in BUNDLED_DIR.glob(f"*/{fmt.MANIFEST}"))
    return found[0] if found else None


def bundled_checkpoint_path() -> Path | None:
    """The checkpoint (backbone and heads) the bundled cache was dumped from, or None if none is shipped."""
    cache = bundled_cache_path()
    path = None if cache is None else cache.with_name(cache.name + ".checkpoint.pt")
    return path if path is not None and path.is_file() else None
