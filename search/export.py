"""Write and read ``exitconfig/1`` JSON (``../shared/specs/exit-semantics-and-config.md``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._validation import SearchError
from .config import ExitConfig
from .front import non_dominated

__all__ = ["EXPORT_FORMAT", "build_export", "write_export", "read_export", "export_configs", "check_export_cache"]

EXPORT_FORMAT = "exitconfig/1"


def _numbers(problem, config: ExitConfig) -> dict:
    ev = problem.evaluate_one(config)
    return {"accuracy": ev.accuracy, "relative_cost": ev.relative_cost,
            "exit_fractions": list(ev.exit_fractions)}


def build_export(entries: list[tuple], *, search, holdout, method_info: dict | None = None,
                 pareto: bool = True) -> dict:
    """The ``exitconfig/1`` document for ``(method, config)`` or ``(method, config, certificate)`` entries,
    cheapest first.

    ``search``/``holdout`` are ExitProblems on the two splits (same cost model); every number is an
    independent evaluation there. With ``pareto`` only the search-split non-dominated set is kept, plus
    every certified entry; a certificate (``search.pareto_testing.Certificate.to_json``) is written as it is.
    """
    cache = search.cache
    configs = [e[1] for e in entries]
    certificates = [e[2] if len(e) > 2 else None for e in entries]
    F = search.evaluate(configs) if configs else np.zeros((0, 2))
    if pareto:
        keep = np.union1d(non_dominated(F), [i for i, c in enumerate(certificates) if c is not None]).astype(int)
        keep = keep[np.lexsort((F[keep, 0], F[keep, 1]))]
    else:
        keep = np.argsort(F[:, 1], kind="stable")
    model = cache.meta.provenance.get("model", {})
    base_s, base_h = search.base, holdout.base
    doc = {
        "format": EXPORT_FORMAT,
        "objective": search.objective,
        "score": search.score,
        "cache": {"fingerprint": cache.fingerprint, "n_exits": len(cache.exits),
                  "splits": {"search": search.n_samples, "holdout": holdout.n_samples}},
        "model": {"name": model.get("name", ""), "fingerprint": model.get("fingerprint", "")},
        "base": {"search": {"accuracy": base_s.accuracy, "cost": base_s.cost},
                 "holdout": {"accuracy": base_h.accuracy, "cost": base_h.cost}},
        "methods": method_info or {},
        "configs": [],
    }
    counters: dict[str, int] = {}
    for i in keep:
        method, config = entries[i][:2]
        n = counters[method] = counters.get(method, -1) + 1
        entry = {"id": f"{method}-{n:04d}", "method": method, "exits": config.to_json(cache),
                 "search": _numbers(search, config), "holdout": _numbers(holdout, config)}
        if certificates[i] is not None:
            entry["certificate"] = dict(certificates[i])
        doc["configs"].append(entry)
    return doc


def write_export(path: str | Path, doc: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def read_export(path: str | Path) -> dict:
    """Load an export and check its format tag."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SearchError(f"{path}: no such configuration file") from None
    except ValueError as exc:
        raise SearchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SearchError(f"{path}: format {got!r} is not {EXPORT_FORMAT!r}")
    if not isinstance(doc.get("configs"), list):
        raise SearchError(f"{path}: 'configs' must be a list")
    return doc


def check_export_cache(doc: dict, cache) -> None:
    """Refuse an export searched on another cache."""
    want = doc.get("cache", {}).get("fingerprint")
    if want != cache.fingerprint:
        raise SearchError(f"configuration was searched on cache {want!r}, not on this one ({cache.fingerprint!r})")


def export_configs(doc: dict, cache) -> list[tuple[str, ExitConfig]]:
    """``(id, ExitConfig)`` for every entry of an export, resolved against ``cache``."""
    return [(d.get("id", str(i)), ExitConfig.from_json(d.get("exits", []), cache))
            for i, d in enumerate(doc["configs"])]
