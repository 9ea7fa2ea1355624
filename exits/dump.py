"""The dump: one pass over each split, every exit in the same forward pass, into a prediction cache.

``dump_cache(model, {"search": ds, "holdout": ds}, out)`` runs ``ExitModel.forward_exits`` once per
batch (no augmentation: the datasets carry the model's evaluation transform), keeps per exit the
top-k softmax probabilities and class ids (optionally float16 logits) and streams them to a
``data_cache.CacheWriter``: memory does not grow with the number of samples.

Batches are fixed row ranges ``[i * batch_size, (i + 1) * batch_size)`` of each split. Under a process
group (``torchrun``) rank r computes batches i with ``i % world_size == r`` and writes its own rows;
rank 0 finalises after a barrier, so N ranks give the same cache as one process. With ``resume`` the
rows already on disk are skipped; since batches are fixed and fp32 is deterministic by default, a
resumed dump equals an uninterrupted one (same cache fingerprint).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import sys
from collections.abc import Callable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data_cache import CacheMeta, CacheReader, create_cache

from .distributed import dist_info
from .errors import ExitsError
from .macs import MACS_COUNTER, measure_latency, unit_macs
from .model import ExitModel

__all__ = ["exit_topk", "cache_meta", "dump_provenance", "dump_cache", "deterministic"]

Progress = Callable[[str, int, int], None]


def exit_topk(logits: list[torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Top-k of every exit: ids ``(b, n_exits, k)`` int32, probs ``(b, n_exits, k)`` float32 (descending),
    and the stacked fp32 logits ``(b, n_exits, n_classes)``."""
    z = torch.stack([t.float() for t in logits], dim=1)
    probs, ids = torch.softmax(z, dim=2).topk(k, dim=2, largest=True, sorted=True)
    return ids.to(torch.int32).cpu().numpy(), probs.cpu().numpy(), z


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels, no cuDNN autotuning and no TF32 while inside; previous settings restored."""
    if not enabled:
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = False, True, False, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32 = saved[2:]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def dump_provenance(model: ExitModel, *, data_config: Mapping[str, Any] | None = None, dataset: str | None = None,
                    split_parameters: Mapping[str, Any] | None = None, seed: int | None = None,
                    command: str | None = None) -> dict[str, Any]:
    """The model's provenance (names, weight fingerprints, heads, input) plus dataset, seed, versions, command."""
    import numpy
    import timm
    import torchvision

    prov = model.provenance()
    if data_config is not None:
        prov["input"] = {key: (list(v) if isinstance(v, tuple) else v) for key, v in data_config.items()}
    prov["dataset"] = {"name": dataset, "parameters": dict(split_parameters or {})}
    prov["versions"] = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                        "torchvision": torchvision.__version__, "numpy": numpy.__version__}
    prov["seed"] = seed
    prov["command"] = command if command is not None else " ".join(sys.argv)
    return prov


def cache_meta(model: ExitModel, splits: Mapping[str, Sized], *, k: int, split_definitions: Mapping[str, str],
               macs: Mapping[str, float], latency_s: Mapping[str, float] | None = None,
               costs: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None) -> CacheMeta:
    """The ``CacheMeta`` of a dump of ``model`` over ``splits``."""
    return CacheMeta(exits=tuple(model.cache_exits()), units=tuple(model.cache_units(macs, latency_s)),
                     n_classes=model.num_classes, k=k, splits={s: len(ds) for s, ds in splits.items()},
                     split_definitions=dict(split_definitions), costs=dict(costs or {}),
                     provenance=dict(provenance or {}))


def _check_labels(splits: Mapping[str, Dataset], n_classes: int) -> None:
    for name, ds in splits.items():
        labels = getattr(ds, "labels", None)
        if labels is not None and len(labels) and (int(np.min(labels)) < 0 or int(np.max(labels)) >= n_classes):
            raise ExitsError(f"split {name}: labels reach {int(np.max(labels))}, but the model has {n_classes} classes")


def _open_writer(out: Path, meta: CacheMeta, *, with_logits: bool, overwrite: bool, resume: bool,
                 rank: int, world: int):
    """Rank 0 decides first (refuse, resume, overwrite); its verdict is shared before the others join."""
    if world == 1:
        return create_cache(out, meta, with_logits=with_logits, overwrite=overwrite, resume=resume)
    import torch.distributed as dist

    verdict: list[Any] = [None]
    writer = None
    if rank == 0:
        try:
            writer = create_cache(out, meta, with_logits=with_logits, overwrite=overwrite, resume=resume,
                                  rank=0, world_size=world)
        except Exception as exc:  # shared with every rank, then raised everywhere
            verdict[0] = exc
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        raise verdict[0]
    if rank != 0:
        writer = create_cache(out, meta, with_logits=with_logits, overwrite=False, resume=True,
                              rank=rank, world_size=world)
    return writer


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[a, b)`` of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.view(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _dump_split(model: ExitModel, writer: Any, split: str, ds: Dataset, *, k: int, batch_size: int, rank: int,
                world: int, num_workers: int, device: torch.device, use_amp: bool, with_logits: bool,
                progress: Progress | None) -> None:
    """This rank's batches of one split (rows already written skipped) through the model into ``writer``."""
    n = len(cast(Sized, ds))  # a map-style dataset (torch's Dataset declares no __len__)
    done = writer.done_rows(split)
    mine = [range(a, min(n, a + batch_size)) for a in range(rank * batch_size, n, world * batch_size)]
    total = sum(len(b) for b in mine)
    todo = [b for b in mine if not done[b[0]:b[-1] + 1].all()]
    count = total - sum(len(b) for b in todo)
    if progress is not None:
        progress(split, count, total)
    # torch's stubs want batches as lists; the loader reads any sequence of indices (ranges here)
    loader = DataLoader(ds, batch_sampler=todo, num_workers=num_workers)  # type: ignore[arg-type]
    for rows, (x, labels, sample_index) in zip(todo, loader, strict=True):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model.forward_exits(x.to(device, non_blocking=True))
        ids, probs, z = exit_topk(logits, k)
        z16 = z.to(torch.float16).cpu().numpy() if with_logits else None
        start = rows[0]
        labels, sample_index = labels.numpy(), sample_index.numpy()
        for a, b in _runs(~done[start:start + len(rows)]):
            writer.write(split, start + a, labels=labels[a:b], sample_index=sample_index[a:b],
                         topk_ids=ids[a:b], topk_probs=probs[a:b],
                         logits=None if z16 is None else z16[a:b])
        count += len(rows)
        if progress is not None:
            progress(split, count, total)


def dump_cache(model: ExitModel, splits: Mapping[str, Dataset], out: str | Path, *, k: int = 5,
               with_logits: bool = False, batch_size: int = 64, num_workers: int = 0,
               device: torch.device | str | None = None, amp: bool = False, deterministic_fp32: bool = True,
               resume: bool = False, overwrite: bool = False, latency_batch_size: int | None = None,
               split_definitions: Mapping[str, str] | None = None, provenance: Mapping[str, Any] | None = None,
               progress: Progress | None = None) -> CacheReader | None:
    """Dump every exit's predictions on ``splits`` (datasets of ``(image, label, sample_index)``) to ``out``.

    ``amp`` (CUDA only) runs under float16 autocast; otherwise fp32 with deterministic kernels.
    ``latency_batch_size`` also measures per-unit latency at that batch size. ``progress(split, done,
    total)`` is called after every batch with this rank's rows. Returns the cache on rank 0, None elsewhere.
    """
    if k < 1 or k > model.num_classes:
        raise ExitsError(f"k must be in [1, {model.num_classes}] (got {k})")
    if batch_size < 1:
        raise ExitsError(f"batch_size must be >= 1 (got {batch_size})")
    _check_labels(splits, model.num_classes)
    rank, world = dist_info()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    use_amp = bool(amp) and device.type == "cuda"
    costs: dict[str, Any] = {"macs_counter": MACS_COUNTER}
    latency = None
    if latency_batch_size is not None and rank == 0:
        latency = measure_latency(model, latency_batch_size)
        costs["latency"] = {"device": _device_name(device), "batch_size": latency_batch_size}
    prov = dict(provenance) if provenance is not None else dump_provenance(model)
    prov.update(device=_device_name(device), world_size=world, batch_size=batch_size,
                precision="autocast float16" if use_amp else "float32",
                deterministic=deterministic_fp32 and not use_amp,
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta = cache_meta(model, cast(Mapping[str, Sized], splits), k=k, split_definitions=split_definitions or {},
                      macs=unit_macs(model), latency_s=latency, costs=costs, provenance=prov)
    writer = _open_writer(Path(out), meta, with_logits=with_logits, overwrite=overwrite, resume=resume,
                          rank=rank, world=world)
    with deterministic(deterministic_fp32 and not use_amp), torch.inference_mode():
        for split, ds in splits.items():
            _dump_split(model, writer, split, ds, k=k, batch_size=batch_size, rank=rank, world=world,
                        num_workers=num_workers, device=device, use_amp=use_amp, with_logits=with_logits,
                        progress=progress)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    cache = writer.finalize() if rank == 0 else None
    if world > 1:
        dist.barrier()
    return cache
