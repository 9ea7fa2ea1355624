"""Keep freed memory in the process, so a large batch does not fault its pages in again on every call.

glibc's malloc serves a large tensor from the heap or from a fresh ``mmap`` and, by default, adapts both its
mmap threshold and the size of free heap it keeps (twice that threshold) to the blocks freed so far. A run of large
batches then hands memory back to the system every few calls and pays page faults to take it again: on the
demo's ViT at batch 256 a base-model call that faulted about 14,000 pages took 0.27 ms per image against 0.20 for
one that faulted none, and whether a call faults depends on what ran before it (``docs/runtime.md``, "Freed
memory is kept"). :func:`hold_freed_memory` fixes the two thresholds (``mallopt``): blocks up to 32 MiB come from
the heap, and up to 1 GiB of free heap stays in the process. ``ExitRuntime`` calls it (``hold_memory=False`` does
not), so the profile, the validations and a server built on the runtime run under the same policy, and
:func:`memory_policy` says which one is in force (cost tables and reports record it).

Process-wide and not undone. Not glibc (macOS, musl): nothing is changed. ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` set in the environment: the user's choice, left alone.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

__all__ = ["hold_freed_memory", "memory_policy", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 << 20   # glibc's largest allowed mmap threshold on 64-bit systems
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_held = False


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def memory_policy() -> dict[str, Any]:
    """What this process does with freed memory: ``{"policy": "held" | "environment" | "default" | "unknown",
    "mmap_threshold", "trim_threshold"}`` (the thresholds when this module set them)."""
    if _held:
        return {"policy": "held", "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    if any(k in os.environ for k in _ENV):
        return {"policy": "environment", "mmap_threshold": os.environ.get(_ENV[0]),
                "trim_threshold": os.environ.get(_ENV[1])}
    return {"policy": "default" if _glibc() is not None else "unknown", "mmap_threshold": None,
            "trim_threshold": None}


def hold_freed_memory() -> dict[str, Any]:
    """Keep freed memory in this process (glibc; once; the environment's thresholds win), and return
    :func:`memory_policy`."""
    global _held
    libc = None if _held or any(k in os.environ for k in _ENV) else _glibc()
    if libc is not None:
        # the mmap threshold first: setting either parameter turns glibc's adaptation of both off
        _held = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) \
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return memory_policy()
