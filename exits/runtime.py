"""``ExitRuntime``: run an exported exit configuration on the real model, really exiting early.

The model runs segment by segment. At each enabled exit the head runs on the samples still in the batch, the
configuration's exit rule (:mod:`contract.rules`) scores it through one thin adapter, :func:`exit_scores`: what the
rule reads crosses to the host once per exit, as the cache stores it (the top-k of torch's softmax of the float32
logits, as the dump writes them, and/or the logits rounded to float16; a few numbers per row, never more than the
rule reads), the rule scores it in numpy exactly as the search does and decides with its one leave test
(``score > threshold`` as float64 reads it); the samples that pass leave the batch (compaction: the survivors are
index-selected from every batch-carrying tensor of the segment's output state, ``Segment.select``; constants are
kept) and the rest go on. The loop is :mod:`contract.schedule`, the bundle router's too; with
``run_batches(..., rebatch=True)`` the survivors of several batches are gathered so that every segment runs full
batches. Disabled heads never run. With a saver exit enabled the saver runs first on the whole batch; the samples it
does not release start the backbone from the input. A rule reading its partner exit (``agree``, ``ensemble``:
the exit of the same head one position earlier) gets the partner's top-k from the stage before when the partner is
enabled (kept for the rows that go on), else the partner's head runs in the deciding stage on every row reaching it.

MACs are accounted per sample from the unit table (the cache's, else ``exits.macs.unit_macs``): every unit that ran
on a sample adds its MACs (a partner head run for a rule too, once), so the mean over samples is the relative cost
the search predicted when the export's ``objective`` is ``macs``. Under another cost model (``contract/costs/``;
``objective``) the predicted costs and ``select(budget=)`` are in that model's units, which the MAC accounting does
not measure.

A configuration comes from an ``exitconfig/1`` export (one entry, or a table to switch between with
:meth:`ExitRuntime.set_config` / :meth:`ExitRuntime.select`). It is refused (``RuntimeConfigError``) when it was
searched for another backbone, on another cache (or one dumped from other heads), names exits the model lacks, or
holds a threshold outside its score's range (``exits/_runtime_table.py``). With the cache at hand every number and
certificate of the table is recomputed from it first (``search.verify``), so ``select`` only ever trusts reproduced
figures; without it a ``search.SearchWarning`` says they are unverified.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contract import ContractError, ExitConfig
from contract.costs import DEFAULT_COST_MODEL
from contract.schedule import Routed, Stage, check_batching, route, route_one, route_parallel
from contract.select import select_config
from search.export import EXPORT_FORMAT

from ._runtime_stages import TorchStages, check_finite, exit_scores, on_saver
from ._runtime_table import (
    RuntimeConfigError,
    check_provenance,
    config_document,
    read_config_file,
    resolve_entry,
    unit_macs_of,
)
from .errors import ExitsError
from .memory import hold_freed_memory, memory_policy
from .model import ExitModel
from .preprocess import InputNormalisationError, Preprocess, check_normalised

__all__ = ["RuntimeConfigError", "RunResult", "ExitRuntime", "EXPORT_FORMAT", "read_config_file", "exit_scores",
           "InputNormalisationError", "on_saver"]


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


class ExitRuntime:
    """Runs ``model`` under one configuration of a table, dropping samples from the batch as they exit.

    ``configs``: an ``exitconfig/1`` document or its path (None: only the base model). The export's
    cache is checked against ``cache`` (a reader or a folder: same fingerprint, dumped from this
    backbone, heads and saver) or, without one, against ``cache_fingerprint``; one of the two is needed
    when ``configs`` is given. ``unit_macs`` defaults to the cache's unit table, else is counted on the
    model. ``compile`` runs each stage (its segments, head and any partner head) as one
    ``torch.compile(dynamic=True)`` graph, and the base model as another; ``channels_last``
    stores convolution weights and image batches channels-last (the base model too: often much faster on
    CPU, e.g. for a max-pool stem; the last bits of a convolution may differ from a contiguous dump).

    ``data_config``: the preprocessing the heads were trained with (``from_checkpoint`` takes the checkpoint's;
    default the model's timm config, which may differ); ``rt.transform(pictures)`` applies it
    (``exits.preprocess``). ``check_inputs``: refuse a batch whose statistics do not fit that normalisation
    (``InputNormalisationError``, :func:`exits.preprocess.check_normalised`). ``hold_memory``: keep freed memory
    in the process (:func:`exits.memory.hold_freed_memory`, process-wide), so that large batches do not fault their
    pages in again call after call; ``self.memory`` says which policy is in force.
    """

    def __init__(self, model: ExitModel, configs: Mapping[str, Any] | str | Path | None = None, *,
                 cache: Any = None, cache_fingerprint: str | None = None,
                 unit_macs: Mapping[str, float] | None = None, device: torch.device | str | None = None,
                 compile: bool = False, channels_last: bool = False,
                 data_config: Mapping[str, Any] | None = None, check_inputs: bool = True,
                 hold_memory: bool = True):
        self.memory = hold_freed_memory() if hold_memory else memory_policy()
        self.model = model
        self.data_config = dict(data_config if data_config is not None else model.data_config)
        self.check_inputs = check_inputs
        self._transform: Preprocess | None = None
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # Module.to takes device and memory_format together; torch's overloads list them apart
        model.to(self.device, memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        if cache is not None and not hasattr(cache, "fingerprint"):
            from data_cache import open_cache

            cache = open_cache(cache)
        self.cache = cache
        self.unit_macs = unit_macs_of(model, cache, unit_macs)
        final = model.exits[-1]
        self.base_macs = float(sum(self.unit_macs[u] for u in final.units))
        self._base: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(model.backbone, dynamic=True) if compile else model.backbone)
        self._backend = TorchStages(model, self.unit_macs, self.device, compile=compile)
        self._stages: dict[int, tuple[ExitConfig, list[Stage]]] = {}
        self.base_config = ExitConfig(id="base")
        self.configs: list[ExitConfig] = []
        self.doc: dict[str, Any] | None = None
        self.verification = None   # search.verify.Verification: the table's numbers recomputed from ``cache``
        self.objective = DEFAULT_COST_MODEL  # the export's cost model: units of predicted costs, select(budget=)
        if configs is not None:
            doc = config_document(configs)
            check_provenance(model, doc, cache, cache_fingerprint)
            self.doc = doc
            self.objective = doc.get("objective", DEFAULT_COST_MODEL)
            self.configs = [resolve_entry(model, entry, i, doc.get("score", "max_prob"))
                            for i, entry in enumerate(doc["configs"])]
            from .validation_inputs import verify_table

            source = str(configs) if isinstance(configs, (str, Path)) else "configs"
            self.verification = verify_table(doc, cache, source=source)
            for c in self.configs:   # refused here, not at the first batch (a partner the stages cannot reach)
                try:
                    self._stages_of(c)
                except ExitsError as exc:
                    raise RuntimeConfigError(f"config {c.id}: {exc}") from None
        self.config = self.configs[0] if len(self.configs) == 1 else self.base_config

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Mapping[str, Any], configs: Mapping[str, Any] | str | Path | None,
                        *, backbone_weights: str | Path | None = None, **kwargs: Any) -> ExitRuntime:
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
        elif isinstance(config, int) and not isinstance(config, bool):
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
        """Switch to a configuration of the table and return it (:func:`contract.select.select_config`).

        ``budget``: the most accurate whose predicted relative cost on ``split`` (in the units of the export's
        ``objective``) is <= ``budget`` (ties: the cheaper). ``max_drop``: the cheapest (predicted on ``split``)
        whose certificate (``search.pareto``) certifies an accuracy drop <= ``max_drop`` points of top-1 accuracy
        (0.5 = half a point; a value that looks like a fraction or a percentage is refused).
        """
        try:
            return self.set_config(select_config(self.configs, budget, max_drop=max_drop, split=split))
        except ContractError as exc:
            raise RuntimeConfigError(str(exc)) from None

    # -- running --------------------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x)
        if self.check_inputs and x.ndim == 4:
            check_normalised(x, self.data_config)
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format) if x.ndim == 4 else x

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain base model (the backbone's own forward, no heads): logits ``(b, n_classes)``."""
        with torch.inference_mode():
            return self._base(self._input(x))

    def __call__(self, x: torch.Tensor, config: str | int | ExitConfig | None = None) -> RunResult:
        return self.run(x, config)

    def run(self, x: torch.Tensor, config: str | int | ExitConfig | None = None) -> RunResult:
        """Run a batch ``(b, C, H, W)`` under the current configuration (or ``config``, without switching)."""
        cfg = self.config if config is None else self._lookup(config)
        x = self._input(x)
        with torch.inference_mode():
            if len(x) == 1:
                return self._result(route_one(self._stages_of(cfg), self._backend, x))
            return self._result(route(self._stages_of(cfg), self._backend, [x], n_rows=len(x)))

    def run_batches(self, batches: Iterable[Any], config: str | int | ExitConfig | None = None, *,
                    rebatch: bool = False, batch_size: int | None = None, workers: int = 1) -> RunResult:
        """Run an iterable of input batches (or ``(x, ...)`` tuples, as a ``DataLoader`` yields) and return the
        results of all their rows, in input order.

        ``rebatch=False``: each batch runs alone, as :meth:`run` does. ``rebatch=True`` (throughput serving): the
        samples still going on wait before each segment until ``batch_size`` of them (default: the first batch's
        size) are there, gathered from several input batches, so every segment runs full batches; the rest runs
        when the input ends. ``workers=N`` (throughput serving on N cores): N threads, each taking the next batch
        when free (re-batched among its own with ``rebatch``); give each one intra-op thread
        (``torch.set_num_threads(1)``).
        The decisions are the same either way.
        """
        check_batching(batch_size, workers, RuntimeConfigError)
        cfg = self.config if config is None else self._lookup(config)
        inputs = (self._input(b[0] if isinstance(b, (tuple, list)) else b) for b in batches)
        if workers > 1:
            return self._result(route_parallel(self._stages_of(cfg), self._backend, inputs, workers,
                                               rebatch=rebatch, batch_size=batch_size, context=torch.inference_mode))
        with torch.inference_mode():
            return self._result(route(self._stages_of(cfg), self._backend, inputs, rebatch=rebatch,
                                      batch_size=batch_size))

    def run_loader(self, batches: Iterable[Any], config: str | int | ExitConfig | None = None) -> RunResult:
        """Deprecated name of :meth:`run_batches` (the bundle router's name)."""
        warnings.warn("ExitRuntime.run_loader is deprecated: use run_batches", DeprecationWarning, stacklevel=2)
        return self.run_batches(batches, config)

    def _stages_of(self, cfg: ExitConfig) -> list[Stage]:
        """The stages of ``cfg`` (:meth:`TorchStages.stages`), built once per configuration."""
        known = self._stages.get(id(cfg))
        if known is None or known[0] is not cfg:
            known = self._stages[id(cfg)] = (cfg, self._backend.stages(cfg))
        return known[1]

    def _result(self, r: Routed) -> RunResult:
        return RunResult(torch.from_numpy(r.predictions), torch.from_numpy(r.exits), torch.from_numpy(r.scores),
                         torch.from_numpy(r.costs), self.base_macs)

    def _lookup(self, config: str | int | ExitConfig) -> ExitConfig:
        current = self.config
        try:
            return self.set_config(config)
        finally:
            self.config = current
