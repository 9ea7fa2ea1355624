"""Write a cache: per-rank row shards first, final arrays and the manifest last.

A killed writer leaves only ``.parts/`` (never a manifest), so nothing half-written loads as
complete; ``create_cache(..., resume=True)`` reads back which rows are done.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from . import format as fmt
from ._base import CacheMeta, meta_from_manifest, meta_to_manifest
from .errors import CacheExistsError, CacheIncompleteError, CacheInputError
from .fingerprint import array_digest, cache_fingerprint

__all__ = ["CacheWriter", "create_cache", "save_cache"]

_META = "meta.json"


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False))
    os.replace(tmp, path)


def _comparable(manifest: dict) -> dict:
    """Manifest fields that must agree between a resumed writer and the one it resumes."""
    return {k: manifest[k] for k in ("format", "n_classes", "k", "exits", "splits")}


def create_cache(path: str | Path, meta: CacheMeta, *, with_logits: bool = False, overwrite: bool = False,
                 resume: bool = False, rank: int = 0, world_size: int = 1) -> "CacheWriter":
    """Open a writer for a new cache at ``path`` (see :class:`CacheWriter`)."""
    return CacheWriter(Path(path), meta, with_logits=with_logits, overwrite=overwrite, resume=resume,
                       rank=rank, world_size=world_size)


class CacheWriter:
    """Writes rows ``[start, stop)`` of each split as shards; ``finalize`` assembles the cache.

    Several ranks may write into the same folder (disjoint rows); one of them finalises.
    """

    def __init__(self, path: Path, meta: CacheMeta, *, with_logits: bool, overwrite: bool, resume: bool,
                 rank: int, world_size: int):
        meta_from_manifest(meta_to_manifest(meta), source=f"{path}: meta")  # same checks as on load
        self.path, self.meta, self.with_logits = path, meta, with_logits
        self.rank, self.world_size = rank, world_size
        self.parts = path / fmt.PARTS_DIR
        wanted = dict(meta_to_manifest(meta), with_logits=with_logits)
        manifest = path / fmt.MANIFEST
        if manifest.exists():
            if not overwrite:
                raise CacheExistsError(f"{path}: already holds a complete cache; pass overwrite to replace it")
            if rank == 0:
                manifest.unlink()  # first, so a kill from here on leaves an incomplete cache
                for split in meta.splits:
                    shutil.rmtree(path / split, ignore_errors=True)
        elif (self.parts / _META).exists():
            old = json.loads((self.parts / _META).read_text())
            if overwrite and rank == 0 and not resume:
                shutil.rmtree(self.parts)
            elif not resume and not overwrite:
                raise CacheIncompleteError(
                    f"{path}: holds a half-written cache; resume it (--resume) or start again (--overwrite)")
            elif resume and (_comparable(old) != _comparable(wanted) or old.get("with_logits") != with_logits):
                raise CacheInputError(f"{path}: the half-written cache there was started with other exits, "
                                      "splits or classes; use --overwrite to start again")
        elif path.exists() and any(path.iterdir()) and not overwrite:
            raise CacheExistsError(f"{path}: folder is not empty and holds no cache; choose an empty folder")
        for split in meta.splits:
            (self.parts / split).mkdir(parents=True, exist_ok=True)
        if not (self.parts / _META).exists():
            _atomic_json(self.parts / _META, wanted)

    # -- shards ------------------------------------------------------------------------------
    def _shards(self, split: str) -> list[tuple[int, int, Path]]:
        out = []
        for p in (self.parts / split).glob("*.npz"):
            a, b = p.stem.split("_")
            out.append((int(a), int(b), p))
        return sorted(out)

    def done_rows(self, split: str) -> np.ndarray:
        """Boolean mask ``(n_samples,)`` of the rows already written by any rank."""
        done = np.zeros(self.meta.splits[split], dtype=bool)
        for a, b, _ in self._shards(split):
            done[a:b] = True
        return done

    def write(self, split: str, start: int, *, labels, sample_index, topk_ids, topk_probs, logits=None) -> None:
        """Write rows ``[start, start + b)`` of ``split``.

        Shapes: labels, sample_index ``(b,)``; topk_ids, topk_probs ``(b, n_exits, k)``;
        logits ``(b, n_exits, n_classes)`` when the writer was opened ``with_logits``.
        """
        if split not in self.meta.splits:
            raise CacheInputError(f"write: split {split!r} is not declared; declared: {list(self.meta.splits)}")
        labels = np.asarray(labels)
        b = labels.shape[0]
        n, e, k, c = self.meta.splits[split], self.meta.n_exits, self.meta.k, self.meta.n_classes
        arrays = {"labels": (labels, (b,)), "sample_index": (np.asarray(sample_index), (b,)),
                  "topk_ids": (np.asarray(topk_ids), (b, e, k)), "topk_probs": (np.asarray(topk_probs), (b, e, k))}
        if self.with_logits:
            if logits is None:
                raise CacheInputError("write: this writer was opened with_logits; pass logits")
            arrays["logits"] = (np.asarray(logits), (b, e, c))
        for name, (arr, shape) in arrays.items():
            if arr.shape != shape:
                raise CacheInputError(f"write: {split}: {name}: shape {arr.shape}, expected {shape}")
        if start < 0 or start + b > n:
            raise CacheInputError(f"write: {split}: rows [{start}, {start + b}) outside [0, {n})")
        final = self.parts / split / f"{start:010d}_{start + b:010d}.npz"
        tmp = final.with_name(final.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **{name: arr for name, (arr, _) in arrays.items()})
        os.replace(tmp, final)

    # -- assembly ----------------------------------------------------------------------------
    def finalize(self):
        """Check every row is written, assemble final arrays, write the manifest last; return the reader."""
        from .reader import open_cache

        for split, n in self.meta.splits.items():
            missing = np.flatnonzero(~self.done_rows(split))
            if missing.size:
                raise CacheIncompleteError(
                    f"{self.path}: {split}: {missing.size} of {n} rows not written yet (first missing row "
                    f"{missing[0]}); run the remaining ranks or resume the dump")
        manifest = meta_to_manifest(self.meta)
        for split in self.meta.splits:
            manifest["splits"][split]["files"] = self._assemble(split)
        manifest["fingerprint"] = cache_fingerprint(manifest)
        _atomic_json(self.path / fmt.MANIFEST, manifest)
        shutil.rmtree(self.parts, ignore_errors=True)
        return open_cache(self.path)

    def _assemble(self, split: str) -> dict:
        n, e, k, c = self.meta.splits[split], self.meta.n_exits, self.meta.k, self.meta.n_classes
        out_dir = self.path / split
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [fmt.LABELS, fmt.SAMPLE_INDEX, fmt.TOPK_IDS, fmt.TOPK_PROBS] + ([fmt.LOGITS] if self.with_logits else [])
        tmp = {f: out_dir / (f + ".tmp") for f in files}
        mm = {f: np.lib.format.open_memmap(tmp[f], mode="w+", dtype=fmt.DTYPES[f],
                                           shape=fmt.expected_shape(f, n_exits=e, k=k, n_samples=n, n_classes=c))
              for f in files}
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
            entries[f] = {"sha256": array_digest(mm[f]), "shape": list(mm[f].shape), "dtype": mm[f].dtype.str}
            del mm[f]
            os.replace(tmp[f], out_dir / f)
        return entries


def save_cache(path: str | Path, cache, *, overwrite: bool = False, chunk: int = 1 << 16):
    """Write any reader (e.g. an :class:`InMemoryCache`) to ``path``; return the on-disk reader."""
    with_logits = all(cache.has_logits(s) for s in cache.splits())
    w = create_cache(path, cache.meta, with_logits=with_logits, overwrite=overwrite)
    for split in cache.splits():
        n = cache.n_samples(split)
        ids, probs, logits = cache.topk_ids(split), cache.topk_probs(split), cache.logits(split)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            w.write(split, a, labels=cache.labels(split)[a:b], sample_index=cache.sample_index(split)[a:b],
                    topk_ids=np.transpose(ids[:, :, a:b], (2, 0, 1)),
                    topk_probs=np.transpose(probs[:, :, a:b], (2, 0, 1)),
                    logits=None if not with_logits else np.transpose(logits[:, a:b], (1, 0, 2)))
    return w.finalize()
