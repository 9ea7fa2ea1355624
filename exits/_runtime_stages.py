"""The torch side of the compaction loop (:mod:`contract.schedule`): a configuration cut into stages of an
``ExitModel``, each stage run on a batch, scored through the runtime's one rule adapter, and the input check."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from contract import ExitConfig, ExitRule, RuleInputs, get_rule
from contract.schedule import Stage

from .errors import ExitsError
from .model import ExitModel, ExitSpec

__all__ = ["exit_scores", "scores_numpy", "check_finite", "on_saver", "TorchStages"]


def scores_numpy(logits: torch.Tensor, rule: ExitRule) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(b,)`` float32 and top-1 predictions ``(b,)`` int64, as numpy arrays, of logits ``(b, n_classes)``.

    Only what ``rule`` reads crosses to the host, as the cache stores it: the top-k of torch's softmax of the float32
    logits (as the dump writes them) and/or the logits rounded to float16, with the top-1, in one copy (off the CPU,
    packed into one float32 array: float16 values and class ids below 2**24 are exact in float32)."""
    z = logits.float()
    top = torch.softmax(z, dim=1).topk(max(1, min(rule.k, z.shape[1])), dim=1, largest=True, sorted=True)
    want_p, want_z = "topk_probs" in rule.reads, "logits" in rule.reads
    if z.device.type == "cpu":
        probs = top.values.numpy() if want_p else None
        z16 = z.half().numpy() if want_z else None
        pred = top.indices[:, 0].numpy()
    else:
        parts = [top.values] if want_p else []
        parts += [z.half().float()] if want_z else []
        host = torch.cat([*parts, top.indices[:, :1].float()], dim=1).cpu().numpy()
        k = top.values.shape[1] if want_p else 0
        probs = host[:, :k] if want_p else None
        z16 = host[:, k:-1].astype(np.float16) if want_z else None
        pred = host[:, -1].astype(np.int64)
    return rule.score(RuleInputs(topk_probs=probs, logits=z16)), pred


def exit_scores(logits: torch.Tensor, rule: ExitRule | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch adapter of the exit rules: score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 of logits
    ``(b, n_classes)``, on the logits' device (:func:`scores_numpy`, the rule scoring in numpy)."""
    s, p = scores_numpy(logits, get_rule(rule) if isinstance(rule, str) else rule)
    return torch.from_numpy(s).to(logits.device), torch.from_numpy(p).to(logits.device)


def check_finite(x: torch.Tensor) -> None:
    """ExitsError when ``x`` holds NaN or infinite values (a model predicts something for them; the bundle router
    refuses them in the same words). A finite sum proves every value finite, so the full test runs only when the
    sum is not (NaN or an overflow)."""
    if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(len(x), -1).any(1).nonzero()
        raise ExitsError(f"input: {int(bad.sum())} of {bad.numel()} values are NaN or infinite (first in row "
                         f"{int(rows[0])} of {len(x)}); pass finite, normalised images")


def on_saver(model: ExitModel, spec: ExitSpec) -> bool:
    """Whether the exit ``spec`` stands on the model's saver (before the backbone's first segment)."""
    return model.saver is not None and spec.position < model.segments[0].position


@dataclass(frozen=True)
class _Run:
    """A stage's units: segment functions in order, the last segment (its output's layout), the head's function
    (None: the segment's output are the logits)."""

    fns: tuple[Callable[[Any], Any], ...]
    last: Any
    head: Callable[[torch.Tensor], torch.Tensor] | None


class TorchStages:
    """:class:`contract.schedule.Backend` of an ``ExitModel`` on ``device``; ``fn(module)`` gives the callable a
    module runs as (compiled or not)."""

    def __init__(self, model: ExitModel, unit_macs: dict[str, float], device: torch.device,
                 fn: Callable[[nn.Module], Callable]):
        self.model, self.macs, self.device, self.fn = model, unit_macs, device, fn

    def stages(self, cfg: ExitConfig) -> list[Stage]:
        """The saver up to its last enabled exit (if one is enabled), then the backbone to its final exit; a stage
        ends at each enabled exit. Segments after the saver's last enabled exit never run."""
        model = self.model
        stops = [(j, e, t, model.exits[e]) for j, (e, t) in enumerate(zip(cfg.exits, cfg.thresholds, strict=True))]
        saver = {s[3].position: s for s in stops if on_saver(model, s[3])}
        out: list[Stage] = []
        if saver:
            out += self._chain(cfg, model.saver_segments, saver, final=False)
        backbone = {s[3].position: s for s in stops if not on_saver(model, s[3])}
        first = len(out)
        out += self._chain(cfg, model.segments, backbone, final=True)
        if first:
            out[first] = Stage(out[first].exit, out[first].threshold, out[first].rule, out[first].cost, True,
                               out[first].units)
        return out

    def _chain(self, cfg: ExitConfig, segments: list, at: dict, *, final: bool) -> list[Stage]:
        out, run, cost = [], [], 0.0
        for seg in segments:
            run.append(seg)
            cost += self.macs[seg.name]
            if final and seg is segments[-1]:  # the final exit: everyone still here leaves
                out.append(Stage(len(self.model.exits) - 1, None, cfg.rule, cost, units=self._run(run, None)))
                break
            stop = at.get(seg.position)
            if stop is None:
                continue
            j, index, threshold, spec = stop
            head = None
            if spec.key is not None:
                head = self.model.heads[spec.key]
                cost += self.macs[f"head:{spec.name}"]
            out.append(Stage(index, threshold, cfg.rule_at(j), cost, units=self._run(run, head)))
            run, cost = [], 0.0
            if not final and seg.position >= max(at):
                break
        return out

    def _run(self, segments: list, head: nn.Module | None) -> _Run:
        return _Run(tuple(self.fn(s) for s in segments), segments[-1], None if head is None else self.fn(head))

    # -- contract.schedule.Backend ----------------------------------------------------------
    def advance(self, stage: Stage, state: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        run: _Run = stage.units
        for fn in run.fns:
            state = fn(state)
        logits = state if run.head is None else run.head(run.last.stream(state))
        s, p = scores_numpy(logits, stage.rule)
        return state, s, p

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(rows)
        return t if self.device.type == "cpu" else t.to(self.device, non_blocking=True)

    def take(self, stage: Stage | None, state: Any, rows: np.ndarray) -> Any:
        if stage is None:
            return state.index_select(0, self._index(rows))
        return stage.units.last.select(state, self._index(rows))

    def concat(self, stage: Stage | None, states: list[Any]) -> Any:
        if stage is None:
            return torch.cat(states)
        return stage.units.last.out_spec.concat(states)
