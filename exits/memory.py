"""Keep freed memory in the process, so that large batches do not fault their pages in again call after call.

glibc's malloc serves a block above its mmap threshold (128 KiB, then adapted to the blocks freed, up to 32 MiB)
with a fresh ``mmap`` and returns it on free, and hands the top of its heap back to the system once enough of it
lies free. Every such block is faulted in again, page by page, the next time: at batch 64-256 plain timm models
ran 1.2-1.7x faster on this CPU with freed memory kept (ResNet-18 at 224 px, batch 64, 2 threads: 17.1-22.5 ms
per image by default over two runs, 11.9 kept), and the demo's ViT at batch 256 ran some calls 35% slower than
others, after what ran before them (``docs/runtime.md``, "Freed memory is kept"). :func:`hold_freed_memory`
turns both off (``mallopt``: no ``mmap`` for blocks, no trimming of the heap), so freed blocks are reused where they
lie. ``ExitRuntime`` calls it (``hold_memory=False`` does not), so the profile, the validations and a server built
on the runtime run under the same policy, and :func:`memory_policy` says which one is in force (cost tables and
reports record it); the dump (``data_cache.dump``) and the training command (``exits.train``) call it too.

Process-wide and not undone: the process keeps its peak heap. Not glibc (macOS, musl): nothing is changed.
A malloc setting in the environment (``MALLOC_*_`` variables, ``glibc.malloc`` tunables): the user's choice, left
alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

__all__ = ["hold_freed_memory", "memory_policy", "HELD"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
HELD = {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}  # no mmap for blocks; never trim the heap
_held = False


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _environment() -> dict[str, str]:
    """The malloc settings the environment makes: ``MALLOC_*_`` variables, ``glibc.malloc`` tunables."""
    out = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") and k.endswith("_")}
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        out["GLIBC_TUNABLES"] = os.environ["GLIBC_TUNABLES"]
    return out


def memory_policy() -> dict[str, Any]:
    """What this process does with freed memory: ``{"policy": "held" | "environment" | "default" | "unknown",
    "settings"}`` (``held``: this module's ``mallopt`` settings; ``environment``: the variables that set it)."""
    if _held:
        return {"policy": "held", "settings": dict(HELD)}
    env = _environment()
    if env:
        return {"policy": "environment", "settings": env}
    return {"policy": "default" if _glibc() is not None else "unknown", "settings": {}}


def hold_freed_memory() -> dict[str, Any]:
    """Keep freed memory in this process (glibc; once; the environment's settings win), and return
    :func:`memory_policy`."""
    global _held
    libc = None if _held or _environment() else _glibc()
    if libc is not None:
        _held = bool(libc.mallopt(_M_MMAP_MAX, HELD["M_MMAP_MAX"])) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, HELD["M_TRIM_THRESHOLD"])
        )
    return memory_policy()
