"""The configuration side of ``exits.ExitRuntime``: reading an ``exitconfig/1`` table, checking that it belongs to
this model and cache (provenance), resolving its entries against the model's exits, and the unit table that the
runtime charges MACs from."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import ContractError, ExitConfig, ExitTable
from contract.costs import DEFAULT_COST_MODEL, CostModelError, get_cost_model
from search import SearchError
from search.export import EXPORT_FORMAT, read_export

from .errors import ExitsError
from .model import ExitModel, ExitSpec

__all__ = ["RuntimeConfigError", "read_config_file", "config_document", "check_provenance", "resolve_entry",
           "unit_macs_of"]


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


def config_document(configs: Mapping[str, Any] | str | Path) -> dict[str, Any]:
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


def unit_macs_of(model: ExitModel, cache: Any, given: Mapping[str, float] | None) -> dict[str, float]:
    """MACs per unit of ``model``: ``given``, else the cache's unit table, else counted on the model."""
    names = [u.name for u in model.units]
    if given is None and cache is not None:
        given = {u.name: u.macs for u in cache.units}
    if given is None:
        from .macs import unit_macs

        given = unit_macs(model)
    missing = [n for n in names if n not in given]
    if missing:
        raise RuntimeConfigError(f"the unit table has no MACs for units {missing[:3]} of this model; "
                                 "is it another model's cache?")
    return {n: float(given[n]) for n in names}


def check_provenance(model: ExitModel, doc: Mapping[str, Any], cache: Any, cache_fingerprint: str | None) -> None:
    """RuntimeConfigError unless the table was searched for this model's weights on ``cache`` (or the cache with
    ``cache_fingerprint``), and ``cache`` was dumped from this backbone, heads and saver."""
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
        checks: list[tuple[str, Any, Any]] = [("backbone", (prov.get("model") or {}).get("fingerprint"), fp),
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


def resolve_entry(model: ExitModel, entry: Mapping[str, Any], i: int, default_score: str) -> ExitConfig:
    """One entry of the table, validated once (:meth:`contract.ExitConfig.from_json`) against the model's exits."""
    cid = str(entry.get("id", i))
    where = (f"an exit of this model ({model.model_name} has {len(model.exits)} exits, e.g. "
             f"{[e.name for e in model.exits[:3]]})")
    table = ExitTable.of(_ModelExits(model.exits, model.num_classes), where)
    predicted = {k: dict(entry[k]) for k in ("search", "holdout", "certificate") if isinstance(entry.get(k), Mapping)}
    try:
        return ExitConfig.from_json(entry.get("exits", []), table, default_score, id=cid, predicted=predicted)
    except ContractError as exc:
        raise RuntimeConfigError(f"config {cid}: {exc}") from None
