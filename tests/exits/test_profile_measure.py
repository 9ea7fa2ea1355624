"""``exits.profile.measure``: items timed in sweeps in execution order, alone probes back to back after an
untimed call, derived items from the same round's times."""
from __future__ import annotations

import time

from exits._profile_targets import Probe
from exits.profile import measure


def _probe(log: list, name: str, seconds: float = 0.0, **kw) -> Probe:
    def make(n: int):
        def call():
            log.append((name, n))
            if seconds:
                time.sleep(seconds)
        return call
    return Probe(name, kw.pop("kind", "segment"), make, **kw)


def test_swept_items_run_in_execution_order_one_call_each():
    log: list = []
    probes = [_probe(log, "a"), _probe(log, "b"), _probe(log, "c")]
    measure(probes, [1, 2], rounds=2, min_time=1e-9, max_repeats=3)
    for n in (1, 2):
        calls = [name for name, m in log if m == n]
        assert calls == ["a", "b", "c"] * (len(calls) // 3) and len(calls) % 3 == 0


def test_alone_probes_run_back_to_back_and_outside_the_sweep():
    log: list = []
    probes = [_probe(log, "a"), _probe(log, "b"), _probe(log, "base", kind="base", alone=True)]
    measure(probes, [4], rounds=1, min_time=1e-3, max_repeats=2)
    # the round: two sweeps (a, b), then base back to back: one untimed call (a short call), two timed
    assert [name for name, _ in log[-7:]] == ["a", "b", "a", "b", "base", "base", "base"]


def test_a_long_alone_call_is_timed_without_an_untimed_one():
    log: list = []
    probes = [_probe(log, "a"), _probe(log, "base", 5e-3, kind="base", alone=True)]
    measure(probes, [4], rounds=1, min_time=1e-4, max_repeats=5)
    assert [name for name, _ in log[-2:]] == ["a", "base"]


def test_a_derived_item_keeps_what_it_computes_from_the_rounds_times():
    log: list = []
    probes = [_probe(log, "unit", 2e-3),
              _probe(log, "run", 5e-3, kind="collect", alone=True, derive=lambda t: t["run"] - t["unit"]),
              _probe(log, "never", kind="collect", alone=True, derive=lambda t: -1.0)]
    out = {it["name"]: it for it in measure(probes, [1], rounds=3, min_time=1e-9, max_repeats=1)}
    assert 2e-3 <= out["run"]["median_s"][0] < 5e-3   # about 3 ms: the run less the unit
    assert out["unit"]["median_s"][0] >= 2e-3
    assert out["never"]["median_s"] == [1e-9]          # a difference below zero is kept at 1 ns
