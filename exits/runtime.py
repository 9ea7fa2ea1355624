"""``ExitRuntime``: run an exported exit configuration on the real model, really exiting early.

The model runs segment by segment. At each enabled exit the head runs on the samples still in the
batch, the configuration's exit rule (:mod:`contract.rules`) scores it through one thin adapter,
:func:`exit_scores`: what the rule reads crosses to the CPU as the cache stores it (the top-k of torch's
softmax of the float32 logits, as the dump writes them, and/or the logits rounded to float16; a few numbers
per row, never more than the rule reads), the rule scores it in numpy exactly as the search does and
decides with its one leave test (``score > threshold`` as float64 reads it); the samples that pass leave the batch (compaction: the survivors are index-selected from every
batch-carrying tensor of the segment's output state, ``Segment.select``; constants are kept) and the rest
go on.
Disabled heads never run. With a saver exit enabled the saver runs first on the whole batch; the
samples it does not release start the backbone from the input.

MACs are accounted per sample from the unit table (the cache's, else ``exits.macs.unit_macs``): every
unit that ran on a sample adds its MACs, so the mean over samples is the relative cost the search predicted
when the export's ``objective`` is ``macs``. Under another cost model (``contract/costs/``; ``objective``) the
predicted costs and ``select(budget=)`` are in that model's units, which the MAC accounting does not measure.

A configuration comes from an ``exitconfig/1`` export (one entry, or a table to switch between with
:meth:`ExitRuntime.set_config` / :meth:`ExitRuntime.select`). It is refused (``RuntimeConfigError``)
when it was searched for another backbone, on another cache (or one dumped from other heads), names
exits the model lacks, or holds a threshold outside its score's range. With the cache at hand every number
and certificate of the table is recomputed from it first (``search.verify``), so ``select`` only ever trusts
reproduced figures; without it a ``search.SearchWarning`` says they are unverified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from contract import ContractError, ExitConfig, ExitRule, ExitTable, RuleInputs, get_rule
from contract.costs import DEFAULT_COST_MODEL, CostModelError, get_cost_model
from search import SearchError
from search.export import EXPORT_FORMAT, read_export
from search.units import check_drop_points, points_to_fraction

from .errors import ExitsError
from .model import ExitModel, ExitSpec
from .preprocess import InputNormalisationError, Preprocess, check_normalised

__all__ = ["RuntimeConfigError", "RunResult", "ExitRuntime", "EXPORT_FORMAT", "read_config_file", "exit_scores",
           "InputNormalisationError"]


def _check_finite(x: torch.Tensor) -> None:
    """ExitsError when ``x`` holds NaN or infinite values (a model predicts something for them; the bundle router
    refuses them in the same words)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(len(x), -1).any(1).nonzero()
        raise ExitsError(f"input: {int(bad.sum())} of {bad.numel()} values are NaN or infinite (first in row "
                         f"{int(rows[0])} of {len(x)}); pass finite, normalised images")


class RuntimeConfigError(ExitsError):
    """A configuration that does not belong to this model or cache, or that is malformed."""


@dataclass(frozen=True)
class _ModelExits:
    """A model's exits as :meth:`contract.ExitTable.of` reads them."""

    exits: list[ExitSpec]
    n_classes: int


def _short(fp: str | None) -> str:
    return "none" if not fp else fp[:19] + "..."


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Load an ``exitconfig/1`` JSON file (``search.export.read_export``) as a RuntimeConfigError on failure."""
    try:
        return read_export(path)
    except SearchError as exc:
        raise RuntimeConfigError(str(exc)) from None


def _config_document(configs: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """An ``exitconfig/1`` file read and checked, or a document given as a mapping: its format and a list of
    configuration objects (each entry is checked as it is resolved)."""
    if isinstance(configs, (str, Path)):
        return read_config_file(configs)
    doc = dict(configs)
    if doc.get("format") != EXPORT_FORMAT:
        raise RuntimeConfigError(f"configs: format: {doc.get('format')!r} is not {EXPORT_FORMAT!r}")
    if not isinstance(doc.get("configs"), list) or not all(isinstance(c, Mapping) for c in doc["configs"]):
        raise RuntimeConfigError("configs: 'configs' must be a list of configuration objects")
    try:
        get_cost_model(doc.get("objective", DEFAULT_COST_MODEL))
    except CostModelError as exc:
        raise RuntimeConfigError(f"configs: objective: {exc}") from None
    return doc


def exit_scores(logits: torch.Tensor, rule: ExitRule | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch adapter of the exit rules: score ``(b,)`` float32 (on the logits' device) and top-1 prediction
    ``(b,)`` int64 of logits ``(b, n_classes)``.

    Only what ``rule`` reads crosses to the CPU, as the cache stores it: the top-k of torch's softmax of the
    float32 logits (as the dump writes them) and/or the logits rounded to float16; the rule scores them in numpy.
    """
    rule = get_rule(rule) if isinstance(rule, str) else rule
    z = logits.float()
    top = torch.softmax(z, dim=1).topk(max(1, min(rule.k, z.shape[1])), dim=1, largest=True, sorted=True)
    probs = top.values.cpu().numpy() if "topk_probs" in rule.reads else None
    z16 = z.half().cpu().numpy() if "logits" in rule.reads else None
    s = rule.score(RuleInputs(topk_probs=probs, logits=z16))
    return torch.from_numpy(s).to(z.device), top.indices[:, 0]


def on_saver(model: ExitModel, spec: ExitSpec) -> bool:
    """Whether the exit ``spec`` stands on the model's saver (before the backbone's first segment)."""
    return model.saver is not None and spec.position < model.segments[0].position


@dataclass
class RunResult:
    """Per sample (input order): ``predictions`` (n,) int64, ``exits`` (n,) int64 (index into
    ``model.exits`` = the cache's exit index), ``scores`` (n,) float32 at the exit it left (the final
    exit's score for samples that reached it), ``macs`` (n,) float64 MACs spent on it. ``base_macs`` is
    the base model's cost per sample."""

    predictions: torch.Tensor
    exits: torch.Tensor
    scores: torch.Tensor
    macs: torch.Tensor
    base_macs: float

    @property
    def relative_cost(self) -> float:
        """Mean MACs per sample / base MACs."""
        return float(self.macs.mean()) / self.base_macs if len(self.macs) else 0.0


_Left = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, int, float]
_Stop = tuple[int, float, ExitSpec]
"""An enabled exit in a run: its index in ``model.exits``, threshold and spec."""
"""Rows that left the batch together (input rows; None: all), their predictions, scores, exit, MACs each."""


class ExitRuntime:
    """Runs ``model`` under one configuration of a table, dropping samples from the batch as they exit.

    ``configs``: an ``exitconfig/1`` document or its path (None: only the base model). The export's
    cache is checked against ``cache`` (a reader or a folder: same fingerprint, dumped from this
    backbone, heads and saver) or, without one, against ``cache_fingerprint``; one of the two is needed
    when ``configs`` is given. ``unit_macs`` defaults to the cache's unit table, else is counted on the
    model. ``compile`` wraps every segment and head in ``torch.compile(dynamic=True)``; ``channels_last``
    stores convolution weights and image batches channels-last (the base model too: often much faster on
    CPU, e.g. for a max-pool stem; the last bits of a convolution may differ from a contiguous dump).

    ``data_config``: the preprocessing the heads were trained with (``from_checkpoint`` takes the checkpoint's;
    default the model's timm config, which may differ); ``rt.transform(pictures)`` applies it
    (``exits.preprocess``). ``check_inputs``: refuse a batch whose statistics do not fit that normalisation
    (``InputNormalisationError``, :func:`exits.preprocess.check_normalised`).
    """

    def __init__(self, model: ExitModel, configs: Mapping[str, Any] | str | Path | None = None, *,
                 cache: Any = None, cache_fingerprint: str | None = None,
                 unit_macs: Mapping[str, float] | None = None, device: torch.device | str | None = None,
                 compile: bool = False, channels_last: bool = False,
                 data_config: Mapping[str, Any] | None = None, check_inputs: bool = True):
        self.model = model
        self.data_config = dict(data_config if data_config is not None else model.data_config)
        self.check_inputs = check_inputs
        self._transform: Preprocess | None = None
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(self.device, memory_format=self.memory_format).eval()
        if cache is not None and not hasattr(cache, "fingerprint"):
            from data_cache import open_cache

            cache = open_cache(cache)
        self.cache = cache
        self.unit_macs = self._unit_macs(unit_macs)
        final = model.exits[-1]
        self.base_macs = float(sum(self.unit_macs[u] for u in final.units))
        self._modules: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self._compile = compile
        self.base_config = ExitConfig(id="base")
        self.configs: list[ExitConfig] = []
        self.doc: dict[str, Any] | None = None
        self.verification = None   # search.verify.Verification: the table's numbers recomputed from ``cache``
        self.objective = DEFAULT_COST_MODEL  # the export's cost model: units of predicted costs, select(budget=)
        if configs is not None:
            doc = _config_document(configs)
            self._check_provenance(doc, cache, cache_fingerprint)
            self.doc = doc
            self.objective = doc.get("objective", DEFAULT_COST_MODEL)
            self.configs = [self._resolve(entry, i, doc.get("score", "max_prob"))
                            for i, entry in enumerate(doc["configs"])]
            from .validation_inputs import verify_table

            source = str(configs) if isinstance(configs, (str, Path)) else "configs"
            self.verification = verify_table(doc, cache, source=source)
        self.config = self.configs[0] if len(self.configs) == 1 else self.base_config

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Mapping[str, Any], configs: Mapping[str, Any] | str | Path | None,
                        *, backbone_weights: str | Path | None = None, **kwargs: Any) -> "ExitRuntime":
        """Rebuild the model a head checkpoint was saved from (``exits.checkpoints``) and wrap it, with the
        checkpoint's data config (the preprocessing its heads were trained with)."""
        from .checkpoints import model_from_checkpoint, read_checkpoint

        ckpt = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
        kwargs.setdefault("data_config", ckpt.get("data_config"))
        return cls(model_from_checkpoint(ckpt, backbone_weights=backbone_weights), configs, **kwargs)

    @property
    def transform(self) -> Preprocess:
        """Pictures (PIL images, uint8 arrays, or lists of them) to a normalised batch ``(n, C, H, W)``, as
        :attr:`data_config` says (``exits.data.eval_transform``)."""
        if self._transform is None:
            self._transform = Preprocess(self.data_config)
        return self._transform

    # -- checks ---------------------------------------------------------------------------------
    def _unit_macs(self, given: Mapping[str, float] | None) -> dict[str, float]:
        names = [u.name for u in self.model.units]
        if given is None and self.cache is not None:
            given = {u.name: u.macs for u in self.cache.units}
        if given is None:
            from .macs import unit_macs

            given = unit_macs(self.model)
        missing = [n for n in names if n not in given]
        if missing:
            raise RuntimeConfigError(f"the unit table has no MACs for units {missing[:3]} of this model; "
                                     "is it another model's cache?")
        return {n: float(given[n]) for n in names}

    def _check_provenance(self, doc: Mapping[str, Any], cache: Any, cache_fingerprint: str | None) -> None:
        model = self.model
        want = (doc.get("model") or {}).get("fingerprint")
        fp = model.fingerprint()
        if want != fp:
            raise RuntimeConfigError(
                f"configuration is for model {(doc.get('model') or {}).get('name')!r} ({_short(want)}), not for this "
                f"{model.model_name} ({_short(fp)}); search a cache dumped from these weights")
        cache_fp = (doc.get("cache") or {}).get("fingerprint")
        if cache is not None:
            if cache.fingerprint != cache_fp:
                raise RuntimeConfigError(f"configuration was searched on cache {_short(cache_fp)}, not on the "
                                         f"given cache ({_short(cache.fingerprint)})")
            prov = cache.meta.provenance
            checks = [("backbone", (prov.get("model") or {}).get("fingerprint"), fp),
                      ("heads", (prov.get("heads") or {}).get("fingerprint"), model.head_fingerprint())]
            if prov.get("saver") is not None or model.saver is not None:
                checks.append(("saver", (prov.get("saver") or {}).get("fingerprint"), model.saver_fingerprint()))
            for what, dumped, here in checks:
                if dumped != here:
                    raise RuntimeConfigError(f"the cache was dumped from other {what} weights ({_short(dumped)}) "
                                             f"than this model's ({_short(here)})")
        elif cache_fingerprint is not None:
            if cache_fingerprint != cache_fp:
                raise RuntimeConfigError(f"configuration was searched on cache {_short(cache_fp)}, not on the "
                                         f"expected cache ({_short(cache_fingerprint)})")
        else:
            raise RuntimeConfigError("the configuration's cache cannot be checked: pass the cache it was searched on "
                                     "(cache=) or that cache's fingerprint (cache_fingerprint=)")

    def _resolve(self, entry: Mapping[str, Any], i: int, default_score: str) -> ExitConfig:
        """One entry of the table, validated once (:meth:`contract.ExitConfig.from_json`) against the model's exits."""
        model = self.model
        cid = str(entry.get("id", i))
        where = (f"an exit of this model ({model.model_name} has {len(model.exits)} exits, e.g. "
                 f"{[e.name for e in model.exits[:3]]})")
        table = ExitTable.of(_ModelExits(model.exits, model.num_classes), where)
        predicted = {k: dict(entry[k]) for k in ("search", "holdout", "certificate") if isinstance(entry.get(k), Mapping)}
        try:
            return ExitConfig.from_json(entry.get("exits", []), table, default_score, id=cid, predicted=predicted)
        except ContractError as exc:
            raise RuntimeConfigError(f"config {cid}: {exc}") from None

    # -- choosing -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.configs]

    def set_config(self, config: str | int | ExitConfig | None) -> ExitConfig:
        """Switch to a configuration of the table by id or index (None: the base model); no reloading."""
        if config is None:
            self.config = self.base_config
        elif isinstance(config, ExitConfig):
            self.config = config
        elif isinstance(config, int):
            if not -len(self.configs) <= config < len(self.configs):
                raise RuntimeConfigError(f"config index {config} out of range (the table holds {len(self.configs)})")
            self.config = self.configs[config]
        else:
            match = [c for c in self.configs if c.id == config]
            if not match:
                raise RuntimeConfigError(f"no configuration with id {config!r}; ids: {self.ids[:5]}"
                                         f"{'...' if len(self.configs) > 5 else ''}")
            self.config = match[0]
        return self.config

    def select(self, budget: float | None = None, *, max_drop: float | None = None,
               split: str = "search") -> ExitConfig:
        """Switch to a configuration of the table and return it.

        ``budget``: the most accurate whose predicted relative cost on ``split`` (in the units of the export's
        ``objective``) is <= ``budget`` (ties: the cheaper). ``max_drop``: the cheapest (predicted on ``split``)
        whose certificate (``search.pareto``) certifies an accuracy drop <= ``max_drop`` points of top-1 accuracy
        (0.5 = half a point; a value that looks like a fraction or a percentage is refused, ``search.units``).
        """
        if (budget is None) == (max_drop is None):
            raise RuntimeConfigError("select needs exactly one of budget= and max_drop=")
        if max_drop is not None:
            try:
                points = check_drop_points(max_drop)
            except SearchError as exc:
                raise RuntimeConfigError(str(exc)) from None
            return self.set_config(self._certified_within(points, split))
        fits = [c for c in self.configs if c.relative_cost(split) is not None and c.relative_cost(split) <= budget]
        if not fits:
            costs = [c.relative_cost(split) for c in self.configs if c.relative_cost(split) is not None]
            raise RuntimeConfigError(f"no configuration within relative cost {budget} on {split}; the cheapest costs "
                                     f"{min(costs) if costs else 'nothing known'}")
        best = max(fits, key=lambda c: (c.accuracy(split) or 0.0, -c.relative_cost(split)))
        return self.set_config(best)

    def _certified_within(self, points: float, split: str) -> ExitConfig:
        """The cheapest configuration certified within ``points`` (certificates store fractions)."""
        certified = {c.id: (c.predicted.get("certificate") or {}).get("certified_drop") for c in self.configs}
        limit = points_to_fraction(points)
        fits = [c for c in self.configs if certified[c.id] is not None and certified[c.id] <= limit + 1e-12]
        if not fits:
            known = sorted(round(100 * v, 6) for v in certified.values() if v is not None)
            raise RuntimeConfigError(f"no configuration of the table is certified within a drop of {points:g} points; "
                                     + (f"certified drops (points): {known}" if known else
                                        "it holds no drop certificate (search.pareto --max-drop without --uncertified)"))
        return min(fits, key=lambda c: (c.relative_cost(split) if c.relative_cost(split) is not None else 1.0,
                                        -(c.accuracy(split) or 0.0)))

    # -- running --------------------------------------------------------------------------------
    def _fn(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        fn = self._modules.get(id(module))
        if fn is None:
            fn = torch.compile(module, dynamic=True) if self._compile else module
            self._modules[id(module)] = fn
        return fn

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        _check_finite(x)
        if self.check_inputs and x.ndim == 4:
            check_normalised(x, self.data_config)
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain base model (the backbone's own forward, no heads): logits ``(b, n_classes)``."""
        with torch.inference_mode():
            return self._fn(self.model.backbone)(self._input(x))

    def __call__(self, x: torch.Tensor, config: str | int | ExitConfig | None = None) -> RunResult:
        return self.run(x, config)

    def run(self, x: torch.Tensor, config: str | int | ExitConfig | None = None) -> RunResult:
        """Run a batch ``(b, C, H, W)`` under the current configuration (or ``config``, without switching)."""
        cfg = self.config if config is None else self._lookup(config)
        model, macs, rule = self.model, self.unit_macs, cfg.rule
        rules = {e: cfg.rule_at(j) for j, e in enumerate(cfg.exits)}   # each enabled exit's own rule
        x = self._input(x)
        n = x.shape[0]
        left: list[_Left] = []
        with torch.inference_mode():
            idx: torch.Tensor | None = None  # the input rows still in the batch; None: all of them
            spent = 0.0
            for segments, at, stop in self._chains(cfg):
                h = x if idx is None else x.index_select(0, idx)
                for seg in segments:
                    h = self._fn(seg)(h)
                    spent += macs[seg.name]
                    if stop is None and seg is segments[-1]:  # the final exit: everyone still here leaves
                        s, p = exit_scores(h, rule)
                        left.append((idx, p, s, len(model.exits) - 1, spent))
                        return self._collect(left, n)
                    stop_here = at.get(seg.position)
                    if stop_here is None:
                        continue
                    index, threshold, e = stop_here
                    if e.key is not None:
                        logits = self._fn(model.heads[e.key])(seg.stream(h))
                        spent += macs[f"head:{e.name}"]
                    else:
                        logits = h
                    s, p = exit_scores(logits, rules[index])
                    leave = torch.from_numpy(rules[index].leaves(s.cpu().numpy(), threshold)).to(s.device)
                    rows = torch.nonzero(leave).squeeze(1)
                    if rows.numel() == leave.shape[0]:
                        left.append((idx, p, s, index, spent))
                        return self._collect(left, n)
                    if rows.numel():
                        left.append((rows if idx is None else idx.index_select(0, rows), p.index_select(0, rows),
                                     s.index_select(0, rows), index, spent))
                        keep = torch.nonzero(~leave).squeeze(1)
                        idx = keep if idx is None else idx.index_select(0, keep)
                        h = seg.select(h, keep)
                    if stop is not None and seg.position >= stop:
                        break
        raise AssertionError("unreachable: the backbone chain ends at the final exit")

    def _chains(self, cfg: ExitConfig) -> list[tuple[list, dict[int, _Stop], int | None]]:
        """(segments, enabled exits by position, last position to run) per model run: the saver up to its
        last enabled exit (if any is enabled), then the backbone to its final exit."""
        model = self.model
        stops = [(e, t, model.exits[e]) for e, t in zip(cfg.exits, cfg.thresholds)]
        saver = [s for s in stops if on_saver(model, s[2])]
        chains = []
        if saver:
            chains.append((model.saver_segments, {s[2].position: s for s in saver}, saver[-1][2].position))
        chains.append((model.segments, {s[2].position: s for s in stops if not on_saver(model, s[2])}, None))
        return chains

    def _collect(self, left: list[_Left], n: int) -> RunResult:
        """One ``RunResult`` in input order from the groups of rows that left together."""
        counts = [n if rows is None else rows.numel() for rows, *_ in left]
        exits = torch.repeat_interleave(torch.tensor([g[3] for g in left]), torch.tensor(counts))
        cost = torch.repeat_interleave(torch.tensor([g[4] for g in left], dtype=torch.float64), torch.tensor(counts))
        preds = torch.cat([g[1] for g in left]).cpu()
        scores = torch.cat([g[2] for g in left]).float().cpu()
        if len(left) == 1 and left[0][0] is None:
            return RunResult(preds, exits, scores, cost, self.base_macs)
        rows = torch.cat([torch.arange(n, device=self.device) if r is None else r for r, *_ in left]).cpu()
        order = torch.empty_like(rows)
        order[rows] = torch.arange(n)
        return RunResult(preds[order], exits[order], scores[order], cost[order], self.base_macs)

    def _lookup(self, config: str | int | ExitConfig) -> ExitConfig:
        current = self.config
        try:
            return self.set_config(config)
        finally:
            self.config = current

    def run_loader(self, batches: Iterable[Any], config: str | int | ExitConfig | None = None) -> RunResult:
        """Run an iterable of input batches (or ``(x, ...)`` tuples) and concatenate the results."""
        parts = [self.run(b[0] if isinstance(b, (tuple, list)) else b, config) for b in batches]
        if not parts:
            empty = torch.empty(0, dtype=torch.int64)
            return RunResult(empty, empty, torch.empty(0), torch.empty(0, dtype=torch.float64), self.base_macs)
        return RunResult(torch.cat([p.predictions for p in parts]), torch.cat([p.exits for p in parts]),
                         torch.cat([p.scores for p in parts]), torch.cat([p.macs for p in parts]), self.base_macs)
