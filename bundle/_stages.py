"""The onnxruntime side of the compaction loop (:mod:`contract.schedule`): a configuration cut into stages of the
bundle's graphs, each run on a numpy batch and scored through the router's one rule adapter.

A graph that outputs its logits' top-k scores (``GraphInfo.scored``) is scored from them
(:func:`contract.rule_inputs_from_topk`); a fused exit's head runs inside the stage's last graph. Older bundles'
logits are scored in numpy (:func:`contract.rule_inputs_from_logits`), as is a rule reading more classes than the
graph gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from contract import (
    ExitConfig,
    ExitRule,
    get_rule,
    reads_partner,
    rule_inputs_from_logits,
    rule_inputs_from_topk,
    topk_of_logits,
)
from contract.schedule import Payload, Stage, final_rule, restarted

from .errors import BundleError
from .manifest import Manifest, ServedExit

__all__ = ["exit_scores", "scores_of", "OnnxStages"]


def exit_scores(
    logits: np.ndarray, rule: Any, *, partner: Payload | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 of logits ``(b, n_classes)`` under ``rule``;
    ``partner``: the partner exit's top-k ``(ids, probs)`` (:func:`contract.topk_of_logits`), for a rule reading it."""
    rule = get_rule(rule) if isinstance(rule, str) else rule
    inputs, pred = rule_inputs_from_logits(rule, logits, partner)
    return rule.score(inputs), pred


@dataclass(frozen=True)
class _Partner:
    """A partner head graph run inside a stage (its exit not enabled), on the state after the stage's first
    ``after`` graphs (0: its input state); ``head`` None: that state is the partner's logits; ``macs``: the head's,
    per row."""

    after: int
    head: Callable[[np.ndarray], np.ndarray] | None
    macs: float = 0.0


def scores_of(
    rule: ExitRule, out: Sequence[np.ndarray], partner: Payload | None, hand_on: int
) -> tuple[np.ndarray, np.ndarray, Payload | None]:
    """Scores, top-1 predictions and the top-``hand_on`` handed on, from a graph's ``(logits,)`` or ``(logits,
    probs, ids)``: from the graph's top-k when it holds enough classes, else in numpy from the logits."""
    if len(out) == 3 and max(rule.k, hand_on) <= out[1].shape[1]:
        logits, probs, ids = out
        inputs, pred = rule_inputs_from_topk(rule, probs, ids, logits, partner)
        return rule.score(inputs), pred, (ids[:, :hand_on], probs[:, :hand_on]) if hand_on else None
    s, p = exit_scores(out[0], rule, partner=partner)
    return s, p, topk_of_logits(out[0], hand_on) if hand_on else None


@dataclass(frozen=True)
class _Run:
    """A stage's graphs in order, its head graph (None: the last graph's output are the logits, or with ``fused``
    the last graph runs the head too) and the partner head run here (None: none)."""

    graphs: tuple[Any, ...]
    head: Any | None
    partner: _Partner | None = None
    fused: bool = False

    @property
    def session_calls(self) -> int:
        theirs = self.partner is not None and self.partner.head is not None
        return len(self.graphs) + (self.head is not None) + theirs


class OnnxStages:
    """:class:`contract.schedule.Backend` of a bundle's graphs (``graphs``: name -> callable with ``.info``)."""

    def __init__(self, manifest: Manifest, graphs: Mapping[str, Any]):
        self.manifest, self.graphs = manifest, graphs
        self.by_index = {e.index: e for e in manifest.exits.values()}

    def stages(self, cfg: ExitConfig) -> list[Stage]:
        """The base graph for the base model when exported; else the saver chain up to its last enabled exit (if
        one is enabled), then the backbone chain to its final graph; a stage ends at each enabled exit. A stage whose
        rule reads its partner gets the partner's top-k from the stage before when that is the partner
        (``hand_on``), else runs the partner's head graph itself."""
        man = self.manifest
        final = man.final_exit[1]
        if not cfg.exits and man.base is not None:
            g = self.graphs[man.base]
            return [Stage(final, None, final_rule(cfg.rule), g.info.macs, units=_Run((g,), None))]
        off = [e.name for e in man.exits.values() if e.fused and e.index not in cfg.exits]
        if off:
            raise BundleError(
                f"exit {off[0]!r} runs inside its segment graph in this bundle (every configuration it was "
                "exported for enables it); this configuration does not enable it: export a bundle for its table"
            )
        stops = [
            (j, self.by_index[i], t)
            for j, (i, t) in enumerate(zip(cfg.exits, cfg.thresholds, strict=True))
        ]
        out: list[Stage] = []
        saver = {e.position: (j, e, t) for j, e, t in stops if e.chain == "saver"}
        if saver:
            out += self._chain(cfg, man.chains["saver"], saver, final=None)
        first = len(out)
        out += self._chain(
            cfg,
            man.chains["backbone"],
            {e.position: (j, e, t) for j, e, t in stops if e.chain == "backbone"},
            final=final,
        )
        if first:
            out[first] = restarted(out[first])
        for k in range(1, len(out)):
            rule = out[k].rule
            if (
                out[k].threshold is not None
                and reads_partner(rule)
                and out[k].units.partner is None
            ):
                out[k - 1] = replace(out[k - 1], hand_on=max(out[k - 1].hand_on, rule.k))
        return out

    def _chain(
        self, cfg: ExitConfig, names: Sequence[str], at: dict, *, final: int | None
    ) -> list[Stage]:
        out, run, cost, enabled = [], [], 0.0, set(cfg.exits)
        before = None  # the position a stage's input state stands at
        for name in names:
            g = self.graphs[name]
            run.append(g)
            cost += g.info.macs
            if g.info.final and final is not None:  # everyone still here leaves at the final exit
                out.append(
                    Stage(final, None, final_rule(cfg.rule), cost, units=_Run(tuple(run), None))
                )
                break
            stop = at.get(g.info.position)
            if stop is None:
                continue
            j, e, threshold = stop
            head = None if e.graph is None or e.fused else self.graphs[e.graph]
            cost += 0.0 if head is None else head.info.macs
            rule, partner = cfg.rule_at(j), None
            if reads_partner(rule) and self._partner_of(e).index not in enabled:
                partner = self._partner(e, run, before)
                cost += partner.macs
            out.append(
                Stage(
                    e.index, threshold, rule, cost, units=_Run(tuple(run), head, partner, e.fused)
                )
            )
            before, run, cost = g.info.position, [], 0.0
            if final is None and g.info.position >= max(at):
                break
        return out

    def _partner_of(self, e: ServedExit) -> ServedExit:
        if e.partner is None:
            raise BundleError(
                f"exit {e.name!r}: its rule reads a partner exit, and this bundle serves none"
            )
        return self.manifest.exits[e.partner]

    def _partner(self, e: ServedExit, run: list, before: int | None) -> _Partner:
        """The partner head of ``e`` run inside its stage (``run``: its graphs so far)."""
        theirs = self._partner_of(e)
        ends = [g.info.position for g in run]
        if theirs.chain != e.chain or (theirs.position not in ends and theirs.position != before):
            raise BundleError(
                f"exit {e.name!r}: its partner {theirs.name!r} is not on this stage's path (another chain); "
                f"enable {theirs.name!r} too, or choose a rule that does not read a partner"
            )
        after = ends.index(theirs.position) + 1 if theirs.position in ends else 0
        if theirs.graph is None:
            return _Partner(after, None)
        head = self.graphs[theirs.graph]
        return _Partner(after, head, float(head.info.macs))

    # -- contract.schedule.Backend ----------------------------------------------------------
    def advance(
        self, stage: Stage, state: np.ndarray, partner: Payload | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Payload | None]:
        run: _Run = stage.units
        graphs = run.graphs
        if run.partner is not None:
            at = run.partner
            for g in graphs[: at.after]:
                state = g(state)
            partner = topk_of_logits(state if at.head is None else at.head(state), stage.rule.k)
            graphs = graphs[at.after :]
        for g in graphs[:-1]:
            state = g(state)
        out: Sequence[np.ndarray]
        if run.fused:  # the last graph runs the exit's head: (state, logits, probs, ids)
            state, *out = graphs[-1].outputs(state)
        else:
            if graphs:
                last = graphs[-1]
                out = (
                    last.outputs(state) if run.head is None and last.info.scored else [last(state)]
                )
                state = out[0]
            if run.head is not None:
                out = run.head.outputs(state) if run.head.info.scored else [run.head(state)]
            elif not graphs:
                out = [state]
        s, p, hand = scores_of(stage.rule, out, partner, stage.hand_on)
        return state, s, p, hand

    def take(self, stage: Stage | None, state: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return state[rows]

    def concat(self, stage: Stage | None, states: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(states)
