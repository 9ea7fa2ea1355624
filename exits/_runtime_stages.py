"""The torch side of the compaction loop (:mod:`contract.schedule`): a configuration cut into stages of an
``ExitModel``, each stage run on a batch, scored through the runtime's one rule adapter, and the input check."""
from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from contract import ExitConfig, ExitRule, RuleInputs, get_rule, partner_exit, reads_partner
from contract.schedule import Payload, Stage, final_rule, restarted

from .errors import ExitsError
from .model import ExitModel, ExitSpec

__all__ = ["exit_scores", "scores_numpy", "scored", "check_finite", "on_saver", "TorchStages"]


def _host(parts: list[torch.Tensor]) -> list[np.ndarray]:
    """2-D tensors as numpy arrays, in one copy off the CPU (packed into one float32 array: float16 values and class
    ids below 2**24 are exact in float32; the caller casts each part back)."""
    if parts[0].device.type == "cpu":
        return [t.numpy() for t in parts]
    host = torch.cat([t.float() for t in parts], dim=1).cpu().numpy()
    return np.split(host, np.cumsum([t.shape[1] for t in parts])[:-1], axis=1)


_TOP1_READS = frozenset({"topk_probs"})


def _topk(z: torch.Tensor, k: int) -> Any:
    """The top-``k`` of torch's softmax of float32 logits, descending: what the dump writes (``exits.dump``)."""
    return torch.softmax(z.float(), dim=1).topk(max(1, min(k, z.shape[1])), dim=1, largest=True, sorted=True)


def scored(logits: torch.Tensor, rule: ExitRule, *, partner: Payload | None = None,
           partner_logits: torch.Tensor | None = None, hand_on: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                   Payload | None]:
    """Scores ``(b,)`` float32, top-1 predictions ``(b,)`` int64 and, with ``hand_on``, the top-``hand_on``
    ``(ids, probs)`` of logits ``(b, n_classes)``, as numpy arrays.

    Only what ``rule`` reads crosses to the host, as the cache stores it, in one copy: the top-k of torch's softmax
    of the float32 logits (as the dump writes them) and/or the logits rounded to float16, with the top-1; for a rule
    reading its partner, this exit's top-k ids and the partner's top-k, from ``partner`` (handed on by the stage
    before) or computed here from ``partner_logits``."""
    z = logits.float()
    reads = rule.reads
    if reads == _TOP1_READS and rule.k == 1 and not hand_on and z.device.type == "cpu":
        top1, ids = _topk(z, 1)   # max_prob: nothing to pack or split (at batch 1 every step counts)
        return rule.score(RuleInputs(topk_probs=top1.numpy())), ids.numpy()[:, 0], None
    top = _topk(z, max(rule.k, hand_on))
    k = min(rule.k, top.values.shape[1])
    parts = [top.values[:, :k]] if "topk_probs" in reads else []
    parts += [z.half() if z.device.type == "cpu" else z.half().float()] if "logits" in reads else []
    parts.append(top.indices[:, :k] if "partner" in reads else top.indices[:, :1])
    if hand_on:
        parts += [top.indices[:, :hand_on], top.values[:, :hand_on]]
    if partner_logits is not None:
        theirs = _topk(partner_logits, rule.k)
        parts += [theirs.indices, theirs.values]
    host = iter(_host(parts))
    probs = next(host) if "topk_probs" in reads else None
    z16 = np.asarray(next(host), np.float16) if "logits" in reads else None
    ids = np.asarray(next(host), np.int64)
    hand = (np.asarray(next(host), np.int64), next(host)) if hand_on else None
    if partner_logits is not None:
        partner = (np.asarray(next(host), np.int64), next(host))
    if "partner" not in reads:
        return rule.score(RuleInputs(topk_probs=probs, logits=z16)), ids[:, 0], hand
    if partner is None:
        raise ExitsError(f"rule {rule.name!r} reads its partner exit's outputs; none were given")
    inputs = RuleInputs(probs, z16, ids, partner[0][:, :k], partner[1][:, :k])
    return rule.score(inputs), ids[:, 0], hand


def scores_numpy(logits: torch.Tensor, rule: ExitRule, *, partner: Payload | None = None,
                 partner_logits: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(b,)`` float32 and top-1 predictions ``(b,)`` int64, as numpy arrays, of logits ``(b, n_classes)``
    (:func:`scored`; ``partner`` / ``partner_logits`` for a rule reading its partner)."""
    s, p, _ = scored(logits, rule, partner=partner, partner_logits=partner_logits)
    return s, p


def exit_scores(logits: torch.Tensor, rule: ExitRule | str, *,
                partner_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch adapter of the exit rules: score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 of logits
    ``(b, n_classes)``, on the logits' device (:func:`scored`, the rule scoring in numpy); ``partner_logits``: the
    partner exit's logits, for a rule reading them."""
    s, p = scores_numpy(logits, get_rule(rule) if isinstance(rule, str) else rule, partner_logits=partner_logits)
    return torch.from_numpy(s).to(logits.device), torch.from_numpy(p).to(logits.device)


def check_finite(x: torch.Tensor) -> None:
    """ExitsError when ``x`` holds NaN or infinite values (a model predicts something for them; the bundle router
    refuses them in the same words). A finite sum proves every value finite, so the full test runs only when the
    sum is not (NaN or an overflow). The sum crosses as a Python float: ``bool`` of a tensor test costs several times
    more at batch 1."""
    if not x.is_floating_point() or math.isfinite(x.sum().item()):
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
class _Partner:
    """A partner head run inside a stage (its exit not enabled): on the output of ``segment`` (its stream), reached
    after the stage's first ``after`` segments (0: the stage's input state); ``macs``: the head's, per row."""

    after: int
    segment: Any
    head: Callable[[torch.Tensor], torch.Tensor] | None
    macs: float = 0.0


@dataclass(frozen=True)
class _Run:
    """A stage's units: segments in order, the last segment (its output's layout), the head (None: the segment's
    output are the logits), the partner head run here (None: none), and :meth:`forward` compiled (None: eager)."""

    fns: tuple[Callable[[Any], Any], ...]
    last: Any
    head: Callable[[torch.Tensor], torch.Tensor] | None
    partner: _Partner | None = None
    compiled: Callable[[Any], tuple[Any, torch.Tensor, torch.Tensor | None]] | None = None  # forward, compiled

    def forward(self, state: Any) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        """The stage on ``state``: its output state (dense), this exit's logits and, with a partner head run here,
        the partner's logits on the state at the partner's position."""
        fns, theirs = self.fns, None
        if self.partner is not None:
            at = self.partner
            for fn in fns[:at.after]:
                state = fn(state)
            theirs = at.segment.stream(state)
            theirs = theirs if at.head is None else at.head(theirs)
            fns = fns[at.after:]
        for fn in fns:
            state = fn(state)
        logits = state if self.head is None else self.head(self.last.stream(state))
        return self.last.out_spec.dense(state), logits, theirs


def compiled_stage(run: _Run) -> Callable[[Any], tuple[Any, torch.Tensor, torch.Tensor | None]]:
    """``run.forward`` as one ``torch.compile`` graph (its segments, head and partner head together: at batch 1 each
    compiled call costs its guards, so one call a stage instead of one a module). The function gets a code object of
    its own: dynamo keeps its graphs per code object, at most ``recompile_limit`` of them, and every stage of every
    configuration would otherwise share ``_Run.forward``'s."""
    f = _Run.forward
    own = types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    return torch.compile(types.MethodType(own, run), dynamic=True)


class TorchStages:
    """:class:`contract.schedule.Backend` of an ``ExitModel`` on ``device``; ``compile``: each stage runs as one
    ``torch.compile`` graph (:func:`compiled_stage`)."""

    def __init__(self, model: ExitModel, unit_macs: dict[str, float], device: torch.device, *, compile: bool = False):
        self.model, self.macs, self.device, self.compile = model, unit_macs, device, compile

    def stages(self, cfg: ExitConfig) -> list[Stage]:
        """The saver up to its last enabled exit (if one is enabled), then the backbone to its final exit; a stage
        ends at each enabled exit. Segments after the saver's last enabled exit never run. A stage whose rule reads
        its partner gets the partner's top-k from the stage before when that is the partner (``hand_on``), else runs
        the partner's head itself; ExitsError for a partner on the saver chain of a backbone exit."""
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
            out[first] = restarted(out[first])
        for k in range(1, len(out)):
            rule = out[k].rule
            if out[k].threshold is not None and reads_partner(rule) and out[k].units.partner is None:
                out[k - 1] = replace(out[k - 1], hand_on=max(out[k - 1].hand_on, rule.k))
        return out

    def _chain(self, cfg: ExitConfig, segments: list, at: dict, *, final: bool) -> list[Stage]:
        out, run, cost, enabled = [], [], 0.0, set(cfg.exits)
        before = None   # the segment whose output a stage's input state is
        for seg in segments:
            run.append(seg)
            cost += self.macs[seg.name]
            if final and seg is segments[-1]:  # the final exit: everyone still here leaves
                out.append(Stage(len(self.model.exits) - 1, None, final_rule(cfg.rule), cost,
                                 units=self._run(run, None)))
                break
            stop = at.get(seg.position)
            if stop is None:
                continue
            j, index, threshold, spec = stop
            head = None
            if spec.key is not None:
                head = self.model.heads[spec.key]
                cost += self.macs[f"head:{spec.name}"]
            rule, partner = cfg.rule_at(j), None
            if reads_partner(rule) and (p := partner_exit(self.model.exits, index)) not in enabled:
                partner = self._partner(spec, p, segments, run, before)
                cost += partner.macs
            out.append(Stage(index, threshold, rule, cost, units=self._run(run, head, partner)))
            before, run, cost = seg, [], 0.0
            if not final and seg.position >= max(at):
                break
        return out

    def _partner(self, spec: ExitSpec, p: int | None, segments: list, run: list, before: Any) -> _Partner:
        """The partner head ``p`` of the exit ``spec`` run inside its stage (``run``: its segments so far)."""
        if p is None:
            raise ExitsError(f"exit {spec.name!r}: its rule reads a partner exit, and it has none")
        theirs = self.model.exits[p]
        seg = next((s for s in segments if s.position == theirs.position), None)
        if seg is None:
            raise ExitsError(f"exit {spec.name!r}: its partner {theirs.name!r} stands on another chain (the saver); "
                             f"enable {theirs.name!r} too, or choose a rule that does not read a partner")
        after = run.index(seg) + 1 if seg in run else 0
        if after == 0 and seg is not before:
            raise ExitsError(f"exit {spec.name!r}: its partner {theirs.name!r} is not on this stage's path")
        if theirs.key is None:
            return _Partner(after, seg, None)
        return _Partner(after, seg, self.model.heads[theirs.key], self.macs[f"head:{theirs.name}"])

    def _run(self, segments: list, head: nn.Module | None, partner: _Partner | None = None) -> _Run:
        run = _Run(tuple(segments), segments[-1], head, partner)
        return replace(run, compiled=compiled_stage(run)) if self.compile else run

    # -- contract.schedule.Backend ----------------------------------------------------------
    def advance(self, stage: Stage, state: Any, partner: Payload | None) -> tuple[Any, np.ndarray, np.ndarray,
                                                                                   Payload | None]:
        run: _Run = stage.units
        state, logits, theirs = (run.compiled or run.forward)(state)
        return state, *scored(logits, stage.rule, partner=partner, partner_logits=theirs, hand_on=stage.hand_on)

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
