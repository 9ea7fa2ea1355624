"""Write a cache: per-rank row shards first, final arrays and the manifest last.

A killed writer leaves only ``.parts/`` (never a manifest), so nothing half-written loads as
complete; ``create_cache(..., resume=True)`` reads back which rows are done.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, check_meta, meta_to_manifest
from ._cache_target import _cannot_resume, _read_json, check_cache_target
from ._publish import link_file
from .errors import CacheExistsError, CacheIncompleteError, CacheInputError
from .fingerprint import array_digest, cache_fingerprint
from .ownership import (
    PARTS_META,
    check_targets,
    clear_parts,
    owned_by_cache,
    owned_by_parts,
    remove_owned,
)

__all__ = ["CacheWriter", "create_cache", "save_cache", "check_cache_target"]

_SHARD = re.compile(r"^(\d{10})_(\d{10})\.npz$")  # rows [start, stop); temp files never match


def _atomic_json(path: Path, obj: dict, *, exclusive: bool = False) -> None:
    """``obj`` written to ``path`` through a temporary file; ``exclusive``: only if nothing is there
    (FileExistsError otherwise), so two writers never both publish it."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False))
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        link_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _same_run(old: dict, new: dict) -> bool:
    """Whether two writers' manifests describe the same cache (so one may resume or join the other).

    Measured latencies and provenance may differ; exits, splits, classes and unit MACs may not.
    """
    keys = ("format", "n_classes", "k", "exits", "splits", "with_logits")

    def costs(m: dict) -> list:
        return [(u.get("name"), u.get("kind"), float(u.get("macs", 0))) for u in m.get("units", [])]

    return all(old.get(k) == new.get(k) for k in keys) and costs(old) == costs(new)


def create_cache(
    path: str | Path,
    meta: CacheMeta,
    *,
    with_logits: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    rank: int = 0,
    world_size: int = 1,
    join_timeout_s: float = 300.0,
) -> CacheWriter:
    """Open a writer for a new cache at ``path`` (see :class:`CacheWriter`)."""
    return CacheWriter(
        Path(path),
        meta,
        with_logits=with_logits,
        overwrite=overwrite,
        resume=resume,
        rank=rank,
        world_size=world_size,
        join_timeout_s=join_timeout_s,
    )


class CacheWriter:
    """Writes rows ``[start, stop)`` of each split as shards; ``finalize`` assembles the cache.

    Several ranks may write into the same folder (disjoint rows); one of them finalises. Rank 0
    decides (refuse, resume or overwrite) and creates ``.parts/``; ranks > 0 wait up to
    ``join_timeout_s`` for it and join when it was started with the same exits, splits, classes and
    unit MACs. After all ranks are done, one rank finalises (later ``finalize`` calls get the reader).
    """

    def __init__(
        self,
        path: Path,
        meta: CacheMeta,
        *,
        with_logits: bool,
        overwrite: bool,
        resume: bool,
        rank: int,
        world_size: int,
        join_timeout_s: float = 300.0,
    ):
        wanted = dict(
            check_meta(meta, f"{path}: meta"), with_logits=with_logits
        )  # the same checks as on load
        if not (
            isinstance(world_size, int)
            and world_size >= 1
            and isinstance(rank, int)
            and 0 <= rank < world_size
        ):
            raise CacheInputError(
                f"{path}: rank must be in [0, world_size) "
                f"(got rank={rank!r}, world_size={world_size!r})"
            )
        if path.exists() and not path.is_dir():
            raise CacheExistsError(f"{path}: exists and is not a folder; choose a folder path")
        self.path, self.meta, self.with_logits = path, meta, with_logits
        self.rank, self.world_size = rank, world_size
        self.parts = path / fmt.PARTS_DIR
        if rank == 0:
            self._start(wanted, overwrite=overwrite, resume=resume)
        else:
            self._join(wanted, overwrite=overwrite, timeout_s=join_timeout_s)

    def _start(self, wanted: dict, *, overwrite: bool, resume: bool) -> None:
        """Rank 0: refuse, resume or clear what the tool wrote at ``path``, then create ``.parts/``.

        Only what the old manifest lists (or the writer's own shards) is removed; other files stay, and a
        non-empty folder holding no cache of ours is refused even with ``overwrite`` (``ownership.py``).
        """
        path, manifest = self.path, self.path / fmt.MANIFEST
        if manifest.exists() or manifest.is_symlink():
            if not overwrite:
                raise CacheExistsError(
                    f"{path}: already holds a complete cache; "
                    + ("nothing to resume; " if resume else "")
                    + "pass overwrite=True (--overwrite) to replace it"
                )
            owned = owned_by_cache(path)
            check_targets(path, self.meta.splits, owned)
            remove_owned(
                path, owned
            )  # data files first, the manifest last: a kill leaves it refusing to load
            clear_parts(self.parts)
        elif self.parts.is_dir() and not self.parts.is_symlink():
            old = _read_json(self.parts / PARTS_META)
            resuming = resume and old is not None
            if old is not None and resuming and not _same_run(old, wanted):
                raise CacheInputError(
                    f"{path}: the half-written cache there was started with other exits, "
                    "splits, classes or unit costs; use --overwrite to start again"
                )
            if not resuming and not overwrite:
                raise CacheIncompleteError(
                    _cannot_resume(path)
                    if resume
                    else f"{path}: holds a half-written cache; resume it (--resume) or start "
                    "again (--overwrite)"
                )
            check_targets(path, self.meta.splits, owned_by_parts(path))
            if not resuming:
                clear_parts(self.parts)
        elif path.exists() and any(path.iterdir()):
            raise CacheExistsError(
                f"{path}: folder is not empty and holds files but no cache written by this tool; "
                "nothing in it is touched; choose an empty or new folder"
            )
        for split in self.meta.splits:
            (self.parts / split).mkdir(parents=True, exist_ok=True)
        if not (self.parts / PARTS_META).exists():
            try:
                _atomic_json(
                    self.parts / PARTS_META, wanted, exclusive=True
                )  # last: ranks > 0 wait for it
            except FileExistsError:
                raise CacheExistsError(
                    f"{path}: another run started writing a cache there at the same time; "
                    "nothing of it was touched"
                ) from None

    def _join(self, wanted: dict, *, overwrite: bool, timeout_s: float) -> None:
        """Rank > 0: wait for rank 0's ``.parts/`` and check it describes the same cache."""
        deadline = time.monotonic() + timeout_s
        while True:
            complete = (self.path / fmt.MANIFEST).exists()
            if complete and not overwrite:
                raise CacheExistsError(
                    f"{self.path}: already holds a complete cache; "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            if not complete and (self.parts / PARTS_META).exists():
                break
            if time.monotonic() >= deadline:
                raise CacheIncompleteError(
                    f"{self.path}: rank {self.rank}: rank 0 did not start the cache within {timeout_s:g} s; "
                    "open the writer on rank 0 first"
                )
            time.sleep(0.05)
        old = _read_json(self.parts / PARTS_META)
        if old is None or not _same_run(old, wanted):
            raise CacheInputError(
                f"{self.path}: rank {self.rank}: rank 0 started this cache with other exits, "
                "splits, classes or unit costs"
            )

    # -- shards ------------------------------------------------------------------------------
    def _split_parts(self, split: str) -> Path:
        d = self.parts / split
        if not d.is_dir():
            raise CacheIncompleteError(
                f"{d}: missing: the cache was finalised or cleared by another writer; "
                "open it with open_cache, or start again with --overwrite"
            )
        return d

    def _shards(self, split: str) -> list[tuple[int, int, Path]]:
        out = []
        for p in self._split_parts(split).iterdir():
            m = _SHARD.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(out)

    def done_rows(self, split: str) -> np.ndarray:
        """Boolean mask ``(n_samples,)`` of the rows already written by any rank."""
        done = np.zeros(self.meta.splits[split], dtype=bool)
        for a, b, _ in self._shards(split):
            done[a:b] = True
        return done

    def write(
        self, split: str, start: int, *, labels, sample_index, topk_ids, topk_probs, logits=None
    ) -> None:
        """Write rows ``[start, start + b)`` of ``split``.

        Shapes: labels, sample_index ``(b,)``; topk_ids, topk_probs ``(b, n_exits, k)``;
        logits ``(b, n_exits, n_classes)`` when the writer was opened ``with_logits``.
        """
        if split not in self.meta.splits:
            raise CacheInputError(
                f"write: split {split!r} is not declared; declared: {list(self.meta.splits)}"
            )
        given = {
            "labels": labels,
            "sample_index": sample_index,
            "topk_ids": topk_ids,
            "topk_probs": topk_probs,
        }
        if self.with_logits and logits is None:
            raise CacheInputError("write: this writer was opened with_logits; pass logits")
        if logits is not None:
            if not self.with_logits:
                raise CacheInputError(
                    "write: logits given, but this writer was opened without with_logits"
                )
            given["logits"] = logits
        given = {name: np.asarray(a) for name, a in given.items()}
        lengths = {name: a.shape[0] if a.ndim else None for name, a in given.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise CacheInputError(
                f"write: {split}: the arrays must share their first axis (rows); got "
                + ", ".join(
                    f"{name} {shape}" for name, shape in ((m, given[m].shape) for m in given)
                )
            )
        b = given["labels"].shape[0]
        n, e, k, c = self.meta.splits[split], self.meta.n_exits, self.meta.k, self.meta.n_classes
        want = {
            "labels": (b,),
            "sample_index": (b,),
            "topk_ids": (b, e, k),
            "topk_probs": (b, e, k),
            "logits": (b, e, c),
        }
        for name, arr in given.items():
            if arr.shape != want[name]:
                raise CacheInputError(
                    f"write: {split}: {name}: shape {arr.shape}, expected {want[name]}"
                )
        if start < 0 or start + b > n:
            raise CacheInputError(f"write: {split}: rows [{start}, {start + b}) outside [0, {n})")
        final = self._split_parts(split) / f"{start:010d}_{start + b:010d}.npz"
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **given)
        os.replace(tmp, final)

    # -- assembly ----------------------------------------------------------------------------
    def finalize(self):
        """Check every row is written, assemble final arrays, write the manifest last; return the reader."""
        from .reader import open_cache

        if not self.parts.exists() and (self.path / fmt.MANIFEST).exists():
            return open_cache(self.path)  # another rank (or an earlier call) finalised it
        for split, n in self.meta.splits.items():
            missing = np.flatnonzero(~self.done_rows(split))
            if missing.size:
                raise CacheIncompleteError(
                    f"{self.path}: {split}: {missing.size} of {n} rows not written yet (first missing row "
                    f"{missing[0]}); run the remaining ranks or resume the dump"
                )
        manifest = meta_to_manifest(self.meta)
        for split in self.meta.splits:
            manifest["splits"][split]["files"] = self._assemble(split)
        manifest["fingerprint"] = cache_fingerprint(manifest)
        try:
            _atomic_json(self.path / fmt.MANIFEST, manifest, exclusive=True)
        except FileExistsError:
            raise CacheExistsError(
                f"{self.path}: a cache manifest appeared there while this one was written "
                "(another run?); it is not replaced"
            ) from None
        clear_parts(self.parts)
        return open_cache(self.path)

    def _assemble(self, split: str) -> dict:
        n, e, k, c = self.meta.splits[split], self.meta.n_exits, self.meta.k, self.meta.n_classes
        out_dir = self.path / split
        out_dir.mkdir(parents=True, exist_ok=True)
        files = list(fmt.SPLIT_FILES) + ([fmt.LOGITS] if self.with_logits else [])
        tmp = {f: out_dir / (f + ".tmp") for f in files}
        mm = {
            f: np.lib.format.open_memmap(
                tmp[f],
                mode="w+",
                dtype=fmt.DTYPES[f],
                shape=fmt.expected_shape(f, n_exits=e, k=k, n_samples=n, n_classes=c),
            )
            for f in files
        }
        shards = self._shards(split)
        for a, b, p in shards:
            with np.load(p) as z:
                mm[fmt.LABELS][a:b] = z["labels"]
                mm[fmt.SAMPLE_INDEX][a:b] = z["sample_index"]
                mm[fmt.TOPK_IDS][:, :, a:b] = np.transpose(z["topk_ids"], (1, 2, 0))
                mm[fmt.TOPK_PROBS][:, :, a:b] = np.transpose(z["topk_probs"], (1, 2, 0))
                if self.with_logits:
                    mm[fmt.LOGITS][:, a:b] = np.transpose(z["logits"], (1, 0, 2))
        entries = {}
        for f in files:
            mm[f].flush()
            entries[f] = {
                "sha256": array_digest(mm[f]),
                "shape": list(mm[f].shape),
                "dtype": mm[f].dtype.str,
            }
            del mm[f]
            os.replace(tmp[f], out_dir / f)
        return entries


def save_cache(path: str | Path, cache, *, overwrite: bool = False, chunk: int = 1 << 16):
    """Write any reader (e.g. an :class:`InMemoryCache`) to ``path``; return the on-disk reader."""
    source = getattr(cache, "path", None)
    if overwrite and source is not None and Path(path).resolve() == Path(source).resolve():
        raise CacheExistsError(f"{path}: is the cache being saved; save it to another folder")
    with_logits = all(cache.has_logits(s) for s in cache.splits())
    w = create_cache(path, cache.meta, with_logits=with_logits, overwrite=overwrite)
    for split in cache.splits():
        n = cache.n_samples(split)
        ids, probs, logits = cache.topk_ids(split), cache.topk_probs(split), cache.logits(split)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            w.write(
                split,
                a,
                labels=cache.labels(split)[a:b],
                sample_index=cache.sample_index(split)[a:b],
                topk_ids=np.transpose(ids[:, :, a:b], (2, 0, 1)),
                topk_probs=np.transpose(probs[:, :, a:b], (2, 0, 1)),
                logits=None if not with_logits else np.transpose(logits[:, a:b], (1, 0, 2)),
            )
    return w.finalize()
