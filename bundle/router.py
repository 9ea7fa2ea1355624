"""``BundleRouter``: run an exported bundle with onnxruntime and numpy, exiting early.

The router runs the bundle's graphs in order. After each segment that ends at an enabled exit it runs that
exit's head graph on the samples still in the batch and scores the logits with the configuration's exit rule
(:mod:`contract.rules`) through one thin adapter, :func:`contract.rule_inputs_from_logits` (what the rule reads,
as the cache stores it), deciding with the rule's one leave test (``score > threshold`` as float64 reads it);
the samples that pass leave, the rest are index-selected (compaction) and go on. A rule reading its partner exit
(``agree``, ``ensemble``; the manifest names each served exit's partner) gets the partner's top-k from the stage
before when the partner is enabled, else the partner's head graph runs in the deciding stage (charged there). The
loop is :mod:`contract.schedule`, ``ExitRuntime``'s too (``bundle/_stages.py`` runs the graphs for it); with
``run_batches(..., rebatch=True)`` the survivors of several batches are gathered so that every graph runs full
batches. With a saver exit enabled the saver chain runs first on the whole batch and the samples it keeps start
the backbone from the input. Each sample is charged the MACs of every graph it went through (the manifest's,
from the cache's unit table), so the mean over samples is the relative cost the search predicted when the
table's ``objective`` is ``macs``; under another cost model (``contract/costs/``) the predicted costs and
``select(budget)`` are in that model's units, which the MAC accounting does not measure.

The configurations are the bundle's table (its ``exitconfig/1`` document): switch with :meth:`set_config` or
:meth:`select` without reloading; ``None`` is the base model (its own graph when exported, else the backbone
segments in a row), run through the same code.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import ContractError, ExitConfig, ExitRef, ExitTable, float32_cut
from contract.costs import DEFAULT_COST_MODEL, CostModelError, get_cost_model
from contract.schedule import Routed, Stage, check_batching, route, route_one, route_parallel
from contract.select import select_config

from ._stages import OnnxStages, exit_scores
from .errors import BundleError
from .manifest import GraphInfo, Manifest, read_manifest, sha256_bytes
from .preprocess import make_transform

EXITCONFIG_FORMAT = "exitconfig/1"

__all__ = ["RouteResult", "BundleRouter", "open_bundle", "exit_scores"]


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


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("running a bundle needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


@functools.cache  # once per process
def _register_shared_cpu_arena(ort: Any) -> None:
    """Register the CPU arena that sessions created with ``session.use_env_allocators`` share."""
    info = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(info, None)


def _finite_sum(x: np.ndarray) -> bool:
    """Whether the sum of ``x`` is finite (then every value is; an overflowing sum sends the caller to the full
    test, without a warning)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(x.sum()))


class _Graph:
    """An onnxruntime session of one graph of the bundle."""

    def __init__(self, info: GraphInfo, data: bytes, options: Any, providers: Sequence[Any]):
        ort = _onnxruntime()
        self.info = info
        try:
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=list(providers)
            )
        except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
            raise BundleError(
                f"graph {info.name!r} ({info.file}): onnxruntime cannot load it "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        self.input = self.session.get_inputs()[0].name
        names = tuple(o.name for o in self.session.get_outputs())
        if len(info.outputs) > 1 and names != info.outputs:
            raise BundleError(
                f"graph {info.name!r} ({info.file}): outputs {list(names)}, the manifest says "
                f"{list(info.outputs)}"
            )
        self.output, self.names = [names[0]], list(names)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The first output: what the next graph reads (or the logits)."""
        return self.session.run(self.output, {self.input: x})[0]

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output, in the manifest's order (``GraphInfo.outputs``)."""
        return self.session.run(self.names, {self.input: x})


class BundleRouter:
    """Runs a bundle under one configuration of its table, dropping samples from the batch as they exit.

    ``threads`` sets onnxruntime's intra-op threads per session (None: its default, every core);
    ``providers`` its execution providers (default CPU). Every graph file is checked against the manifest's
    SHA-256 before it is loaded. ``configs`` replaces the manifest's table by another ``exitconfig/1`` document
    (or file) searched on the same cache, whose exits the bundle serves. A table of one configuration starts on
    it, a longer one on the base model. ``one_graph``: whether one-image calls use the bundle's batch-1 graph when
    it has one (None: when it ran a full-depth image faster than the graphs one by one, timed here at load:
    onnxruntime optimises the body of an ``If`` less, and on a ResNet-18 the batch-1 graph ran 20% slower).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        configs: Mapping[str, Any] | str | Path | None = None,
        threads: int | None = 1,
        providers: Sequence[Any] | None = None,
        one_graph: bool | None = None,
    ):
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        doc = self.manifest.exitconfig if configs is None else self._outside_table(configs)
        self.objective = self._objective(doc)
        self.threads = threads
        options = self._session_options(threads)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.graphs = {
            name: _Graph(info, self._read_graph(info), options, providers)
            for name, info in self.manifest.graphs.items()
        }
        self.base_macs = self.manifest.base_macs
        self.final_exit = self.manifest.final_exit[1]
        self.base_config = ExitConfig(id="base")
        self._table = self._exit_table()
        self.configs = [
            self._resolve(entry, i, doc.get("score", "max_prob"))
            for i, entry in enumerate(doc["configs"])
        ]
        self._backend = OnnxStages(self.manifest, self.graphs)
        self._stages = {}
        for c in (self.base_config, *self.configs):
            try:
                self._stages[id(c)] = (c, self._backend.stages(c))
            except BundleError as exc:
                raise BundleError(f"config {c.id}: {exc}") from None
        self.config = self.configs[0] if len(self.configs) == 1 else self.base_config
        man = self.manifest
        self._chain = None if man.chained is None else self.graphs[man.chained]
        self._chain_exits = tuple(e.index for e in man.fused_exits)
        self._chain_shape = (1, *man.input_shape)
        self._one_call: dict[int, tuple[ExitConfig, Any]] = {}
        if self._chain is not None and not (
            self._chain_is_faster() if one_graph is None else one_graph
        ):
            self._chain = None
        self.one_graph = self._chain is not None
        """Whether one-image calls run as the batch-1 graph (for the configurations it serves)."""

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
        # One CPU arena for every session: a stage's graph then works in the memory the graph before it just
        # freed, warm in cache, as the layers of one graph do (each session's own arena left the bundle's chain
        # of graphs 10-20% slower than its base graph on the same rows).
        _register_shared_cpu_arena(ort)
        options.add_session_config_entry("session.use_env_allocators", "1")
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
            raise BundleError(
                f"{path}: graph {info.name!r} does not match the manifest's fingerprint "
                f"({info.sha256[:19]}...); the file was altered after export: export the bundle again"
            )
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
        if (
            not isinstance(configs, Mapping)
            or configs.get("format") != EXITCONFIG_FORMAT
            or not isinstance(configs.get("configs"), list)
        ):
            raise BundleError(
                f"{where}: not an {EXITCONFIG_FORMAT} document with a list of configs"
            )
        for what, ours in (
            ("cache", self.manifest.doc["cache"]),
            ("model", self.manifest.doc["model"]),
        ):
            theirs = (configs.get(what) or {}).get("fingerprint")
            if theirs != ours.get("fingerprint"):
                raise BundleError(
                    f"{where}: searched for {what} {str(theirs)[:19]}..., not this bundle's "
                    f"({str(ours.get('fingerprint'))[:19]}...)"
                )
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

    def _exit_table(self) -> ExitTable:
        """The exits this bundle serves, as configurations are checked against them, with the partners it serves."""
        served = self.manifest.exits
        final_name, final = self.manifest.final_exit
        refs = (
            *(ExitRef(e.index, e.name, e.position, e.head) for e in served.values()),
            ExitRef(
                final,
                final_name,
                self.graphs[self.manifest.chains["backbone"][-1]].info.position,
                None,
            ),
        )
        where = (
            f"in this bundle (it serves {sorted(served)[:4]}{'...' if len(served) > 4 else ''}); export the "
            "bundle with this configuration"
        )
        partners = {
            e.index: served[e.partner].index for e in served.values() if e.partner is not None
        }
        return ExitTable(refs, final, self.manifest.num_classes, where, partners)

    def _resolve(self, entry: Any, i: int, default_score: str) -> ExitConfig:
        """One entry of the table, validated once (:meth:`contract.ExitConfig.from_json`) against the served exits."""
        cid = str(entry.get("id", i)) if isinstance(entry, Mapping) else str(i)
        items = entry.get("exits") if isinstance(entry, Mapping) else None
        if not isinstance(items, list):
            raise BundleError(f"config {cid}: 'exits' must be a list")
        predicted = {
            k: dict(entry[k])
            for k in ("search", "holdout", "certificate")
            if isinstance(entry.get(k), Mapping)
        }
        try:
            return ExitConfig.from_json(
                items, self._table, default_score, id=cid, predicted=predicted
            )
        except ContractError as exc:
            raise BundleError(f"config {cid}: {exc}") from None

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
            if id(config) not in self._stages:
                try:
                    config.check(self._table)
                except ContractError as exc:
                    raise BundleError(f"config {config.id or '(unnamed)'}: {exc}") from None
            return config
        if isinstance(config, int) and not isinstance(config, bool):
            if not -len(self.configs) <= config < len(self.configs):
                raise BundleError(
                    f"config index {config} out of range (the table holds {len(self.configs)})"
                )
            return self.configs[config]
        match = [c for c in self.configs if c.id == config]
        if not match:
            raise BundleError(
                f"no configuration with id {config!r}; ids: {self.ids[:5]}"
                f"{'...' if len(self.configs) > 5 else ''}"
            )
        return match[0]

    def select(
        self, budget: float | None = None, *, max_drop: float | None = None, split: str = "search"
    ) -> ExitConfig:
        """Switch to a configuration of the table and return it (:func:`contract.select.select_config`, as
        ``ExitRuntime.select``): ``budget``, the most accurate whose predicted relative cost on ``split`` (in the
        units of the table's ``objective``) is <= ``budget`` (ties: the cheaper); ``max_drop``, the cheapest whose
        certificate certifies an accuracy drop <= ``max_drop`` points. The bundle holds no cache: the figures are
        the exported ones, sealed by the manifest's fingerprint, not recomputed."""
        try:
            return self.set_config(
                select_config(self.configs, budget, max_drop=max_drop, split=split)
            )
        except ContractError as exc:
            raise BundleError(str(exc)) from None

    # -- running --------------------------------------------------------------------------------
    def check_input(self, x: Any) -> np.ndarray:
        """``x`` as a C-contiguous float32 array ``(n, *input_shape)``, or :class:`BundleError` saying what is wrong."""
        want = self.manifest.input_shape
        if (  # the common case in few steps (batch-1 serving checks every request)
            type(x) is np.ndarray
            and x.dtype == np.float32
            and x.shape[1:] == want
            and x.flags.c_contiguous
            and _finite_sum(x)
        ):
            return x
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise BundleError(
                f"input dtype {x.dtype}: the bundle takes float images, normalised with the "
                f"manifest's input mean and std"
            )
        if x.ndim != len(want) + 1:
            raise BundleError(
                f"input shape {tuple(x.shape)}: expected (batch, {', '.join(map(str, want))}); "
                "add the batch axis for one image"
            )
        if x.shape[1] != want[0]:
            raise BundleError(
                f"input has {x.shape[1]} channels, the bundle's model takes {want[0]} "
                f"(shape (batch, {', '.join(map(str, want))}))"
            )
        if tuple(x.shape[1:]) != want:
            raise BundleError(
                f"input shape {tuple(x.shape)}: expected (batch, {', '.join(map(str, want))})"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x)
        if (
            bad.any()
        ):  # a graph predicts something for NaN; exits.runtime refuses them in the same words
            rows = np.flatnonzero(bad.reshape(len(x), -1).any(1))
            raise BundleError(
                f"input: {int(bad.sum())} of {bad.size} values are NaN or infinite (first in row "
                f"{int(rows[0])} of {len(x)}); pass finite, normalised images"
            )
        return x

    def __call__(self, x: Any, config: str | int | ExitConfig | None = None) -> RouteResult:
        return self.run(x, config)

    def run(self, x: Any, config: str | int | ExitConfig | None = None) -> RouteResult:
        """Run a batch ``(n, C, H, W)`` under the current configuration (or ``config``, without switching)."""
        cfg = self.config if config is None else self._lookup(config)
        chain = self._chain
        if (
            chain is not None
            and type(x) is np.ndarray
            and x.shape == self._chain_shape
            and x.dtype == np.float32
            and x.flags.c_contiguous
        ):
            plan = self._chained(cfg)
            if plan is not None:
                # one image, as the batch-1 graph takes it: one session call (it tests the values' sum itself)
                cuts, exits, costs = plan
                probs, ids, stage, finite = chain.session.run(
                    chain.names, {"input": x, "cuts": cuts}
                )
                # NaN or infinite values: refused as in any batch (else the sum overflowed)
                if not finite:
                    self.check_input(x)
                k = int(stage)
                return self._result(
                    Routed(ids[:, 0], exits[k : k + 1], probs[:, 0], costs[k : k + 1])
                )
        x = self.check_input(x)
        if len(x) == 1:
            return self._result(route_one(self._stages_of(cfg), self._backend, x))
        return self._result(route(self._stages_of(cfg), self._backend, [x], n_rows=len(x)))

    def run_batches(
        self,
        batches: Iterable[Any],
        config: str | int | ExitConfig | None = None,
        *,
        rebatch: bool = False,
        batch_size: int | None = None,
        workers: int = 1,
    ) -> RouteResult:
        """Run an iterable of input batches (or ``(x, ...)`` tuples) and return the results of all their rows, in
        input order. ``rebatch=True`` (throughput serving): the samples still going on wait before each graph until
        ``batch_size`` of them (default: the first batch's size) are there, gathered from several input batches, so
        every graph runs full batches; the rest runs when the input ends. ``workers=N`` (throughput serving on N
        cores): N threads, each taking the next batch when free (re-batched among its own with ``rebatch``); open
        the bundle with ``threads=1`` so that each runs one. The decisions are the same either way."""
        check_batching(batch_size, workers, BundleError)
        cfg = self.config if config is None else self._lookup(config)
        inputs = (self.check_input(b[0] if isinstance(b, tuple) else b) for b in batches)
        if workers > 1:
            return self._result(
                route_parallel(
                    self._stages_of(cfg),
                    self._backend,
                    inputs,
                    workers,
                    rebatch=rebatch,
                    batch_size=batch_size,
                )
            )
        return self._result(
            route(
                self._stages_of(cfg), self._backend, inputs, rebatch=rebatch, batch_size=batch_size
            )
        )

    def session_calls(self, config: str | int | ExitConfig | None = None) -> int:
        """onnxruntime session calls one batch makes under ``config`` (default: the current one) when some of its
        rows reach the final exit; the base graph makes 1."""
        return sum(
            s.units.session_calls
            for s in self._stages_of(self.config if config is None else self._lookup(config))
        )

    def _chain_is_faster(self, rounds: int = 5, min_time: float = 2e-3) -> bool:
        """Whether the batch-1 graph runs one image through every stage faster than the stages one by one (the
        router's own path), timed in alternating rounds on a random image (medians)."""
        assert self._chain is not None
        chain = self._chain
        # thresholds of 1: a row never leaves early, so both paths run every stage
        deep = ExitConfig(self._chain_exits, (1.0,) * len(self._chain_exits), "max_prob")
        stages = self._backend.stages(deep)
        cuts = np.full(len(self._chain_exits), 2.0, np.float32)
        x = np.random.default_rng(0).standard_normal(self._chain_shape, dtype=np.float32)
        paths = (
            lambda: route_one(stages, self._backend, x),
            lambda: chain.session.run(chain.names, {"input": x, "cuts": cuts}),
        )
        for run in paths:  # first calls: allocations, kernel selection
            run()
            run()
        t0 = time.perf_counter()
        paths[0]()
        calls = max(1, min(50, round(min_time / max(time.perf_counter() - t0, 1e-6))))
        times: tuple[list[float], list[float]] = ([], [])
        for r in range(rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                t0 = time.perf_counter()
                for _ in range(calls):
                    paths[i]()
                times[i].append(time.perf_counter() - t0)
        return float(np.median(times[1])) <= float(np.median(times[0]))

    def runs_as_one_graph(self, config: str | int | ExitConfig | None = None) -> bool:
        """Whether a one-image call of ``config`` (default: the current one) runs as the bundle's batch-1 graph."""
        cfg = self.config if config is None else self._lookup(config)
        return self._chain is not None and self._chained(cfg) is not None

    def _chained(self, cfg: ExitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(cuts, exit per stage, MACs spent per stage)`` when a one-row batch of ``cfg`` runs as the bundle's
        batch-1 graph (it enables exactly the exits chained there, all with ``max_prob``); else None."""
        known = self._one_call.get(id(cfg))
        if known is None or known[0] is not cfg:
            plan = None
            if (
                self._chain is not None
                and cfg.exits == self._chain_exits
                and all(r == "max_prob" for r in cfg.rule_names)
            ):
                stages = self._stages_of(cfg)
                cuts = np.array([float32_cut(t) for t in cfg.thresholds], np.float32)
                spent = np.cumsum([s.cost for s in stages])
                plan = (cuts, np.array([s.exit for s in stages], np.int64), spent)
            known = self._one_call[id(cfg)] = (cfg, plan)
        return known[1]

    def _stages_of(self, cfg: ExitConfig) -> list[Stage]:
        known = self._stages.get(id(cfg))
        if known is None or known[0] is not cfg:
            known = self._stages[id(cfg)] = (cfg, self._backend.stages(cfg))
        return known[1]

    def _result(self, r: Routed) -> RouteResult:
        return RouteResult(r.predictions, r.exits, r.scores, r.costs, self.base_macs)

    def preprocess(self, images: Any) -> np.ndarray:
        """Pictures (PIL images or uint8 arrays, or a list of them) to the normalised float32 batch ``(n, C, H, W)``
        the graphs take, as the manifest records (``bundle.preprocess``, numpy and PIL only)."""
        if getattr(self, "_preprocess", None) is None:
            self._preprocess = make_transform(self.manifest)
        return self._preprocess(images)


def open_bundle(
    path: str | Path,
    *,
    configs: Mapping[str, Any] | str | Path | None = None,
    threads: int | None = 1,
    providers: Sequence[Any] | None = None,
    one_graph: bool | None = None,
) -> BundleRouter:
    """Load a bundle folder (``python -m exits.export_bundle``) into a :class:`BundleRouter`."""
    return BundleRouter(
        path, configs=configs, threads=threads, providers=providers, one_graph=one_graph
    )
