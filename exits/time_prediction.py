"""Predicted against measured time: what both validations add when a cost table is in play.

A validation predicts each configuration's time per sample from a cost table (``data_cache.cost_tables``,
measured by ``python -m exits.profile``) with ``search.time_cost.TimeCostModel`` on the cache's per-sample exits
for the validated split (recomputed here, never the export's word), times the configuration and the base at the
table's batch size in interleaved rounds (``exits.measure.time_against_base``), and reports both speed-ups and
the relative error. The table is the one an export searched on time records (``"objective": "time"``,
``"cost_table": {"name", "fingerprint", ...}``), or any table named with ``--cost-table NAME`` (a MAC export too:
"what speed-up will this deliver here?").

Refused in one line (``TimeTargetError``): a table named for the other runtime (an eager table for a bundle and
vice versa), a time export whose table's fingerprint no longer matches (profiled again since the search), a
time export without its ``cost_table`` record, a configuration the table cannot time (``check_timeable``).
Flagged in one ``warning:`` line each: a time export searched on a table of the other runtime (validated without a
time prediction: its accuracy and MACs are still checked), this machine's device, its name or the thread count
differing from the table's target, a table of another bundle, an export searched on another table, an export whose
objective is ``latency`` (the cache's one-batch table, additive). A time export is predicted and timed at the batch
size it was searched at (its ``cost_table.batch_size``, within the table's grid); any other at the table's.
Re-batched serving (``--rebatch``, or an export searched with ``search.pareto --rebatch``, whose record says
``"rebatch": true``) is predicted with the re-batched time model and timed as one stream through
``run_batches(..., rebatch=True)``; validating an export searched for compaction re-batched is flagged in one line.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ExitsError

__all__ = ["TimeTargetError", "Machine", "TimeTarget", "resolve_time_target", "serves_rebatched", "check_timeable",
           "machine_lines",
           "time_entry", "time_summary", "plot_time_prediction"]


class TimeTargetError(ExitsError):
    """A cost table that cannot predict this validation's time (other runtime, changed since the search)."""


@dataclass(frozen=True)
class Machine:
    """What runs the validation: the device (``cpu``, ``cuda:0``), its name (CPU model or GPU), the threads, and
    for the eager runtime what the process does with freed memory (``exits.memory.memory_policy``'s ``policy``)."""

    device: str
    device_name: str
    threads: int | None
    memory: str | None = None


@dataclass(frozen=True)
class TimeTarget:
    """The cost table a validation predicts from and its time model at the table's batch size."""

    table: Any
    model: Any

    @property
    def batch_size(self) -> int:
        """The batch size predicted and timed at: the export's when it was searched on this table, else the table's."""
        return int(self.model.batch_size)

    @property
    def rebatch(self) -> bool:
        """Whether re-batched serving is predicted (and timed)."""
        return bool(self.model.rebatch)

    @property
    def threads(self) -> int | None:
        t = self.table.target.get("threads")
        return t if isinstance(t, int) else None

    def record(self) -> dict[str, Any]:
        """The report's ``cost_table``: the table, its target and how the expectation was taken."""
        t = self.table.target
        return {"name": self.table.name, "fingerprint": self.table.fingerprint, "device": t.get("device"),
                "device_name": t.get("device_name"), "threads": t.get("threads"), "batch_size": self.batch_size,
                "runtime": self.table.runtime, "method": self.model.method, "rebatch": self.rebatch,
                "date": t.get("date"),
                "loadavg": t.get("loadavg_before")}


def _recorded(doc: Mapping[str, Any], source: str) -> Mapping[str, Any] | None:
    """The export's ``cost_table`` record when it was searched on time (refused when missing), else None."""
    if doc.get("objective") != "time":
        return None
    rec = doc.get("cost_table")
    if not isinstance(rec, Mapping) or not isinstance(rec.get("name"), str):
        raise TimeTargetError(f"{source}: cost_table: objective 'time' but no record of the cost table it was "
                              "searched on; export it again with search.pareto --objective time --cost-table NAME")
    return rec


def machine_lines(target: TimeTarget, machine: Machine) -> list[str]:
    """Warning lines where ``machine`` is not the target ``target``'s table was profiled on."""
    table = target.table
    t = table.target
    lines = []
    if str(t.get("device", "")).split(":")[0] != machine.device.split(":")[0] \
            or t.get("device_name") != machine.device_name:
        lines.append(f"cost table {table.name!r} was profiled on {t.get('device')} ({t.get('device_name')}); this "
                     f"run is on {machine.device} ({machine.device_name}): its predicted times are that target's")
    if isinstance(t.get("threads"), int) and t.get("threads") != machine.threads:
        lines.append(f"cost table {table.name!r} was profiled with {t['threads']} thread(s); this run uses "
                     f"{machine.threads or 'the default'}: pass --threads {t['threads']} or profile this target")
    profiled = t["memory"].get("policy") if isinstance(t.get("memory"), Mapping) else None   # None: an older table
    if machine.memory is not None and profiled is not None and profiled != machine.memory:
        lines.append(f"cost table {table.name!r} was profiled with freed memory {profiled!r}; this run's is "
                     f"{machine.memory!r} (exits.memory): large batches may fault their pages in at other rates")
    return lines


def serves_rebatched(doc: Mapping[str, Any], asked: bool) -> bool:
    """Whether a validation serves re-batched: ``asked`` (``--rebatch``) or the export was searched so."""
    rec = doc.get("cost_table") if doc.get("objective") == "time" else None
    return asked or (isinstance(rec, Mapping) and rec.get("rebatch") is True)


def resolve_time_target(doc: Mapping[str, Any], cache: Any, name: str | None, *, runtime: str,
                        source: str, bundle_fingerprint: str | None = None, rebatch: bool = False
                        ) -> tuple[TimeTarget | None, tuple[str, ...]]:
    """The cost table to predict time from (``name``, else the one a time export was searched on), checked
    against the export and the runtime (None when there is none), and the warning lines (``machine_lines``
    adds this machine's, once the threads are set). ``rebatch``: re-batched serving asked (``--rebatch``); an
    export searched re-batched is predicted re-batched without it (:func:`serves_rebatched`)."""
    from contract import exit_partners
    from data_cache.cost_tables import read_cost_table
    from search import SearchError
    from search.time_cost import TimeCostModel

    recorded = _recorded(doc, source)
    lines = []
    if doc.get("objective") == "latency":
        lines.append(f"{source}: objective 'latency': searched on the cache's one-batch latency table (additive, "
                     "one batch size), not on a profile of this target"
                     + ("" if name else "; profile one (python -m exits.profile) and pass --cost-table NAME"))
    named = name is not None
    name = name or (recorded or {}).get("name")
    if name is None:
        return None, tuple(lines)
    table = read_cost_table(cache, name)
    if table.runtime != runtime:
        what = "a bundle (onnxruntime)" if runtime == "onnx" else "the eager runtime"
        other = f"cost table {name!r}: profiled for the {table.runtime} runtime, this validation runs {what}"
        if named:
            raise TimeTargetError(f"{other}; profile with python -m exits.profile --runtime {runtime}")
        lines.append(f"{source}: searched on {other}: no time prediction (profile with python -m exits.profile "
                     f"--runtime {runtime} and pass --cost-table NAME)")
        return None, tuple(lines)
    method, batch_size = "binomial", table.batch_size
    if recorded is not None and recorded["name"] == name:
        if recorded.get("fingerprint") != table.fingerprint:
            raise TimeTargetError(f"{source}: cost_table.fingerprint: searched on cost table {name!r} "
                                  f"{str(recorded.get('fingerprint'))[:19]}..., which now reads "
                                  f"{table.fingerprint[:19]}... (profiled again since); search again on it")
        method = recorded.get("method") or method
        batch_size = recorded.get("batch_size") or batch_size  # its numbers are at the batch size it searched at
        if rebatch and recorded.get("rebatch") is not True:
            lines.append(f"{source}: searched for plain compaction at batch {batch_size}; --rebatch predicts and times "
                         "re-batched serving instead (search.pareto --rebatch searches for it)")
    elif recorded is not None:
        lines.append(f"{source}: searched on cost table {recorded['name']!r} ({recorded.get('device')}, "
                     f"batch {recorded.get('batch_size')}); predicting with {name!r} instead")
    profiled_on = (table.target.get("bundle") or {}).get("fingerprint")
    if bundle_fingerprint is not None and profiled_on not in (None, bundle_fingerprint):
        lines.append(f"cost table {name!r} was profiled on bundle {profiled_on[:19]}..., not this one "
                     f"({bundle_fingerprint[:19]}...)")
    try:
        model = TimeCostModel(table, [e.units for e in cache.exits], [e.name for e in cache.exits],
                              batch_size=batch_size, method=method, partners=exit_partners(cache.exits),
                              rebatch=serves_rebatched(doc, rebatch))
    except SearchError as exc:
        raise TimeTargetError(f"{source}: cost_table: {exc}") from None
    return TimeTarget(table, model), tuple(lines)


def check_timeable(target: TimeTarget | None, configs: Sequence[Any]) -> None:
    """Before any work: TimeTargetError in one line naming the first configuration the table cannot time (a unit or
    an exit's step it lacks, an exit inside one of its fused bundle graphs). What is checked does not depend on
    where samples leave, so every sample is sent to the final exit."""
    from search import SearchError

    if target is None:
        return
    final = np.full(1, len(target.model.exit_names) - 1)
    for c in configs:
        try:
            target.model.estimate(list(c.exits), final, c.rule_names)
        except SearchError as exc:
            raise TimeTargetError(f"configuration {c.id}: {exc}") from None


def time_entry(model: Any, config: Any, leave: np.ndarray, timing: Mapping[str, Any] | None,
               mac_speedup: float) -> dict[str, Any]:
    """The report's fields for one configuration: ``predicted_speedup`` (the time model on ``leave``, the cache's
    per-sample exits), and when ``timing`` (``time_against_base``'s batch block, at the model's batch size) was
    measured ``measured_speedup``, ``speedup_error`` = predicted / measured - 1 and the MAC prediction's error."""
    est = model.estimate(list(config.exits), leave, config.rule_names)
    time = {"batch_size": model.batch_size, "method": model.method, "rebatch": model.rebatch,
            "predicted_ms_per_sample": 1e3 * est.time_per_sample_s,
            "predicted_base_ms_per_sample": 1e3 * est.base_time_per_sample_s,
            "predicted_items_ms_per_sample": {k: 1e3 * v for k, v in est.items.items()}}
    out: dict[str, Any] = {"predicted_speedup": est.speedup, "time": time}
    if timing:
        n = timing["n_samples"]
        time.update(measured_ms_per_sample=1e3 * timing["config_s"] / n,
                    measured_base_ms_per_sample=1e3 * timing["base_s"] / n, timed_batch_size=timing["batch_size"])
        out.update(measured_speedup=timing["speedup"], speedup_error=est.speedup / timing["speedup"] - 1.0,
                   mac_speedup_error=mac_speedup / timing["speedup"] - 1.0)
    return out


def time_summary(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Largest relative errors of the time and of the MAC predictions over the timed configurations."""
    timed = [c for c in configs if "speedup_error" in c]
    if not timed:
        return None
    return {"n_timed": len(timed), "max_abs_speedup_error": max(abs(c["speedup_error"]) for c in timed),
            "max_abs_mac_speedup_error": max(abs(c["mac_speedup_error"]) for c in timed)}


def plot_time_prediction(ax: Any, configs: Sequence[Mapping[str, Any]], title: str) -> None:
    """Predicted (time model; MACs) against measured speed-up, with the y = x line."""
    rows = [c for c in configs if "measured_speedup" in c]
    measured = [c["measured_speedup"] for c in rows]
    top = max([*measured, *(c["predicted_speedup"] for c in rows), *(c["mac_estimate_speedup"] for c in rows),
               1.0]) * 1.05
    ax.plot([0, top], [0, top], "k-", lw=1, label="y = x (prediction exact)")
    ax.plot(measured, [c["predicted_speedup"] for c in rows], "o", label="time model (cost table)")
    ax.plot(measured, [c["mac_estimate_speedup"] for c in rows], "x", ms=8, label="MAC estimate: 1 / relative MACs")
    for c in rows:
        ax.annotate(str(c["id"]), (c["measured_speedup"], c["predicted_speedup"]), fontsize=7, alpha=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured speed-up over the base")
    ax.set_ylabel("predicted speed-up")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
