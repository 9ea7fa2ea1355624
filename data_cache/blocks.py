"""Copy blocks of (memory-mapped) cache arrays into buffers without mapping their pages.

Indexing a memory-mapped ``.npy`` faults its pages into the process: they count in its resident set
(``/usr/bin/time -v``'s maximum resident set size includes them) until the kernel reclaims them,
and every few pages cost a page fault. For a C-contiguous block of an ``np.memmap`` (or of a view
of one, e.g. ``probs[e, 0, a:b]``), :class:`BlockReader` reads the bytes with a plain unbuffered
read straight into the destination instead: resident memory stays bounded by the buffers whatever the size of the
cache, and reading is several times faster than faulting (1.28 GB in about 0.4 s against 2 s from the
page cache here). Any other array is copied as usual.
"""

from __future__ import annotations

import io
import mmap

import numpy as np

__all__ = ["BlockReader"]


def _file_region(view: np.ndarray) -> tuple[str, int] | None:
    """``(path, byte offset)`` of a C-contiguous block of a memory-mapped file, or None.

    ``np.memmap`` keeps the file name and the offset of the whole array's data in the file (views
    inherit both) and is backed by an ``mmap`` that starts at that offset rounded down to the
    allocation granularity; the block's position in the mapping gives its position in the file.
    """
    filename = getattr(view, "filename", None)
    offset = getattr(view, "offset", None)
    if not filename or offset is None or not view.flags.c_contiguous or view.size == 0:
        return None
    owner: object = view
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if not isinstance(owner, mmap.mmap):
        return None
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mapped_at = np.frombuffer(owner, dtype=np.uint8).ctypes.data
    return filename, start + (view.ctypes.data - mapped_at)


class BlockReader:
    """Reads blocks of arrays into buffers; files opened for memory-mapped arrays stay open until
    :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self):
        self._files: dict[str, io.FileIO] = {}

    def read(self, view: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``view`` copied into ``out`` (a new array when None; same shape, C-contiguous)."""
        if out is None:
            return self.read(view, np.empty(view.shape, dtype=view.dtype))
        if out.shape != view.shape or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous array of shape {view.shape}; got {out.shape}"
            )
        region = _file_region(view) if out.dtype == view.dtype else None
        if region is None:
            np.copyto(out, view)
            return out
        path, offset = region
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = io.FileIO(path, "r")
        buf = out.data.cast("B")
        f.seek(offset)
        done = 0
        while done < buf.nbytes:
            got = f.readinto(buf[done:])
            if not got:
                raise OSError(f"{path}: unexpected end of file at byte {offset + done}")
            done += got
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
