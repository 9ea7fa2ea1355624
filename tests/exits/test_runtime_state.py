"""The runtime on generic plans whose segments hand on more than one tensor: compaction, agreement with the dump."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from _runtime_fixtures import dump, make_export

from exits import attach_exits
from exits.data import TensorDataset
from exits.macs import unit_macs
from exits.runtime import ExitRuntime
from search.problem import ExitProblem

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

MODELS = {
    "densenet121": dict(growth_rate=8, block_config=(2, 2, 2, 2)),  # extra tensors carry the batch
    "pvt_v2_b0": {},  # the forward carries the batch size B as an int
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def setup(request, tmp_path_factory):
    torch.manual_seed(0)
    backbone = timm.create_model(request.param, num_classes=10, **MODELS[request.param])
    model = attach_exits(backbone, points="blocks", heads=("linear", "mlp"), input_size=(3, 32, 32))
    assert any(not s.out_spec.is_tensor for s in model.segments)
    g = torch.Generator().manual_seed(0)
    splits = {s: TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
              for s, n in (("search", 40), ("holdout", 48))}
    cache = dump(model, splits, tmp_path_factory.mktemp("rts") / "cache")
    return model, splits, cache


def test_runtime_with_a_multi_tensor_state_agrees_with_the_dump(setup):
    model, splits, cache = setup
    runtime = ExitRuntime(model, make_export(cache), cache=cache)
    x = splits["holdout"].images
    used = set()
    for config in runtime.configs:
        result = runtime.run(x, config)
        problem = ExitProblem(cache, "holdout", score=config.score)
        cfg = config  # the runtime's configuration is the search's type (contract.ExitConfig)
        exits = problem.assign(cfg)
        preds = np.asarray(cache.topk_ids("holdout"))[exits, 0, np.arange(len(exits))]
        np.testing.assert_array_equal(result.exits.numpy(), exits)
        np.testing.assert_array_equal(result.predictions.numpy(), preds)
        assert result.relative_cost == pytest.approx(problem.evaluate_one(cfg).relative_cost, rel=1e-12)
        used |= set(exits.tolist())
    assert len(used) >= 4  # samples left at several exits: the state was compacted mid-way


def test_macs_of_a_stateful_model_sum_to_the_whole(setup):
    from exits.macs import count_macs

    model, _, _ = setup
    macs = unit_macs(model)
    segments = sum(v for k, v in macs.items() if k.startswith("segment:"))
    assert segments == pytest.approx(count_macs(model.backbone, model.input_size), rel=1e-9)
    assert all(macs[u.name] > 0 for u in model.units if u.kind == "head")
