"""``ExitConfig``: which early exits are enabled, with which thresholds and score kind."""
from __future__ import annotations

from dataclasses import dataclass

from ._validation import SearchError
from .export_schema import exit_entries_problems
from .scores import check_kind, score_range

__all__ = ["ExitConfig"]


@dataclass(frozen=True)
class ExitConfig:
    """Enabled early exits (cache exit indices, execution order, at most one per position) and thresholds.

    A sample leaves at the first enabled exit whose score is strictly greater than its threshold,
    else at the final exit. The empty config is the base model.
    """

    exits: tuple[int, ...] = ()
    thresholds: tuple[float, ...] = ()
    score: str = "max_prob"

    def __post_init__(self):
        object.__setattr__(self, "exits", tuple(int(e) for e in self.exits))
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if len(self.exits) != len(self.thresholds):
            raise SearchError(f"ExitConfig: {len(self.exits)} exits but {len(self.thresholds)} thresholds")

    def check(self, cache) -> "ExitConfig":
        """Raise SearchError unless the config fits ``cache`` (exits exist, order, one per position, ranges)."""
        check_kind(self.score)
        exits = cache.exits
        lo, hi = score_range(self.score, cache.n_classes)
        last_pos = None
        for e, t in zip(self.exits, self.thresholds):
            if not 0 <= e < len(exits) - 1:
                raise SearchError(f"exit index {e} is not an early exit of this cache (0..{len(exits) - 2})")
            pos = exits[e].position
            if last_pos is not None and pos <= last_pos:
                raise SearchError(f"exit {exits[e].name!r}: enabled exits must be in execution order, "
                                  "one per position")
            last_pos = pos
            if not lo <= t <= hi:
                raise SearchError(f"exit {exits[e].name!r}: threshold {t} outside [{lo}, {hi}] for score {self.score!r}")
        return self

    def to_json(self, cache) -> list[dict]:
        """The ``exits`` list of an ``exitconfig/1`` entry."""
        return [{"name": cache.exits[e].name, "position": cache.exits[e].position, "head": cache.exits[e].head,
                 "score": self.score, "threshold": t} for e, t in zip(self.exits, self.thresholds)]

    @classmethod
    def from_json(cls, entries: list[dict], cache, default_score: str = "max_prob") -> "ExitConfig":
        """Inverse of :meth:`to_json`; exits are looked up by name and position (exact types checked:
        ``exit_entries_problems``); an entry without ``score`` uses ``default_score`` (the document's
        ``score``, as the runtime reads it). A problem reads ``exits[j].field: problem``."""
        problems = exit_entries_problems(entries, default_score=default_score)
        if problems:
            raise SearchError(problems[0])
        by_name = {e.name: i for i, e in enumerate(cache.exits)}
        exits, thresholds, scores = [], [], set()
        for j, d in enumerate(entries):
            name, pos = d["name"], d["position"]
            if name not in by_name or cache.exits[by_name[name]].position != pos:
                raise SearchError(f"exits[{j}]: exit {name!r} at position {pos} is not in this cache")
            exits.append(by_name[name])
            thresholds.append(d["threshold"])
            scores.add(d.get("score", default_score))
        try:
            return cls(tuple(exits), tuple(thresholds), scores.pop() if scores else default_score).check(cache)
        except SearchError as exc:
            raise SearchError(f"exits: {exc}") from None
