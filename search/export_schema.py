"""The ``exitconfig/1`` schema on read: known fields checked with exact types, unknown fields accepted.

Every problem is one ``field: problem`` line (``read_export`` puts the file in front). Fields this
version does not know (a per-config ``certificate``, a note on a subsample, ...) are accepted as they
are, so newer writers stay readable; known fields must have exactly their type: a position is an
``int`` (never ``1.9``, ``true`` or ``"1"``), a threshold a finite number, names plain names.
"""

from __future__ import annotations

import math

from contract import entries_problems, list_rules
from data_cache.cost_tables import RUNTIMES
from data_cache.schema import name_problem

from .certify import BOUNDS
from .costs import list_cost_models
from .time_cost import METHODS

__all__ = [
    "export_problems",
    "exit_entries_problems",
    "certificate_problems",
    "cost_table_problems",
]

TIME_FIELDS = (
    "time_per_sample_ms",
    "predicted_speedup",
)  # each split's numbers under the objective time

CERTIFICATE_SPLITS = ("calibration", "search")


def _got(x) -> str:
    text = repr(x)
    return f"got {text[:60]}{'...' if len(text) > 60 else ''}"


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def exit_entries_problems(
    entries, field: str = "exits", default_score: str = "max_prob"
) -> list[str]:
    """Problems of a configuration's ``exits`` list: the contract's (:func:`contract.entries_problems`), then
    the cache format's name rules (never a path)."""
    problems = entries_problems(entries, field, default_score)
    for j, d in enumerate(entries if isinstance(entries, list) else []):
        for key in ("name", "head"):
            value = d.get(key) if isinstance(d, dict) else None
            if isinstance(value, str) and value and name_problem(value):
                problems.append(f"{field}[{j}].{key}: {name_problem(value)}")
    return problems


def _numbers(d, field: str, n_exits: int | None, time: bool = False) -> list[str]:
    """A config's ``search``/``holdout`` numbers, or the ``base`` figures; ``time``: a config's under the
    objective ``time`` (its predicted ms per sample and speed-up, both required)."""
    if not isinstance(d, dict):
        return [f"{field}: must be an object ({_got(d)})"]
    problems = []
    for key in TIME_FIELDS if time else ():
        if key not in d:
            problems.append(f"{field}.{key}: missing (objective 'time')")
        elif not (_number(d[key]) and d[key] > 0):
            problems.append(f"{field}.{key}: must be a finite number > 0 ({_got(d[key])})")
    if "accuracy" in d and not (_number(d["accuracy"]) and 0 <= d["accuracy"] <= 1):
        problems.append(f"{field}.accuracy: must be a number in [0, 1] ({_got(d['accuracy'])})")
    for key in ("relative_cost", "cost"):
        if key in d and not (_number(d[key]) and d[key] >= 0):
            problems.append(f"{field}.{key}: must be a finite number >= 0 ({_got(d[key])})")
    if "exit_fractions" in d:
        fr = d["exit_fractions"]
        if not isinstance(fr, list) or not all(_number(x) and 0 <= x <= 1 for x in fr):
            problems.append(
                f"{field}.exit_fractions: must be a list of numbers in [0, 1] ({_got(fr)})"
            )
        elif n_exits is not None and len(fr) != n_exits + 1:
            problems.append(
                f"{field}.exit_fractions: {len(fr)} entries, expected {n_exits + 1} (each enabled exit, "
                "then the final one)"
            )
    return problems


def _in(lo: float, hi: float, *, open_lo: bool = False):
    """A check: a finite number in [lo, hi] (``(lo, hi]`` with ``open_lo``)."""

    def check(v) -> str | None:
        ok = _number(v) and (lo < v if open_lo else lo <= v) and v <= hi
        return (
            None
            if ok
            else f"must be a number in {'(' if open_lo else '['}{lo:g}, {hi:g}] ({_got(v)})"
        )

    return check


def _at_least(lo: int, *, integer: bool = True, allow_none: bool = False):
    def check(v) -> str | None:
        if allow_none and v is None:
            return None
        ok = (_int(v) if integer else _number(v)) and v >= lo
        return (
            None
            if ok
            else f"must be {'an integer' if integer else 'a finite number'} >= {lo} ({_got(v)})"
        )

    return check


def certificate_problems(cert, field: str = "certificate") -> list[str]:
    """Problems of a configuration's ``certificate`` (``search.pareto_testing.Certificate.to_json``): the
    fields a verification re-runs the test with are required, each with its exact type and range; the
    others are checked when present."""
    if not isinstance(cert, dict):
        return [f"{field}: must be an object ({_got(cert)})"]
    kind = cert.get("kind")
    if kind not in ("drop", "cost"):
        return [f"{field}.kind: must be 'drop' or 'cost' ({_got(kind)})"]
    limit, observed = (
        ("certified_drop", "observed_drop")
        if kind == "drop"
        else ("certified_relative_cost", "observed_relative_cost")
    )
    bounds = list(BOUNDS) if kind == "drop" else ["betting"]
    required = {
        "bound": _one_of(bounds),
        "delta": _in(0.0, 0.5, open_lo=True),
        "n_cal": _at_least(1),
        limit: _in(0.0, 1.0) if kind == "drop" else _at_least(0, integer=False),
        "split": _one_of(CERTIFICATE_SPLITS),
        "seed": _at_least(0),
    }
    optional = {
        "fraction": _in(0.0, 1.0, open_lo=True),
        "p_value": _in(0.0, 1.0),
        observed: _in(-1.0, 1.0) if kind == "drop" else _at_least(0, integer=False),
        "tested": _at_least(1),
        "sequence": _at_least(1),
        "accuracy_lower_bound": _in(0.0, 1.0),
        "level": _in(0.0, 0.5, open_lo=True),
    }
    problems = [f"{field}.{key}: missing" for key in required if key not in cert]
    if cert.get("split") == "search" and "fraction" not in cert:
        problems.append(
            f"{field}.fraction: missing (the share of the search split cut for calibration)"
        )
    checks = {**required, **optional}
    problems += [f"{field}.{p}" for p in _problems(cert, checks)]
    if (
        not problems
        and "tested" in cert
        and "sequence" in cert
        and cert["tested"] > cert["sequence"]
    ):
        problems.append(
            f"{field}.tested: {cert['tested']} configurations tested of a sequence of {cert['sequence']}"
        )
    if not problems and "level" in cert and (kind != "drop" or cert["level"] > cert["delta"]):
        problems.append(
            f"{field}.level: {cert['level']!r} must be a drop test's level, at most delta {cert['delta']!r} "
            "(a fallback walk's share of it)"
        )
    if not problems and "accuracy_lower_bound" in cert and "sequence" not in cert:
        problems.append(f"{field}.sequence: missing (the accuracy bound holds at delta / sequence)")
    return problems


def _problems(d: dict, checks: dict) -> list[str]:
    out: list[str] = []
    for key, check in checks.items():
        _optional(d, key, check, out)
    return out


def fit_problems(fit) -> list[str]:
    """Problems of the export's ``fit`` record (what the methods were fitted on)."""
    if not isinstance(fit, dict):
        return [f"fit: must be an object ({_got(fit)})"]
    checks = {
        "split": _one_of(["search"]),
        "subsample": _at_least(1, allow_none=True),
        "of": _at_least(1),
        "seed": _at_least(0, allow_none=True),
    }
    problems = [f"fit.{p}" for p in _problems(fit, checks)]
    if not problems and fit.get("subsample") is not None and fit.get("seed") is None:
        problems.append("fit.seed: missing (a subsample is drawn with a seed)")
    return problems


def _optional(d: dict, key: str, check, problems: list[str]) -> None:
    if key in d:
        problem = check(d[key])
        if problem:
            problems.append(f"{key}: {problem}")


def _one_of(choices):
    return lambda v: None if v in choices else f"must be one of {list(choices)} ({_got(v)})"


def cost_table_problems(doc: dict) -> list[str]:
    """The ``cost_table`` record: required, with its exact types, exactly under the objective ``time``."""
    time = doc.get("objective") == "time"
    if "cost_table" not in doc:
        return (
            ["cost_table: missing (objective 'time' records the table it was predicted from)"]
            if time
            else []
        )
    rec = doc["cost_table"]
    if not time:
        return [
            f"cost_table: only an export on objective 'time' records a cost table (objective "
            f"{doc.get('objective', 'macs')!r})"
        ]
    if not isinstance(rec, dict):
        return [f"cost_table: must be an object ({_got(rec)})"]

    def text(v) -> str | None:
        return None if isinstance(v, str) and v else f"must be a non-empty string ({_got(v)})"

    def fingerprint(v) -> str | None:
        ok = (
            isinstance(v, str)
            and v.startswith("sha256:")
            and len(v) == 71
            and all(ch in "0123456789abcdef" for ch in v[7:])
        )
        return None if ok else f"must be 'sha256:' and 64 hex digits ({_got(v)})"

    checks = {
        "name": text,
        "fingerprint": fingerprint,
        "device": text,
        "threads": _at_least(0),
        "batch_size": _at_least(1),
        "runtime": _one_of(RUNTIMES),
        "method": _one_of(METHODS),
    }
    problems = [f"cost_table.{key}: missing" for key in checks if key not in rec]
    if not isinstance(rec.get("rebatch", False), bool):  # optional (older exports): compaction
        problems.append(f"cost_table.rebatch: must be true or false ({_got(rec['rebatch'])})")
    return problems + [f"cost_table.{p}" for p in _problems(rec, checks)]


def _config_problems(c, i: int, ids: set, default_score: str, time: bool = False) -> list[str]:
    f = f"configs[{i}]"
    if not isinstance(c, dict):
        return [f"{f}: must be an object with 'exits' ({_got(c)})"]
    problems = []
    if "id" in c:
        if not isinstance(c["id"], str) or not c["id"]:
            problems.append(f"{f}.id: must be a non-empty string ({_got(c['id'])})")
        elif c["id"] in ids:
            problems.append(f"{f}.id: {c['id']!r} is used twice; ids pick a configuration")
        else:
            ids.add(c["id"])
    if "method" in c and not isinstance(c["method"], str):
        problems.append(f"{f}.method: must be a string ({_got(c['method'])})")
    if "exits" not in c:
        problems.append(f"{f}.exits: missing")
    else:
        problems.extend(exit_entries_problems(c["exits"], f"{f}.exits", default_score))
    n_exits = len(c["exits"]) if isinstance(c.get("exits"), list) else None
    for split in ("search", "holdout"):
        if split in c:
            problems.extend(_numbers(c[split], f"{f}.{split}", n_exits, time))
    if "certificate" in c:
        problems.extend(certificate_problems(c["certificate"], f"{f}.certificate"))
    return problems


def export_problems(doc) -> list[str]:
    """Every schema problem of an ``exitconfig/1`` document (``format`` already checked)."""
    if not isinstance(doc, dict):
        return [f"document: must be a JSON object ({_got(doc)})"]
    problems: list[str] = []
    _optional(doc, "objective", _one_of(list_cost_models()), problems)
    _optional(doc, "score", _one_of(list_rules()), problems)
    cache = doc.get("cache")
    if not isinstance(cache, dict):
        problems.append(f"cache: must be an object with the cache's fingerprint ({_got(cache)})")
    else:
        if not isinstance(cache.get("fingerprint"), str) or not cache["fingerprint"]:
            problems.append(
                f"cache.fingerprint: must be a non-empty string ({_got(cache.get('fingerprint'))})"
            )
        if "n_exits" in cache and not (_int(cache["n_exits"]) and cache["n_exits"] >= 1):
            problems.append(f"cache.n_exits: must be an integer >= 1 ({_got(cache['n_exits'])})")
    model = doc.get("model")
    if "model" in doc:
        if not isinstance(model, dict):
            problems.append(f"model: must be an object ({_got(model)})")
        else:
            for key in ("name", "fingerprint"):
                if model.get(key) is not None and not isinstance(model[key], str):
                    problems.append(f"model.{key}: must be a string or null ({_got(model[key])})")
    base = doc.get("base")
    if "base" in doc:
        if not isinstance(base, dict):
            problems.append(f"base: must be an object ({_got(base)})")
        else:
            for split in ("search", "holdout"):
                if split in base:
                    problems.extend(_numbers(base[split], f"base.{split}", None))
    if "fit" in doc:
        problems.extend(fit_problems(doc["fit"]))
    problems.extend(cost_table_problems(doc))
    if "methods" in doc and not isinstance(doc["methods"], dict):
        problems.append(f"methods: must be an object ({_got(doc['methods'])})")
    configs = doc.get("configs")
    if not isinstance(configs, list):
        problems.append(f"configs: must be a list of configuration objects ({_got(configs)})")
    else:
        ids: set = set()
        named = doc.get("score")
        score = named if isinstance(named, str) and named in list_rules() else "max_prob"
        for i, c in enumerate(configs):
            problems.extend(_config_problems(c, i, ids, score, doc.get("objective") == "time"))
    return problems
