"""``python -m exits.pipeline``: the Fashion-MNIST demo end to end, from scratch, on a CPU.

Steps (outputs under ``--out``, default ``out/pipeline/``):

1. ``train``: a small timm ViT for 28x28 grey images (4x4 patches, width 64, 8 blocks, average-pooled
   tokens, an exit position after each block) trained for a few epochs, then ``linear`` and ``mlp``
   heads at every block on the frozen backbone -> ``checkpoint.pt``. A ViT because its blocks are
   identical: a block's share of the time is its share of the MACs, so MACs an early exit saves become
   time saved (a ResNet shrunk to 28x28 inputs runs its last stages on 2x2 and 1x1 maps, whose counted
   MACs are mostly zero padding and whose time is mostly reading weights; see docs/runtime.md).
2. ``dump``: every exit's top-2 on ``search`` (a seeded 10% slice of train), ``calibration`` (the next
   ``--calibration-size`` rows of the same permutation; both kept out of training) and ``holdout`` (the
   test part) -> ``cache/``.
3. ``search``: ``python -m search.pareto`` -> ``front.json``, ``front.png`` and ``choice.json`` (the
   cheapest configuration certified, on the calibration split, to lose at most ``--max-drop`` points of
   the base accuracy with 90% confidence).
4. ``validate``: ``python -m exits.validate`` on holdout: the chosen configuration (``report_choice.json``)
   and a spread of the front (``report_front.json``, ``report_front.png``).

Finally the cache fingerprint is compared with the bundled cache's (``data_cache/bundled/fashion_mnist``).
Training is deterministic: fixed seed, ``torch.use_deterministic_algorithms``, ``num_workers=0``, a fixed
thread count (``--threads``; a different count changes the float reductions, hence the weights).
Set ``OMP_WAIT_POLICY=PASSIVE`` when the machine is shared (the Makefile does).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["DATA_CONFIG", "TIMM_KWARGS", "build_model", "train_demo", "dump_demo", "main"]

MODEL = "vit_tiny_patch16_224"
TIMM_KWARGS: dict[str, Any] = {"img_size": 28, "patch_size": 4, "in_chans": 1, "embed_dim": 64, "depth": 8,
                               "num_heads": 2, "mlp_ratio": 2, "class_token": False, "global_pool": "avg"}
HEADS = ("linear", "mlp")
DATA_CONFIG: dict[str, Any] = {"input_size": (1, 28, 28), "interpolation": "bilinear", "mean": (0.2860,),
                               "std": (0.3530,), "crop_pct": 1.0, "crop_mode": "center"}
DATASET = "fashion_mnist"
SEARCH_FRACTION = 0.1
CALIBRATION_SIZE = 10_000
STEPS = ("train", "dump", "search", "validate")
BUNDLED = Path(__file__).resolve().parents[1] / "data_cache" / "bundled" / DATASET


def build_model(seed: int):
    """The demo's ``ExitModel`` (random init from ``seed``): the small ViT, heads at every block."""
    from .model import ExitModel, create_backbone

    torch.manual_seed(seed)
    backbone = create_backbone(MODEL, num_classes=10, **TIMM_KWARGS)
    return ExitModel(backbone, points="blocks", heads=HEADS, num_classes=10, input_size=DATA_CONFIG["input_size"],
                     model_name=MODEL)


def _train_tensors(splits) -> torch.utils.data.TensorDataset:
    """The training rows as one tensor, computed exactly as the evaluation transform does (ToTensor, Normalize)."""
    ds = splits.train
    x = torch.from_numpy(ds.source.images[ds.indices]).unsqueeze(1).float().div(255)
    mean = torch.tensor(DATA_CONFIG["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(DATA_CONFIG["std"]).view(1, -1, 1, 1)
    return torch.utils.data.TensorDataset((x - mean) / std, torch.from_numpy(ds.labels))


def train_demo(splits, out: Path, *, seed: int, backbone_epochs: int, head_epochs: int, batch_size: int,
               log: Callable[[str], None] | None = None) -> Path:
    """Train the backbone, then the heads on it (frozen); write ``out/checkpoint.pt``; ``log`` gets one line
    per epoch."""
    from torch.utils.data import DataLoader

    from .checkpoints import save_checkpoint
    from .train import train_backbone, train_heads

    model = build_model(seed)
    data = _train_tensors(splits)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))

    def on_event(event: str, info: dict) -> None:
        if event == "epoch" and log is not None:
            r = info["record"]
            accs = list(r["acc"].values())
            loss = (f"loss {r['loss_per_term']:.4f} per head ({r['loss_terms']} heads)" if r["loss_terms"] > 1
                    else f"loss {r['loss']:.4f}")
            log(f"  {info['phase']} epoch {r['epoch']}: {loss}, training accuracy "
                f"{'final ' if len(accs) == 1 else 'first/last exit '}"
                f"{' / '.join(f'{a:.4f}' for a in (accs[:1] if len(accs) == 1 else (accs[0], accs[-1])))} "
                f"({r['seconds']:.0f} s)")

    train_backbone(model.backbone, loader, epochs=backbone_epochs, lr=2e-3, weight_decay=0.05, warmup_epochs=0.3,
                   device="cpu", callback=on_event)
    train_heads(model, loader, epochs=head_epochs, lr=2e-3, weight_decay=0.01, warmup_epochs=0.3, device="cpu",
                callback=on_event)
    return save_checkpoint(out / "checkpoint.pt", model, data_config=DATA_CONFIG, include_backbone=True,
                           timm_kwargs=TIMM_KWARGS,
                           data={"dataset": DATASET, "search_fraction": SEARCH_FRACTION, "seed": seed,
                                 "calibration_size": splits.parameters.get("calibration_size", 0)})


def dump_demo(checkpoint: Path, splits, out: Path, *, seed: int, command: str) -> Any:
    """Dump every exit's top-2 on search and holdout to ``out/cache`` (deterministic fp32)."""
    from .checkpoints import model_from_checkpoint
    from .dump import dump_cache, dump_provenance

    model = model_from_checkpoint(checkpoint)
    prov = dump_provenance(model, data_config=DATA_CONFIG, dataset=DATASET, split_parameters=splits.parameters,
                           seed=seed, command=command)
    return dump_cache(model, splits.cache_splits(), out / "cache", k=2, batch_size=64, overwrite=True,
                      split_definitions=splits.definitions, provenance=prov)


def _bundled_checkpoint(bundled: Path) -> Path:
    """The checkpoint file kept beside the bundled cache."""
    return bundled.with_name(bundled.name + ".checkpoint.pt")


def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import CommandParser, non_negative_int, positive_int, seed, threads
    from search.units import drop_points_arg

    p = CommandParser(prog="python -m exits.pipeline",
                                description="The Fashion-MNIST early-exit demo from scratch: train, dump, search, "
                                            "validate; compare with the bundled cache.")
    p.add_argument("--out", default="out/pipeline", help="output folder (default out/pipeline); its own files "
                                                         "(checkpoint.pt, cache/, front.json, ...) are replaced on "
                                                         "every run")
    p.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST IDX files "
                                                     "(default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--threads", type=threads, default=2, help="torch threads (fixed: part of what makes the run "
                                                          "reproducible; default 2)")
    p.add_argument("--validate-threads", type=threads, default=1,
                   help="torch threads while validating and timing (default 1: steadiest on a shared machine)")
    p.add_argument("--backbone-epochs", type=positive_int, default=4)
    p.add_argument("--head-epochs", type=positive_int, default=2)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--from-step", choices=STEPS, default="train",
                   help="start at this step, reusing the earlier steps' outputs in --out (default: from scratch)")
    p.add_argument("--calibration-size", type=non_negative_int, default=CALIBRATION_SIZE,
                   help=f"rows of train kept out of training for the calibration split (default {CALIBRATION_SIZE})")
    p.add_argument("--max-drop", type=drop_points_arg, default=0.5,
                   help="the demo configuration: cheapest certified within this many points of the base accuracy "
                        "(default 0.5, at 90%% confidence)")
    p.add_argument("--front-configs", type=positive_int, default=8,
                   help="configurations of the front validated (spread over the cost range; default 8)")
    p.add_argument("--bundled", default=str(BUNDLED), help="the bundled cache to compare with")
    p.add_argument("--update-bundled", action="store_true",
                   help="copy the new cache over the bundled one (only a folder holding a cache is replaced), and "
                        "the checkpoint beside it")
    return p


def _prepare_out(args: argparse.Namespace, out: Path, bundled: Path) -> int | None:
    """--out made (a folder) and, with --update-bundled, the bundled cache and checkpoint checked before any
    work; 2 after one error line, else None."""
    from data_cache.format import format_tag
    from data_cache.outputs import OutputError, check_output_file, check_output_folder
    from data_cache.ownership import torch_kind

    from .checkpoints import CHECKPOINT_FORMAT

    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out}: exists and is not a folder")
        if args.update_bundled:  # before any work: only a cache folder is replaced, and the file beside it
            check_output_folder(bundled, overwrite=True, option="--bundled", format=format_tag())
            check_output_file(_bundled_checkpoint(bundled), overwrite=True, option="--bundled (checkpoint)",
                              kind=torch_kind(CHECKPOINT_FORMAT))
        out.mkdir(parents=True, exist_ok=True)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: --out {out}: cannot create the folder ({exc.strerror or exc})", file=sys.stderr)
        return 2
    return None


def _search(args: argparse.Namespace, out: Path, times: dict[str, float]) -> int:
    """The certified search on the new cache: front, figure and choice beside it."""
    from search.pareto import main as pareto_main

    t0 = time.perf_counter()
    code = pareto_main([str(out / "cache"), "--export", str(out / "front.json"), "--plot",
                        str(out / "front.png"), "--max-drop", str(args.max_drop), "--show-uncertified",
                        "--export-choice", str(out / "choice.json"), "--no-progress", "--overwrite"])
    if not code:
        times["search"] = time.perf_counter() - t0
    return code


def _validate(args: argparse.Namespace, out: Path, ckpt: Path, times: dict[str, float]) -> int:
    """The choice, then the front's first configurations, validated on the holdout split."""
    from .validate import main as validate_main

    t0 = time.perf_counter()
    common = ["--checkpoint", str(ckpt), "--dataset", DATASET, "--split", "holdout", "--cache",
              str(out / "cache"), "--threads", str(args.validate_threads), "--overwrite"]
    common += ["--data-root", args.data_root] if args.data_root else []
    code = validate_main(["--config", str(out / "choice.json"), "--all", "--report",
                          str(out / "report_choice.json"), "--plot", str(out / "report_choice.png")] + common)
    if code:
        return code
    code = validate_main(["--config", str(out / "front.json"), "--all", "--max-configs",
                          str(args.front_configs), "--report", str(out / "report_front.json"), "--plot",
                          str(out / "report_front.png"), "--timing-samples", "2048", "--latency-samples",
                          "100"] + common)
    if not code:
        times["validate"] = time.perf_counter() - t0
    return code


def _update_bundled(out: Path, bundled: Path, ckpt: Path) -> int:
    """--update-bundled: the new cache and checkpoint replace the bundled ones; 0, or 2 after one error line."""
    from data_cache.format import format_tag
    from data_cache.outputs import OutputError, atomic_folder, atomic_output
    from data_cache.ownership import torch_kind

    from .checkpoints import CHECKPOINT_FORMAT

    try:
        with atomic_folder(bundled, option="--bundled", overwrite=True, format=format_tag()) as tmp:
            shutil.copytree(out / "cache", tmp, dirs_exist_ok=True)
        with atomic_output(_bundled_checkpoint(bundled), option="--bundled (checkpoint)", overwrite=True,
                           kind=torch_kind(CHECKPOINT_FORMAT)) as tmp:
            shutil.copyfile(ckpt, tmp)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundled cache and checkpoint replaced: {bundled}")
    return 0


def _compare(fingerprint: str, bundled: Path) -> int:
    """0 when the new cache's fingerprint is the bundled cache's, else 1 (both printed)."""
    from data_cache import CacheError, open_cache

    try:
        ref = open_cache(bundled).fingerprint
    except (CacheError, FileNotFoundError):
        ref = None
    print(f"cache fingerprint  (new):     {fingerprint}")
    print(f"cache fingerprint  (bundled): {ref}")
    if ref != fingerprint:
        print("the new cache differs from the bundled one (another seed, thread count, CPU or library version "
              "changes the float results)")
        return 1
    print("the pipeline reproduced the bundled cache")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the chain; exit status 0 when the cache matches the bundled one, 1 when it differs, 2 on bad input."""
    args = _parser().parse_args(argv)
    from data_cache import CacheError, open_cache
    from data_cache.outputs import OutputError

    from .data import load_splits
    from .dump import deterministic
    from .errors import ExitsError

    out = Path(args.out)
    bundled = Path(args.bundled)
    failed = _prepare_out(args, out, bundled)
    if failed is not None:
        return failed
    torch.set_num_threads(args.threads)
    start = STEPS.index(args.from_step)
    t_all = time.perf_counter()
    times: dict[str, float] = {}

    def step(name: str) -> bool:
        run = STEPS.index(name) >= start
        if run:
            print(f"[{name}] {time.strftime('%H:%M:%S')}", flush=True)
        return run

    try:
        splits = load_splits(DATASET, args.data_root, data_config=DATA_CONFIG, search_fraction=SEARCH_FRACTION,
                             seed=args.seed, calibration_size=args.calibration_size)
        ckpt = out / "checkpoint.pt"
        if step("train"):
            t0 = time.perf_counter()
            with deterministic():
                train_demo(splits, out, seed=args.seed, backbone_epochs=args.backbone_epochs,
                           head_epochs=args.head_epochs, batch_size=args.batch_size,
                           log=lambda line: print(line, flush=True))
            times["train"] = time.perf_counter() - t0
        if step("dump"):
            t0 = time.perf_counter()
            command = "python -m exits.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
            dump_demo(ckpt, splits, out, seed=args.seed, command=command)
            times["dump"] = time.perf_counter() - t0
        if step("search") and (code := _search(args, out, times)):
            return code
        if step("validate") and (code := _validate(args, out, ckpt, times)):
            return code
        cache = open_cache(out / "cache")
    except (CacheError, ExitsError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t_all
    print("\ntimes: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total:.0f} s "
          f"({total / 60:.1f} min)")
    if args.update_bundled and _update_bundled(out, bundled, ckpt):
        return 2
    return _compare(cache.fingerprint, bundled)


if __name__ == "__main__":
    from data_cache.outputs import cli_entry

    sys.exit(cli_entry(main))
