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


def test_eager_probes_chain_each_unit_to_what_the_one_before_it_wrote():
    """In a sweep a segment reads the tensor its source segment's call just wrote (fresh input, as in a run), and
    the probes come in execution order with each step after its head."""
    import torch
    from _runtime_fixtures import tiny_model

    from exits._profile_targets import eager_probes
    from exits.runtime import ExitRuntime

    model = tiny_model().eval()
    runtime = ExitRuntime(model, None, check_inputs=False)
    probes = eager_probes(runtime, 4, "max_prob")
    names = [p.name for p in probes]
    for p in probes:
        if p.kind == "step":
            assert names[names.index(p.name) - 1] == f"head:{p.exit}"   # a step right after its head
    seen: dict[str, tuple[int, int]] = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = (inputs[0].data_ptr(), output.data_ptr())
        return record

    segments = [p for p in probes if p.kind == "segment"][:2]
    handles = [u.module.register_forward_hook(hook(u.name)) for u in model.units if u.name in
               {s.name for s in segments}]
    try:
        with torch.inference_mode():
            first, second = (s.make(2) for s in segments)
            first()
            second()
            assert seen[segments[1].name][0] == seen[segments[0].name][1]
            first()   # a new call writes a new tensor, which the next call of the second unit reads
            second()
            assert seen[segments[1].name][0] == seen[segments[0].name][1]
    finally:
        for h in handles:
            h.remove()


def test_paired_probes_are_timed_after_each_paired_probe():
    """A paired probe's ``after`` holds its time right after a call of each paired probe, by that probe's exit: a
    call after another probe's (sleeping 20 ms here) is told apart from one after its own (1 ms)."""
    last: list = [None]

    def path(name: str):
        def make(n: int):
            def call():
                time.sleep(1e-3 if last[0] in (None, name) else 20e-3)
                last[0] = name
            return call
        return Probe(f"path:{name}", "path", make, exit=name, alone=True, paired=True)

    log: list = []
    out = {it["name"]: it for it in measure([_probe(log, "a"), path("x"), path("y")], [1, 2], rounds=3,
                                            min_time=1e-9, max_repeats=1)}
    assert "after" not in out["a"]
    for this, other in (("x", "y"), ("y", "x")):
        after = out[f"path:{this}"]["after"]
        assert set(after) == {"x", "y"}
        assert 1e-3 <= after[this] < 20e-3 <= after[other]
