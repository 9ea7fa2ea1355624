"""Stable content hashes of arrays, files and whole caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

__all__ = ["array_digest", "file_digest", "digest_arrays", "cache_fingerprint"]

_CHUNK = 1 << 24


def array_digest(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes, hashed in chunks (memmap friendly)."""
    h = hashlib.sha256(f"{np.dtype(arr.dtype).str}|{tuple(arr.shape)}|".encode())
    flat = np.ascontiguousarray(arr).reshape(-1)
    step = max(1, _CHUNK // max(flat.itemsize, 1))
    for i in range(0, flat.size, step):
        h.update(np.ascontiguousarray(flat[i : i + step]).tobytes())
    return "sha256:" + h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def digest_arrays(named: dict[str, np.ndarray]) -> str:
    """One hash for a mapping of named arrays (e.g. a state dict turned to numpy), order-independent."""
    h = hashlib.sha256()
    for name in sorted(named):
        h.update(name.encode())
        h.update(array_digest(np.asarray(named[name])).encode())
    return "sha256:" + h.hexdigest()


def cache_fingerprint(manifest: dict) -> str:
    """Hash of what a cache holds: exits, unit MACs, classes and every file's checksum.

    Creation time, command, device, provenance, split definitions, cost notes and measured latencies
    are left out, so the same dump with the same seed gives the same fingerprint. MACs are hashed as
    floats (``1000`` and ``1000.0`` agree).
    """
    content = {
        "format": manifest["format"],
        "n_classes": manifest["n_classes"],
        "k": manifest["k"],
        "exits": manifest["exits"],
        "units": [
            {"name": u["name"], "kind": u["kind"], "macs": float(u["macs"])}
            for u in manifest["units"]
        ],
        "splits": {
            s: {f: v.get("sha256") for f, v in sorted(d.get("files", {}).items())}
            for s, d in sorted(manifest["splits"].items())
        },
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()
