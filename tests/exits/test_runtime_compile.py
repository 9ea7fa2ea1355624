"""``ExitRuntime(compile=True)``: each stage one compiled graph, decisions as the eager runtime makes them (and the
cache), one-row batches and partner rules included, with no stage left to run eagerly past dynamo's recompile limit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _runtime_fixtures import make_export, tiny_dumped
from torch._dynamo.utils import counters

from exits.runtime import ExitRuntime

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_dumped(tmp_path_factory.mktemp("compiled"), n_holdout=32)


def test_compiled_stages_decide_as_the_eager_runtime(setup, monkeypatch):
    model, splits, cache = setup
    doc = make_export(cache, rules=("max_prob", "agree"))   # partner heads handed on and run inside stages
    eager = ExitRuntime(model, doc, cache=cache)
    torch._dynamo.reset()
    counters.clear()
    # a stage compiles a few graphs (its first shape, then dynamic, one row); the table has more stages than that
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 4)
    compile_ = torch.compile   # dynamo's tracing, guards and limits as compiled; no code generated (minutes here)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", **kw))
    compiled = ExitRuntime(model, doc, cache=cache, compile=True)
    x = splits["holdout"].images
    stages = [s for c in compiled.configs for s in compiled._stages_of(c)]
    assert len(stages) > 8 and all(s.units.compiled is not None for s in stages)
    for config in compiled.configs:
        want, got = eager.run(x, config), compiled.run(x, config)
        np.testing.assert_array_equal(got.exits.numpy(), want.exits.numpy())
        np.testing.assert_array_equal(got.predictions.numpy(), want.predictions.numpy())
        np.testing.assert_allclose(got.scores.numpy(), want.scores.numpy(), rtol=1e-5, atol=1e-6)
        assert got.relative_cost == pytest.approx(want.relative_cost, rel=1e-12)
        again = compiled.run_batches(x.split(8), config, rebatch=True)   # stages on rows gathered from batches
        np.testing.assert_array_equal(again.exits.numpy(), want.exits.numpy())
        for i in (0, 5):   # one row at a time: the one-row path calls the same compiled stages
            one = compiled.run(x[i:i + 1], config)
            assert int(one.exits[0]) == int(want.exits[i])
            assert int(one.predictions[0]) == int(want.predictions[i])
    # every stage traced whole (no graph break), none run eagerly for want of a cache entry of its own
    assert counters["frames"]["ok"] == counters["frames"]["total"]
    assert counters["stats"]["unique_graphs"] >= len(stages)
    assert not counters["unimplemented"] and not counters["graph_break"]
    np.testing.assert_allclose(compiled.base_forward(x).numpy(), eager.base_forward(x).numpy(), rtol=1e-4,
                               atol=1e-5)


def test_the_eager_runtime_compiles_nothing(setup):
    model, _, cache = setup
    runtime = ExitRuntime(model, make_export(cache), cache=cache)
    assert all(s.units.compiled is None for c in runtime.configs for s in runtime._stages_of(c))
