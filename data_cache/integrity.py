"""The integrity pass: every file of a cache read once, its sha256 and its values checked together.

Each file is streamed with plain reads into one reused buffer (no memory map, so pages already read
never pile up in the resident set) and files are spread over threads: ``hashlib`` and numpy release
the GIL on large buffers, so two cores hash and scan two files at once. Resident memory is about
``workers x (CHUNK_BYTES + a few chunk-sized temporaries)`` plus one split's ``sample_index``.

Value checks are one line per kind of problem, naming the file, the field and the first exits
affected. Probabilities get a fast float32 test per exit whose failures are a superset of the exact
test's; only exits it flags are re-checked exactly (float64), so the verdict is the exact one.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta

__all__ = [
    "CHUNK_BYTES",
    "has_duplicates",
    "NpyLayout",
    "read_npy_layout",
    "FileJob",
    "split_jobs",
    "run_jobs",
    "default_workers",
    "PROB_MAX",
    "check_read_range",
]

CHUNK_BYTES = (
    1 << 24
)  # bytes read (and scanned) at a time per thread; at least one exit of top-k arrays


@dataclass(frozen=True)
class NpyLayout:
    """Where a ``.npy`` file's data starts, and its shape and dtype (from its header)."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


def read_npy_layout(path: Path) -> NpyLayout:
    """Parse a ``.npy`` header; ValueError (one line) when it is not a C-order .npy file of the right size."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            raise ValueError(f"unsupported .npy version {version}")
        try:
            shape, fortran, dtype = readers[version](f)
        except (
            Exception
        ) as exc:  # numpy evaluates the header text: any failure there is a damaged header
            raise ValueError(f"damaged header ({type(exc).__name__})") from None
        offset = f.tell()
    if fortran:
        raise ValueError("stored in Fortran order; the format stores C order")
    if dtype.hasobject:
        raise ValueError("holds Python objects")
    if any(n < 0 for n in shape):
        raise ValueError(f"damaged header (shape {tuple(shape)})")
    size = os.stat(path).st_size
    want = (
        offset + math.prod(shape) * dtype.itemsize
    )  # Python integers: a shape no file holds cannot overflow
    if size != want:
        raise ValueError(
            f"{size} bytes, but its header needs {want} ({'truncated' if size < want else 'extra data'})"
        )
    return NpyLayout(offset, tuple(shape), dtype)


PROB_MAX = (
    1 + 1e-6
)  # the largest probability the value checks accept (float32 rounding of a softmax)


def check_read_range(
    cache,
    split: str,
    fname: str,
    field: str,
    exit_index: int | None,
    values: np.ndarray,
    low: float,
    high: float,
) -> None:
    """CacheFormatError naming the file when ``values`` just read from ``cache`` hold NaN or a value outside
    ``[low, high]``: the readers' own check, so a cache opened without its integrity pass (``--skip-integrity-check``)
    never lets a probability of 1.5 or a class id beyond the class count reach a result. One min and max per read."""
    from .errors import CacheFormatError

    if not values.size:
        return
    lo, hi = values.min(), values.max()
    if lo >= low and hi <= high:
        return
    at = "" if exit_index is None else f" at exit {cache.exits[exit_index].name}"
    where = f"{getattr(cache, 'path', '<memory>')}/{split}/{fname}"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CacheFormatError(
            f"{where}: {field}: NaN or inf values{at}; check the cache with "
            "python -m data_cache.validate"
        )
    bad = lo if lo < low else hi
    raise CacheFormatError(
        f"{where}: {field}: {bad.item()!r}{at} is outside [{low:g}, {high:g}]; check the cache "
        "with python -m data_cache.validate (was its integrity check skipped?)"
    )


def has_duplicates(values: np.ndarray) -> bool:
    """Whether a 1-D array holds a value twice (sorting beats numpy's hash-based ``unique`` many times over)."""
    ordered = np.sort(values)
    return bool((ordered[1:] == ordered[:-1]).any())


def _exits_named(meta: CacheMeta, idx: list[int]) -> str:
    names = ", ".join(meta.exits[i].name for i in idx[:3])
    more = f" and {len(idx) - 3} more" if len(idx) > 3 else ""
    return f"at exit{'s' if len(idx) > 1 else ''} {names}{more}"


class _Scan:
    """Value checks of one file fed chunk by chunk; ``align`` elements are never split across chunks.

    Built as ``Scan(where, meta, split, exit_size)``: the file (for messages), the cache's metadata,
    the split, and the elements of one exit's block (3-D files).
    """

    align = 1

    def update(self, start: int, values: np.ndarray) -> None:
        raise NotImplementedError

    def problems(self) -> list[str]:
        raise NotImplementedError


class _Labels(_Scan):
    def __init__(self, where: str, meta: CacheMeta, split: str, exit_size: int):
        self.where, self.c = where, meta.n_classes
        self.lo: int | None = None
        self.hi: int | None = None

    def update(self, start, values):
        if values.size:
            lo, hi = int(values.min()), int(values.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def problems(self):
        if self.lo is not None and self.hi is not None and (self.lo < 0 or self.hi >= self.c):
            return [f"{self.where}: labels: outside [0, {self.c}) (min {self.lo}, max {self.hi})"]
        return []


class _SampleIndex(_Scan):
    def __init__(self, where: str, meta: CacheMeta, split: str, exit_size: int):
        self.where = where
        self.values = np.empty(meta.splits[split], dtype=fmt.DTYPES[fmt.SAMPLE_INDEX])

    def update(self, start, values):
        self.values[start : start + values.size] = values

    def problems(self):
        duplicates = has_duplicates(self.values)
        self.values = self.values[:0].copy()  # the split's index no longer held
        return [] if not duplicates else [f"{self.where}: sample_index: values must be unique"]


class _PerExit(_Scan):
    """Checks reduced per exit: ``found[kind]`` collects the exits where a kind of problem was seen."""

    lines: dict[str, str] = {}

    def __init__(self, where: str, meta: CacheMeta, split: str, exit_size: int):
        self.where, self.meta, self.exit_size = where, meta, exit_size
        self.found: dict[str, set[int]] = {kind: set() for kind in self.lines}

    def update(self, start, values):
        e0 = start // self.exit_size
        stop = start + values.size
        for e in range(e0, (stop - 1) // self.exit_size + 1):
            a, b = max(start, e * self.exit_size), min(stop, (e + 1) * self.exit_size)
            self.check_exit(e, values[a - start : b - start])

    def check_exit(self, e: int, piece: np.ndarray) -> None:
        raise NotImplementedError

    def problems(self):
        return [
            f"{self.where}: {self.lines[kind].format(c=self.meta.n_classes)} {_exits_named(self.meta, sorted(idx))}"
            + ("; re-import or re-dump with the current version" if kind == "order" else "")
            for kind, idx in self.found.items()
            if idx
        ]


class _TopkIds(_PerExit):
    lines = {"ids": "class ids: outside [0, {c})"}

    def check_exit(self, e, piece):
        if piece.min() < 0 or piece.max() >= self.meta.n_classes:
            self.found["ids"].add(e)


_ONE = np.float32(1 + 1e-6)  # rounds down in float32: p > 1 + 1e-6 exactly when p > _ONE


class _TopkProbs(_PerExit):
    lines = {
        "nonfinite": "probabilities: NaN or inf values",
        "range": "probabilities: outside [0, 1] or top-k summing above 1",
        "order": "order: top-k not sorted descending",
    }

    def __init__(self, where, meta, split, exit_size):
        super().__init__(where, meta, split, exit_size)
        self.align = exit_size  # the checks compare ranks of one sample: whole exits only
        # float32 sums of k values <= 1 err by less than k * 2**-23: a margin keeps the fast test stricter
        self.sum_fast = np.float32(1 + 1e-3 - (meta.k + 2) * 2.0**-22)

    def check_exit(self, e, piece):
        p = piece.reshape(self.meta.k, -1)
        ok = (
            p[-1].min() >= 0 and p[0].max() <= _ONE
        )  # NaN fails every comparison, so it is never ok
        for r in range(self.meta.k - 1):
            ok = ok and np.subtract(p[r], p[r + 1]).min() >= 0
        if ok and self.meta.k > 1:
            ok = p.sum(axis=0).max() <= self.sum_fast
        if not ok:
            self._exact(e, p)

    def _exact(self, e: int, p: np.ndarray) -> None:
        q = p.astype(np.float64)
        nonfinite = not np.isfinite(q).all()
        if nonfinite:
            self.found["nonfinite"].add(e)
        elif ((q < 0) | (q > 1 + 1e-6)).any() or (q.sum(axis=0) > 1 + 1e-3).any():
            self.found["range"].add(e)
        if (np.diff(p, axis=0) > 0).any():
            self.found["order"].add(e)


class _Logits(_PerExit):
    lines = {"nonfinite": "logits: NaN or inf values"}

    def __init__(self, where, meta, split, exit_size):
        super().__init__(where, meta, split, exit_size)
        self.align = meta.n_classes  # one sample's row; an exit may span many chunks

    def check_exit(self, e, piece):
        if e not in self.found["nonfinite"] and not np.isfinite(piece).all():
            self.found["nonfinite"].add(e)


_SCANS = {
    fmt.LABELS: _Labels,
    fmt.SAMPLE_INDEX: _SampleIndex,
    fmt.TOPK_IDS: _TopkIds,
    fmt.TOPK_PROBS: _TopkProbs,
    fmt.LOGITS: _Logits,
}


@dataclass
class FileJob:
    """One file to stream: its layout, the checksum it must have (None: not checked), its value checks."""

    path: Path
    layout: NpyLayout
    sha256: str | None
    scan: _Scan

    @property
    def nbytes(self) -> int:
        return math.prod(self.layout.shape) * self.layout.dtype.itemsize


def split_jobs(
    path: Path,
    split: str,
    meta: CacheMeta,
    layouts: dict[str, NpyLayout],
    entries: dict,
    *,
    checksums: bool,
) -> list[FileJob]:
    """A job per readable file of one split (``layouts``: the files whose headers are right)."""
    jobs = []
    for fname, layout in layouts.items():
        per_exit = math.prod(layout.shape[1:])  # 1 for a 1-D file
        scan = _SCANS[fname](str(path / split / fname), meta, split, per_exit)
        jobs.append(
            FileJob(
                path / split / fname, layout, entries[fname]["sha256"] if checksums else None, scan
            )
        )
    return jobs


def _read_full(f, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _run(job: FileJob) -> list[str]:
    lay = job.layout
    item = lay.dtype.itemsize
    total = math.prod(lay.shape)
    align = job.scan.align
    per = max(align, (CHUNK_BYTES // item) // align * align)
    digest = hashlib.sha256(f"{lay.dtype.str}|{tuple(lay.shape)}|".encode()) if job.sha256 else None
    buf = memoryview(bytearray(min(per, max(total, 1)) * item))
    with open(job.path, "rb", buffering=0) as f:
        if hasattr(
            os, "posix_fadvise"
        ):  # a larger read-ahead: about twice the throughput from a cold disk here
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        f.seek(lay.offset)
        pos = 0
        while pos < total:
            n = min(per, total - pos)
            view = buf[: n * item]
            if _read_full(f, view) < len(view):
                return [f"{job.path}: truncated while reading (the file changed during the check?)"]
            if digest is not None:
                digest.update(view)
            job.scan.update(pos, np.frombuffer(view, dtype=lay.dtype))
            pos += n
    problems = []
    if digest is not None and "sha256:" + digest.hexdigest() != job.sha256:
        problems.append(
            f"{job.path}: sha256: checksum mismatch (the file changed since it was written; re-run "
            "the dump or the import)"
        )
    problems.extend(job.scan.problems())
    return problems


def default_workers() -> int:
    """Threads for the pass: every core this process may use."""
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def run_jobs(jobs: list[FileJob], workers: int | None = None) -> list[str]:
    """Run every job (largest first, on ``workers`` threads); problems in the order the jobs were given."""
    workers = max(1, min(workers or default_workers(), len(jobs)))
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].nbytes)
    if workers == 1:
        results = {i: _run(jobs[i]) for i in order}
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache-check") as pool:
            futures = {i: pool.submit(_run, jobs[i]) for i in order}
            results = {i: f.result() for i, f in futures.items()}
    return [p for i in range(len(jobs)) for p in results[i]]
