"""``BundleRouter``: run an exported bundle with onnxruntime and numpy, exiting early.

The router runs the bundle's graphs in order. After each segment that ends at an enabled exit it runs that
exit's head graph on the samples still in the batch, scores the logits (``bundle.scores``: as the search and
``exits.ExitRuntime`` do) and compares ``score > threshold`` (float32 against ``float32_cut``); the samples that
pass leave, the rest are index-selected (compaction) and go on. With a saver exit enabled the saver chain runs
first on the whole batch and the samples it keeps start the backbone from the input. Each sample is charged the
MACs of every graph it went through (the manifest's, from the cache's unit table), so the mean over samples is
the relative cost the search predicted when the table's ``objective`` is ``macs``; under another cost model
(``contract/costs/``) the predicted costs and ``select(budget)`` are in that model's units, which the MAC
accounting does not measure.

The configurations are the bundle's table (its ``exitconfig/1`` document): switch with :meth:`set_config` or
:meth:`select` without reloading; ``None`` is the base model (its own graph when exported, else the backbone
segments in a row), run through the same code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from contract.costs import DEFAULT_COST_MODEL, CostModelError, get_cost_model

from .errors import BundleError
from .manifest import GraphInfo, Manifest, read_manifest, sha256_bytes
from .scores import SCORE_KINDS, exit_scores, float32_cut, score_range

EXITCONFIG_FORMAT = "exitconfig/1"

__all__ = ["RouteExit", "RouteConfig", "RouteResult", "BundleRouter", "open_bundle"]


@dataclass(frozen=True)
class RouteExit:
    """An enabled early exit: ``index`` in the cache's exit list, the head graph (None: the chain's own
    logits), its chain and threshold; ``cut`` is :func:`float32_cut` of ``threshold``."""

    name: str
    index: int
    position: int
    threshold: float
    head: str | None
    chain: str
    cut: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cut", float32_cut(self.threshold))


@dataclass(frozen=True)
class RouteConfig:
    """One configuration of the table: id, enabled exits (execution order), score kind and the numbers the
    cache predicted (``predicted["search"|"holdout"] = {accuracy, relative_cost, ...}``)."""

    id: str
    exits: tuple[RouteExit, ...]
    score: str = "max_prob"
    predicted: dict[str, Any] = field(default_factory=dict, compare=False)

    def relative_cost(self, split: str = "search") -> float | None:
        return (self.predicted.get(split) or {}).get("relative_cost")

    def accuracy(self, split: str = "search") -> float | None:
        return (self.predicted.get(split) or {}).get("accuracy")


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
    def concat(cls, parts: Sequence["RouteResult"], base_macs: float) -> "RouteResult":
        if not parts:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32),
                       np.empty(0, np.float64), base_macs)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("predictions", "exits", "scores", "macs")),
                   base_macs)


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


_Plan = list[tuple[list[_Graph], dict[int, RouteExit], int | None]]
"""Per chain run: its graphs, enabled exits by position, the last position to run (None: to the final exit)."""


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
        self.base_config = RouteConfig("base", ())
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

    def _resolve(self, entry: Any, i: int, default_score: str) -> RouteConfig:
        served = self.manifest.exits
        cid = str(entry.get("id", i)) if isinstance(entry, Mapping) else str(i)
        items = entry.get("exits") if isinstance(entry, Mapping) else None
        if not isinstance(items, list):
            raise BundleError(f"config {cid}: 'exits' must be a list")
        scores = {d.get("score", default_score) for d in items if isinstance(d, Mapping)} or {default_score}
        if len(scores) > 1 or not scores <= set(SCORE_KINDS):
            raise BundleError(f"config {cid}: score kinds {sorted(map(str, scores))}: one of {list(SCORE_KINDS)} expected")
        score = scores.pop()
        lo, hi = score_range(score, self.manifest.num_classes)
        enabled: list[RouteExit] = []
        for d in items:
            if not isinstance(d, Mapping) or not {"name", "threshold"} <= set(d):
                raise BundleError(f"config {cid}: exit entry {d!r} lacks name or threshold")
            e = served.get(d["name"])
            if e is None:
                raise BundleError(f"config {cid}: exit {d['name']!r} is not in this bundle (it serves "
                                  f"{sorted(served)[:4]}{'...' if len(served) > 4 else ''}); export the bundle "
                                  "with this configuration")
            t = d["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not lo <= float(t) <= hi:
                raise BundleError(f"config {cid}: exit {e.name!r}: threshold {t!r} outside [{lo:g}, {hi:g}] "
                                  f"for score {score!r}")
            if enabled and e.position <= enabled[-1].position:  # positions count the saver's first
                raise BundleError(f"config {cid}: exit {e.name!r}: enabled exits must be in execution order, "
                                  "one per position")
            enabled.append(RouteExit(e.name, e.index, e.position, float(t), e.graph, e.chain))
        predicted = {k: dict(entry[k]) for k in ("search", "holdout") if isinstance(entry.get(k), Mapping)}
        return RouteConfig(cid, tuple(enabled), score, predicted)

    def _plan(self, cfg: RouteConfig) -> _Plan:
        chains = self.manifest.chains
        if not cfg.exits and self.manifest.base is not None:
            return [([self.graphs[self.manifest.base]], {}, None)]
        plan: _Plan = []
        saver = [e for e in cfg.exits if e.chain == "saver"]
        if saver:
            plan.append(([self.graphs[n] for n in chains["saver"]], {e.position: e for e in saver}, saver[-1].position))
        plan.append(([self.graphs[n] for n in chains["backbone"]],
                     {e.position: e for e in cfg.exits if e.chain == "backbone"}, None))
        return plan

    # -- choosing -------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.configs]

    def set_config(self, config: str | int | RouteConfig | None) -> RouteConfig:
        """Switch to a configuration of the table by id or index (None: the base model); no reloading."""
        self.config = self._lookup(config)
        return self.config

    def _lookup(self, config: str | int | RouteConfig | None) -> RouteConfig:
        if config is None:
            return self.base_config
        if isinstance(config, RouteConfig):
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

    def select(self, budget: float, *, split: str = "search") -> RouteConfig:
        """Switch to the most accurate configuration whose predicted relative cost on ``split`` (in the units of
        the table's ``objective``) is <= ``budget`` (ties: the cheaper); return it."""
        fits = [c for c in self.configs if c.relative_cost(split) is not None and c.relative_cost(split) <= budget]
        if not fits:
            raise BundleError(f"no configuration within relative cost {budget} on {split}")
        return self.set_config(max(fits, key=lambda c: (c.accuracy(split) or 0.0, -c.relative_cost(split))))

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
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x: Any, config: str | int | RouteConfig | None = None) -> RouteResult:
        return self.run(x, config)

    def run(self, x: Any, config: str | int | RouteConfig | None = None) -> RouteResult:
        """Run a batch ``(n, C, H, W)`` under the current configuration (or ``config``, without switching)."""
        cfg = self.config if config is None else self._lookup(config)
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
                    s, p = exit_scores(h, cfg.score)
                    self._leave(out, idx, slice(None), p, s, self.final_exit, spent)
                    return out
                e = at.get(g.info.position)
                if e is not None:
                    logits = h
                    if e.head is not None:
                        head = self.graphs[e.head]
                        logits = head(h)
                        spent += head.info.macs
                    s, p = exit_scores(logits, cfg.score)
                    leave = s > e.cut
                    if leave.all():
                        self._leave(out, idx, slice(None), p, s, e.index, spent)
                        return out
                    if leave.any():
                        self._leave(out, idx, leave, p, s, e.index, spent)
                        keep = ~leave
                        idx = np.flatnonzero(keep) if idx is None else idx[keep]
                        h = h[keep]
                if stop is not None and g.info.position >= stop:
                    break
        raise AssertionError("unreachable: the backbone chain ends at the final graph")

    def session_calls(self, config: str | int | RouteConfig | None = None) -> int:
        """onnxruntime session calls one batch makes under ``config`` (default: the current one) when some of its
        rows reach the final exit; the base graph makes 1."""
        calls = 0
        for graphs, at, stop in self._plans[id(self.config if config is None else self._lookup(config))]:
            for g in graphs:
                e = at.get(g.info.position)
                calls += 1 + (e is not None and e.head is not None)
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

    def run_batches(self, batches: Iterable[Any], config: str | int | RouteConfig | None = None) -> RouteResult:
        """Run an iterable of input batches and concatenate the results."""
        return RouteResult.concat([self.run(b, config) for b in batches], self.base_macs)


def open_bundle(path: str | Path, *, configs: Mapping[str, Any] | str | Path | None = None, threads: int | None = 1,
                providers: Sequence[Any] | None = None) -> BundleRouter:
    """Load a bundle folder (``python -m exits.export_bundle``) into a :class:`BundleRouter`."""
    return BundleRouter(path, configs=configs, threads=threads, providers=providers)
