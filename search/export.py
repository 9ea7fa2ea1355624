"""Write and read ``exitconfig/1`` JSON (an entry: ``contract/config.py``; the file's schema:
``search/export_schema.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contract import ContractError
from data_cache.outputs import write_text_atomic
from data_cache.ownership import json_kind

from ._validation import SearchError
from .config import ExitConfig
from .export_schema import export_problems
from .front import non_dominated

__all__ = [
    "EXPORT_FORMAT",
    "build_export",
    "write_export",
    "read_export",
    "export_configs",
    "check_export_cache",
]

EXPORT_FORMAT = "exitconfig/1"


def _numbers(problem, config: ExitConfig) -> dict:
    ev = problem.evaluate_one(config)
    out = {
        "accuracy": ev.accuracy,
        "relative_cost": ev.relative_cost,
        "exit_fractions": list(ev.exit_fractions),
    }
    if (
        problem.costs.objective == "time"
    ):  # predicted on the table's target; relative to the base model there
        out.update(time_per_sample_ms=ev.cost, predicted_speedup=1.0 / ev.relative_cost)
    return out


def _kept(search, configs: list, certificates: list, pareto: bool) -> np.ndarray:
    """Indices of the entries written, cheapest first: with ``pareto`` the search-split non-dominated set
    plus every certified entry, else all."""
    F = search.evaluate(configs) if configs else np.zeros((0, 2))
    if pareto:
        keep = np.union1d(
            non_dominated(F), [i for i, c in enumerate(certificates) if c is not None]
        ).astype(int)
        return keep[np.lexsort((F[keep, 0], F[keep, 1]))]
    return np.argsort(F[:, 1], kind="stable")


def _entries(entries: list[tuple], certificates: list, keep, search, holdout) -> list[dict]:
    """The ``configs`` records of the kept entries, numbered per method."""
    cache = search.cache
    out = []
    counters: dict[str, int] = {}
    for i in keep:
        method, config = entries[i][:2]
        n = counters[method] = counters.get(method, -1) + 1
        entry = {
            "id": f"{method}-{n:04d}",
            "method": method,
            "exits": config.to_json(cache),
            "search": _numbers(search, config),
            "holdout": _numbers(holdout, config),
        }
        if certificates[i] is not None:
            entry["certificate"] = dict(certificates[i])
        out.append(entry)
    return out


def build_export(
    entries: list[tuple],
    *,
    search,
    holdout,
    method_info: dict | None = None,
    pareto: bool = True,
    fit: dict | None = None,
) -> dict:
    """The ``exitconfig/1`` document for ``(method, config)`` or ``(method, config, certificate)`` entries,
    cheapest first.

    ``search``/``holdout`` evaluate on the two whole splits (ExitProblems or SplitEvaluators, same cost
    model); every number is an exact evaluation there. With ``pareto`` only the search-split
    non-dominated set is kept, plus every certified entry; a certificate
    (``search.pareto_testing.Certificate.to_json``) is written as it is. ``fit`` (plain JSON, e.g.
    ``{"split": "search", "subsample": 65536, "of": 1280000, "seed": 0}``) says what the methods were
    fitted on; written as the ``fit`` field. Under the ``time`` objective the table searched on is recorded
    (``cost_table``) and each split's numbers add ``time_per_sample_ms`` and ``predicted_speedup``; costs are ms
    per sample (``docs/search.md``, "The export").
    """
    cache = search.cache
    certificates = [e[2] if len(e) > 2 else None for e in entries]
    keep = _kept(search, [e[1] for e in entries], certificates, pareto)
    model = cache.meta.provenance.get("model", {})
    base_s, base_h = search.base, holdout.base
    doc = {
        "format": EXPORT_FORMAT,
        "objective": search.costs.objective,  # the registered cost model the numbers are in
        "score": search.score,
        "cache": {
            "fingerprint": cache.fingerprint,
            "n_exits": len(cache.exits),
            "splits": {"search": search.n_samples, "holdout": holdout.n_samples},
        },
        "model": {"name": model.get("name", ""), "fingerprint": model.get("fingerprint", "")},
        "base": {
            "search": {"accuracy": base_s.accuracy, "cost": base_s.cost},
            "holdout": {"accuracy": base_h.accuracy, "cost": base_h.cost},
        },
        "methods": method_info or {},
        "configs": _entries(entries, certificates, keep, search, holdout),
    }
    if fit is not None:
        doc["fit"] = fit
    if search.costs.objective == "time":
        from .time_objective import time_table_record

        doc["cost_table"] = time_table_record(search.costs)
    return doc


def write_export(path: str | Path, doc: dict, *, overwrite: bool = True) -> None:
    """Write ``doc`` to ``path`` atomically (``data_cache.outputs.write_text_atomic``); a file already there is
    replaced only with ``overwrite`` and only when it is an export itself."""
    write_text_atomic(
        path,
        json.dumps(doc, indent=1) + "\n",
        option="export",
        overwrite=overwrite,
        kind=json_kind(EXPORT_FORMAT),
    )


def read_export(path: str | Path) -> dict:
    """Load an export and check it against the ``exitconfig/1`` schema (``export_schema.py``).

    Every problem is a SearchError line ``file: field: problem`` (all of them in ``exc.problems``).
    """
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SearchError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SearchError(
            f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise SearchError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SearchError(f"{path}: format: {got!r} is not {EXPORT_FORMAT!r}")
    problems = [f"{path}: {p}" for p in export_problems(doc)]
    if problems:
        raise SearchError(
            problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    return doc


def check_export_cache(doc: dict, cache) -> None:
    """Refuse an export searched on another cache."""
    want = doc.get("cache", {}).get("fingerprint")
    if want != cache.fingerprint:
        raise SearchError(
            f"configuration was searched on cache {want!r}, not on this one ({cache.fingerprint!r})"
        )


def export_configs(doc: dict, cache, *, source: str = "export") -> list[tuple[str, ExitConfig]]:
    """``(id, ExitConfig)`` for every entry of an export, resolved against ``cache`` (an exit without
    ``score`` has the document's ``score``, else ``max_prob``); a problem names ``source`` and the field."""
    default_score = doc.get("score", "max_prob")
    out = []
    for i, d in enumerate(doc["configs"]):
        try:
            out.append(
                (
                    d.get("id", str(i)),
                    ExitConfig.from_json(d.get("exits", []), cache, default_score),
                )
            )
        except ContractError as exc:
            raise SearchError(f"{source}: configs[{i}].{exc}") from None
    return out
