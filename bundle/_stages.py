"""The onnxruntime side of the compaction loop (:mod:`contract.schedule`): a configuration cut into stages of the
bundle's graphs, each run on a numpy batch and scored through the router's one rule adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contract import ExitConfig, get_rule, rule_inputs_from_logits
from contract.schedule import Stage

from .manifest import Manifest

__all__ = ["exit_scores", "OnnxStages"]


def exit_scores(logits: np.ndarray, rule: Any) -> tuple[np.ndarray, np.ndarray]:
    """Score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 of logits ``(b, n_classes)`` under ``rule``."""
    rule = get_rule(rule) if isinstance(rule, str) else rule
    inputs, pred = rule_inputs_from_logits(rule, logits)
    return rule.score(inputs), pred


@dataclass(frozen=True)
class _Run:
    """A stage's graphs in order and its head graph (None: the last graph's output are the logits)."""

    graphs: tuple[Callable[[np.ndarray], np.ndarray], ...]
    head: Callable[[np.ndarray], np.ndarray] | None

    @property
    def session_calls(self) -> int:
        return len(self.graphs) + (self.head is not None)


class OnnxStages:
    """:class:`contract.schedule.Backend` of a bundle's graphs (``graphs``: name -> callable with ``.info``)."""

    def __init__(self, manifest: Manifest, graphs: Mapping[str, Any]):
        self.manifest, self.graphs = manifest, graphs

    def stages(self, cfg: ExitConfig) -> list[Stage]:
        """The base graph for the base model when exported; else the saver chain up to its last enabled exit (if
        one is enabled), then the backbone chain to its final graph; a stage ends at each enabled exit."""
        man = self.manifest
        final = man.final_exit[1]
        if not cfg.exits and man.base is not None:
            g = self.graphs[man.base]
            return [Stage(final, None, cfg.rule, g.info.macs, units=_Run((g,), None))]
        by_index = {e.index: e for e in man.exits.values()}
        stops = [
            (j, by_index[i], t)
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
            s = out[first]
            out[first] = Stage(s.exit, s.threshold, s.rule, s.cost, True, s.units)
        return out

    def _chain(
        self, cfg: ExitConfig, names: Sequence[str], at: dict, *, final: int | None
    ) -> list[Stage]:
        out, run, cost = [], [], 0.0
        for name in names:
            g = self.graphs[name]
            run.append(g)
            cost += g.info.macs
            if g.info.final and final is not None:  # everyone still here leaves at the final exit
                out.append(Stage(final, None, cfg.rule, cost, units=_Run(tuple(run), None)))
                break
            stop = at.get(g.info.position)
            if stop is None:
                continue
            j, e, threshold = stop
            head = None if e.graph is None else self.graphs[e.graph]
            cost += 0.0 if head is None else head.info.macs
            out.append(
                Stage(e.index, threshold, cfg.rule_at(j), cost, units=_Run(tuple(run), head))
            )
            run, cost = [], 0.0
            if final is None and g.info.position >= max(at):
                break
        return out

    # -- contract.schedule.Backend ----------------------------------------------------------
    def advance(self, stage: Stage, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        run: _Run = stage.units
        for g in run.graphs:
            state = g(state)
        s, p = exit_scores(state if run.head is None else run.head(state), stage.rule)
        return state, s, p

    def take(self, stage: Stage | None, state: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return state[rows]

    def concat(self, stage: Stage | None, states: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(states)
