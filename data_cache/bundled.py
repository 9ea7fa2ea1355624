"""The cache shipped with the package (the Fashion-MNIST demo), used when no cache is named."""
from __future__ import annotations

from pathlib import Path

from . import format as fmt

__all__ = ["BUNDLED_DIR", "bundled_cache_path"]

BUNDLED_DIR = Path(__file__).parent / "bundled"


def bundled_cache_path() -> Path | None:
    """The first complete cache under ``data_cache/bundled/``, or None if none is shipped."""
    if not BUNDLED_DIR.is_dir():
        return None
    found = sorted(p.parent for p in BUNDLED_DIR.glob(f"*/{fmt.MANIFEST}"))
    return found[0] if found else None
