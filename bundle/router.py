"""``BundleRouter``: run an exported bundle with onnxruntime and numpy, exiting early.

The router runs the bundle's graphs in order. After each segment that ends at an enabled exit it runs that
exit's head graph on the samples still in the batch and scores the logits with the configuration's exit rule
(:mod:`contract.rules`) through one thin adapter, :func:`contract.rule_inputs_from_logits` (what the rule reads, as
the cache stores it), deciding with the rule's one leave test (``score > threshold`` as float64 reads it); the
samples that pass leave, the rest are index-selected (compaction) and go on. With a saver exit enabled the saver
chain runs first on the whole batch and the samples it keeps start the backbone from the input. Each sample is
charged the MACs of every graph it went through (the manifest's, from the cache's unit table), so the mean over
samples is the relative cost the search predicted when the table's ``objective`` is ``macs``; under another cost model
(``contract/costs/``) the predicted costs and ``select(budget)`` are in that model's units, which the MAC
accounting does not measure.

The configurations are the bundle's table (its ``exitconfig/1`` document): switch with :meth:`set_config` or
:meth:`select` without reloading; ``None`` is the base model (its own graph when exported, else the backbone
segments in a row), run through the same code.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import (
    ContractError,
    ExitConfig,
    ExitRef,
    ExitRule,
    ExitTable,
    get_rule,
    rule_inputs_from_logits,
)
from contract.costs import DEFAULT_COST_MODEL, CostModelError, get_cost_model

from .errors import BundleError
from .manifest import GraphInfo, Manifest, read_manifest, sha256_bytes
from .preprocess import make_transform

EXITCONFIG_FORMAT = "exitconfig/1"

__all__ = ["RouteResult", "BundleRouter", "open_bundle", "exit_scores"]


def exit_scores(logits: np.ndarray, rule: ExitRule | str) -> tuple[np.ndarray, np.ndarray]:
    """Score ``(b,)`` float32 and top-1 prediction ``(b,)`` int64 of logits ``(b, n_classes)`` under ``rule``."""
    rule = get_rule(rule) if isinstance(rule, str) else rule
    inputs, pred = rule_inputs_from_logits(rule, logits)
    return rule.score(inputs), pred


@dataclass
class RouteResult:
    """Per sample (input order): ``predictions`` (n,) int64, ``exits`` (n,) int64 (the cache's exit index),
    ``scores`` (n,) float32 at the exit it left, ``macs`` (n,) float64 spent on it; ``base_macs`` per sample."""

    predictions: np.ndarray
    exits: np.ndarray
    scores: np.ndarray
    macs: np.ndarray
    base_macs: float

    @property
    def relative_cost(self) -> float:
        """Mean MACs per sample / base MACs."""
        return float(self.macs.mean()) / self.base_macs if len(self.macs) else 0.0

    @classmethod
    def concat(cls, parts: Sequence[RouteResult], base_macs: float) -> RouteResult:
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32),
                       np.empty(0, np.float64), base_macs)
        def joined(field: str) -> np.ndarray:
            return np.concatenate([getattr(p, field) for p in parts])

        return cls(joined("predictions"), joined("exits"), joined("scores"), joined("macs"), base_macs)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("running a bundle needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


class _Graph:
    """An onnxruntime session of one graph of the bundle."""

    def __init__(self, info: GraphInfo, data: bytes, options: Any, providers: Sequence[Any]):
        ort = _onnxruntime()
        self.info = info
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise BundleError(f"graph {info.name!r} ({info.file}): onnxruntime cannot load it "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        self.input = self.session.get_inputs()[0].name
        self.output = [self.session.get_outputs()[0].name]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output, {self.input: x})[0]


_Plan = list[tuple[list[_Graph], dict[int, tuple[int, float, str | None]], int | None]]
"""Per chain run: its graphs, enabled exits by position (cache exit index, threshold, head graph), the last position
to run (None: to the final exit)."""


class BundleRouter:
    """Runs a bundle under one configuration of its table, dropping samples from the batch as they exit.

    ``threads`` sets onnxruntime's intra-op threads per session (None: its default, every core);
    ``providers`` its execution providers (default CPU). Every graph file is checked against the manifest's
    SHA-256 before it is loaded. ``configs`` replaces the manifest's table by another ``exitconfig/1`` document
    (or file) searched on the same cache, whose exits the bundle serves. A table of one configuration starts on
    it, a longer one on the base model.
    """

    def __init__(self, path: str | Path, *, configs: Mapping[str, Any] | str | Path | None = None,
                 threads: int | None = 1, providers: Sequence[Any] | None = None):
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        doc = self.manifest.exitconfig if configs is None else self._outside_table(configs)
        self.objective = self._objective(doc)
        self.threads = threads
        options = self._session_options(threads)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.graphs = {name: _Graph(info, self._read_graph(info), options, providers)
                       for name, info in self.manifest.graphs.items()}
        self.base_macs = self.manifest.base_macs
        self.final_exit = self.manifest.final_exit[1]
        self.base_config = ExitConfig(id="base")
        self.configs = [self._resolve(entry, i, doc.get("score", "max_prob")) for i, entry in enumerate(doc["configs"])]
        self._plans = {id(c): self._plan(c) for c in (self.base_config, *self.configs)}
        self.config = self.configs[0] if len(self.configs) == 1 else self.base_config

    # -- loading --------------------------------------------------------------------------------
    @staticmethod
    def _session_options(threads: int | None) -> Any:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise BundleError(f"threads must be >= 1 (got {threads})")
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The router holds one session per graph, each with its own intra-op pool; spinning workers of idle
        # sessions would starve the one running (on 2 cores the bundle ran 1.3-7x slower than its base graph).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    def _read_graph(self, info: GraphInfo) -> bytes:
        path = self.path / info.file
        try:
            data = path.read_bytes()
        except OSError:
            raise BundleError(f"{path}: graph {info.name!r} is missing from the bundle") from None
        if sha256_bytes(data) != info.sha256:
            raise BundleError(f"{path}: graph {info.name!r} does not match the manifest's fingerprint "
                              f"({info.sha256[:19]}...); the file was altered after export: export the bundle again")
        return data

    def _outside_table(self, configs: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
        """An ``exitconfig/1`` document (or file) searched on the bundle's cache for the bundle's model."""
        where = "configs"
        if not isinstance(configs, Mapping):
            where = str(configs)
            try:
                configs = json.loads(Path(configs).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise BundleError(f"{where}: not a readable exitconfig/1 file ({exc})") from None
        if not isinstance(configs, Mapping) or configs.get("format") != EXITCONFIG_FORMAT \
                or not isinstance(configs.get("configs"), list):
            raise BundleError(f"{where}: not an {EXITCONFIG_FORMAT} document with a list of configs")
        for what, ours in (("cache", self.manifest.doc["cache"]), ("model", self.manifest.doc["model"])):
            theirs = (configs.get(what) or {}).get("fingerprint")
            if theirs != ours.get("fingerprint"):
                raise BundleError(f"{where}: searched for {what} {str(theirs)[:19]}..., not this bundle's "
                                  f"({str(ours.get('fingerprint'))[:19]}...)")
        return configs

    @staticmethod
    def _objective(doc: Mapping[str, Any]) -> str:
        """The table's cost model (the units of its predicted costs), refused when this version does not know it."""
        name = doc.get("objective", DEFAULT_COST_MODEL)
        try:
            get_cost_model(name)
        except CostModelError as exc:
            raise BundleError(f"exitconfig: objective: {exc}") from None
        return name

    def _resolve(self, entry: Any, i: int, default_score: str) -> ExitConfig:
        """One entry of the table, validated once (:meth:`contract.ExitConfig.from_json`) against the served exits."""
        served = self.manifest.exits
        cid = str(entry.get("id", i)) if isinstance(entry, Mapping) else str(i)
        items = entry.get("exits") if isinstance(entry, Mapping) else None
        if not isinstance(items, list):
            raise BundleError(f"config {cid}: 'exits' must be a list")
        final_name, final = self.manifest.final_exit
        refs = (*(ExitRef(e.index, e.name, e.position, e.head) for e in served.values()),
                ExitRef(final, final_name, self.graphs[self.manifest.chains['backbone'][-1]].info.position, None))
        where = (f"in this bundle (it serves {sorted(served)[:4]}{'...' if len(served) > 4 else ''}); export the "
                 "bundle with this configuration")
        table = ExitTable(refs, final, self.manifest.num_classes, where)
        predicted = {k: dict(entry[k]) for k in ("search", "holdout") if isinstance(entry.get(k), Mapping)}
        try:
            return ExitConfig.from_json(items, table, default_score, id=cid, predicted=predicted)
        except ContractError as exc:
            raise BundleError(f"config {cid}: {exc}") from None

    def _plan(self, cfg: ExitConfig) -> _Plan:
        chains = self.manifest.chains
        if not cfg.exits and self.manifest.base is not None:
            return [([self.graphs[self.manifest.base]], {}, None)]
        by_index = {e.index: e for e in self.manifest.exits.values()}
        stops = [(by_index[i], t) for i, t in zip(cfg.exits, cfg.thresholds, strict=True)]
        plan: _Plan = []
        saver = [(e, t) for e, t in stops if e.chain == "saver"]
        if saver:
            plan.append(([self.graphs[n] for n in chains["saver"]],
                         {e.position: (e.index, t, e.graph) for e, t in saver}, saver[-1][0].position))
        plan.append(([self.graphs[n] for n in chains["backbone"]],
                     {e.position: (e.index, t, e.graph) for e, t in stops if e.chain == "backbone"}, None))
        return plan

    # -- choosing -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.configs]

    def set_config(self, config: str | int | ExitConfig | None) -> ExitConfig:
        """Switch to a configuration of the table by id or index (None: the base model); no reloading."""
        self.config = self._lookup(config)
        return self.config

    def _lookup(self, config: str | int | ExitConfig | None) -> ExitConfig:
        if config is None:
            return self.base_config
        if isinstance(config, ExitConfig):
            if id(config) not in self._plans:
                raise BundleError(f"configuration {config.id!r} is not one of this router's")
            return config
        if isinstance(config, int) and not isinstance(config, bool):
            if not -len(self.configs) <= config < len(self.configs):
                raise BundleError(f"config index {config} out of range (the table holds {len(self.configs)})")
            return self.configs[config]
        match = [c for c in self.configs if c.id == config]
        if not match:
            raise BundleError(f"no configuration with id {config!r}; ids: {self.ids[:5]}"
                              f"{'...' if len(self.configs) > 5 else ''}")
        return match[0]

    def select(self, budget: float, *, split: str = "search") -> ExitConfig:
        """Switch to the most accurate configuration whose predicted relative cost on ``split`` (in the units of
        the table's ``objective``) is <= ``budget`` (ties: the cheaper); return it."""
        fits = [(c, cost) for c in self.configs if (cost := c.relative_cost(split)) is not None and cost <= budget]
        if not fits:
            raise BundleError(f"no configuration within relative cost {budget} on {split}")
        return self.set_config(max(fits, key=lambda fit: (fit[0].accuracy(split) or 0.0, -fit[1]))[0])

    # -- running --------------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """``x`` as a C-contiguous float32 array ``(n, *input_shape)``, or :class:`BundleError` saying what is wrong."""
        x = np.asarray(x)
        want = self.manifest.input_shape
        if not np.issubdtype(x.dtype, np.floating):
            raise BundleError(f"input dtype {x.dtype}: the bundle takes float images, normalised with the "
                              f"manifest's input mean and std")
        if x.ndim != len(want) + 1:
            raise BundleError(f"input shape {tuple(x.shape)}: expected (batch, {', '.join(map(str, want))}); "
                              "add the batch axis for one image")
        if x.shape[1] != want[0]:
            raise BundleError(f"input has {x.shape[1]} channels, the bundle's model takes {want[0]} "
                              f"(shape (batch, {', '.join(map(str, want))}))")
        if tuple(x.shape[1:]) != want:
            raise BundleError(f"input shape {tuple(x.shape)}: expected (batch, {', '.join(map(str, want))})")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x)
        if bad.any():  # a graph predicts something for NaN; exits.runtime refuses them in the same words
            rows = np.flatnonzero(bad.reshape(len(x), -1).any(1))
            raise BundleError(f"input: {int(bad.sum())} of {bad.size} values are NaN or infinite (first in row "
                              f"{int(rows[0])} of {len(x)}); pass finite, normalised images")
        return x

    def __call__(self, x: Any, config: str | int | ExitConfig | None = None) -> RouteResult:
        return self.run(x, config)

    def run(self, x: Any, config: str | int | ExitConfig | None = None) -> RouteResult:
        """Run a batch ``(n, C, H, W)`` under the current configuration (or ``config``, without switching)."""
        cfg = self.config if config is None else self._lookup(config)
        rule = cfg.rule
        rules = {e: cfg.rule_at(j) for j, e in enumerate(cfg.exits)}   # each enabled exit's own rule
        x = self.check_input(x)
        n = len(x)
        out = RouteResult(np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float32),
                          np.empty(n, np.float64), self.base_macs)
        if n == 0:
            return out
        idx = None  # the input rows still in the batch; None: all of them
        spent = 0.0
        for graphs, at, stop in self._plans[id(cfg)]:
            h = x if idx is None else x[idx]
            for g in graphs:
                h = g(h)
                spent += g.info.macs
                if g.info.final:  # everyone still here leaves at the final exit
                    s, p = exit_scores(h, rule)
                    self._leave(out, idx, slice(None), p, s, self.final_exit, spent)
                    return out
                stop_here = at.get(g.info.position)
                if stop_here is not None:
                    index, threshold, head_graph = stop_here
                    logits = h
                    if head_graph is not None:
                        head = self.graphs[head_graph]
                        logits = head(h)
                        spent += head.info.macs
                    s, p = exit_scores(logits, rules[index])
                    leave = rules[index].leaves(s, threshold)
                    if leave.all():
                        self._leave(out, idx, slice(None), p, s, index, spent)
                        return out
                    if leave.any():
                        self._leave(out, idx, leave, p, s, index, spent)
                        keep = ~leave
                        idx = np.flatnonzero(keep) if idx is None else idx[keep]
                        h = h[keep]
                if stop is not None and g.info.position >= stop:
                    break
        raise AssertionError("unreachable: the backbone chain ends at the final graph")

    def session_calls(self, config: str | int | ExitConfig | None = None) -> int:
        """onnxruntime session calls one batch makes under ``config`` (default: the current one) when some of its
        rows reach the final exit; the base graph makes 1."""
        calls = 0
        for graphs, at, stop in self._plans[id(self.config if config is None else self._lookup(config))]:
            for g in graphs:
                stop_here = at.get(g.info.position)
                calls += 1 + (stop_here is not None and stop_here[2] is not None)   # (index, threshold, head graph)
                if stop is not None and g.info.position >= stop:
                    break
        return calls

    @staticmethod
    def _leave(out: RouteResult, idx: np.ndarray | None, rows: Any, p: np.ndarray, s: np.ndarray, exit_index: int,
               spent: float) -> None:
        """Record the samples ``rows`` of the current batch (input rows ``idx[rows]``) as leaving at ``exit_index``."""
        where = rows if idx is None else idx[rows]
        out.predictions[where] = p[rows]
        out.scores[where] = s[rows]
        out.exits[where] = exit_index
        out.macs[where] = spent

    def run_batches(self, batches: Iterable[Any], config: str | int | ExitConfig | None = None) -> RouteResult:
        """Run an iterable of input batches and concatenate the results."""
        return RouteResult.concat([self.run(b, config) for b in batches], self.base_macs)

    def preprocess(self, images: Any) -> np.ndarray:
        """Pictures (PIL images or uint8 arrays, or a list of them) to the normalised float32 batch ``(n, C, H, W)``
        the graphs take, as the manifest records (``bundle.preprocess``, numpy and PIL only)."""
        if getattr(self, "_preprocess", None) is None:
            self._preprocess = make_transform(self.manifest)
        return self._preprocess(images)


def open_bundle(path: str | Path, *, configs: Mapping[str, Any] | str | Path | None = None, threads: int | None = 1,
                providers: Sequence[Any] | None = None) -> BundleRouter:
    """Load a bundle folder (``python -m exits.export_bundle``) into a :class:`BundleRouter`."""
    return BundleRouter(path, configs=configs, threads=threads, providers=providers)
