"""Training of exit heads on a frozen backbone (and, for demos, of the backbone itself).

``train_heads`` trains every head at once: per batch the backbone runs once without gradients
(``ExitModel.forward_features_at``), then every head reads its features. Loss per trainable exit:
cross-entropy, optionally mixed with distillation from the final exit's output at a temperature.
AdamW, cosine schedule with linear warm-up (per step), mixed precision on CUDA. Under ``torchrun``
(a process group initialised: gloo on CPU, nccl on GPU) gradients of the trained parameters are
averaged over ranks after every backward pass, so every rank holds the same heads.

Nothing here prints: progress goes to ``callback(event, info)``; the command line is ``exits/train.py``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import dist_info
from .model import ExitModel

__all__ = ["lr_at", "train_heads", "train_backbone", "heads_loss", "held_out_accuracy"]

Callback = Callable[[str, dict], None]


class Loader(Sized, Iterable[Any], Protocol):
    """What the training loops read: batches, with their count per epoch (``len``); a DataLoader, a list."""


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
    for p, g in zip(params, grads, strict=True):
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
         loader: Loader, epochs: int, lr: float, weight_decay: float, warmup_epochs: float, amp: bool | None,
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
        sampler: Any = getattr(loader, "sampler", None)
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
                  "acc": dict(zip(names, (sums[2:] / sums[1]).tolist(), strict=True))}
        history.append(record)
        if callback is not None:
            state = {"phase": phase, "epoch": epoch + 1, "optimizer": opt.state_dict(),
                     "scaler": scaler.state_dict() if use_amp else None, "history": list(history)}
            callback("epoch", {"phase": phase, "record": record, "state": state})
    module.eval()
    return history


def train_heads(model: ExitModel, loader: Loader, *, epochs: int, lr: float = 1e-3, weight_decay: float = 0.05,
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
    return dict(zip(names, (sums[1:] / max(float(sums[0]), 1.0)).tolist(), strict=True))


def train_backbone(backbone: nn.Module, loader: Loader, *, epochs: int, lr: float = 2e-3,
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
        for p, f in zip(backbone.parameters(), flags, strict=True):
            p.requires_grad_(f)
        backbone.eval()
