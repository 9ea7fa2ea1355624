"""Issue 18: ``ExitRuntime`` and ``BundleRouter`` answer the same calls with the same meaning: ``run``,
``run_batches`` (plain, re-batching, on several workers), ``select`` (budget and certified drop), ``set_config``,
``configs``, ``config``; the same refusals in the same words."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _runtime_fixtures import certify, dump, make_export, tiny_model, tiny_splits

from bundle import open_bundle
from exits.export_bundle import export_bundle
from exits.runtime import ExitRuntime


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("align")
    model, splits = tiny_model(), tiny_splits()
    cache = dump(model, splits, tmp / "cache")
    doc = make_export(cache)
    for i in range(2):
        certify(cache, doc, i)
    export_bundle(model, doc, tmp / "bundle", cache=cache, exporter="torchscript")
    return ExitRuntime(model, doc, cache=cache), open_bundle(tmp / "bundle"), splits["holdout"].images


def _np(a) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _same(a, b) -> None:
    for f in ("exits", "predictions", "macs"):
        np.testing.assert_array_equal(_np(getattr(a, f)), _np(getattr(b, f)))


def test_the_same_methods_and_tables(sides):
    runtime, router, _ = sides
    for name in ("run", "run_batches", "select", "set_config", "configs", "config", "ids", "base_config"):
        assert hasattr(runtime, name) and hasattr(router, name), name
    assert runtime.configs == router.configs and runtime.ids == router.ids
    assert runtime.config.id == router.config.id == "base"   # a table starts on the base model


def test_the_same_choices(sides):
    runtime, router, _ = sides
    for side in (runtime, router):
        side.set_config(1)
    assert runtime.config.id == router.config.id == runtime.ids[1]
    costs = sorted(c.relative_cost() for c in runtime.configs if c.relative_cost() is not None)
    for budget in costs:
        assert runtime.select(budget).id == router.select(budget).id == router.config.id
    drops = sorted((c.certificate or {}).get("certified_drop") or 1.0 for c in runtime.configs)
    for points in (100 * drops[0], 100 * drops[1]):
        assert runtime.select(max_drop=points).id == router.select(max_drop=points).id
    assert runtime.set_config(None) == router.set_config(None) == runtime.base_config


@pytest.mark.parametrize("call,match", [(lambda s: s.select(), "exactly one of budget= and max_drop="),
                                        (lambda s: s.select(max_drop=0.005), "max_drop: .*looks like a fraction"),
                                        (lambda s: s.select(budget=-1.0), "no configuration within relative cost"),
                                        (lambda s: s.set_config(99), "config index 99 out of range"),
                                        (lambda s: s.set_config("nope"), "no configuration with id 'nope'"),
                                        (lambda s: s.run_batches([], batch_size=0), "batch_size must be"),
                                        (lambda s: s.run_batches([], workers=0), "workers must be an integer >= 1"),
                                        (lambda s: s.run_batches([], workers=2.0), "workers must be an integer")])
def test_the_same_refusals(sides, call, match):
    runtime, router, _ = sides
    for side in (runtime, router):
        with pytest.raises(ValueError, match=match):
            call(side)


@pytest.mark.parametrize("rebatch", [False, True])
def test_the_same_runs_plain_and_rebatched(sides, rebatch):
    runtime, router, x = sides
    for c in runtime.ids:
        whole = runtime.run(x, c)
        _same(router.run(x.numpy(), c), whole)
        batches = [x[i:i + 8] for i in range(0, len(x), 8)]
        got_t = runtime.run_batches([(b, None) for b in batches], c, rebatch=rebatch)
        got_r = router.run_batches([b.numpy() for b in batches], c, rebatch=rebatch, batch_size=8)
        _same(got_t, whole)
        _same(got_r, whole)
        np.testing.assert_allclose(_np(got_t.scores), _np(whole.scores), atol=1e-6)


@pytest.mark.parametrize("rebatch", [False, True])
def test_several_workers_give_every_row_its_single_worker_result_in_input_order(sides, rebatch):
    runtime, router, x = sides
    sizes = [7, 8, 1, 8, 0, 8, 5]                                   # uneven, a one-row and an empty batch
    cuts = np.cumsum([0] + sizes)
    batches = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for c in runtime.ids:
        whole = runtime.run(x[:cuts[-1]], c)
        for workers in (2, 3, 16):                                   # more workers than batches too
            got_t = runtime.run_batches(iter(batches), c, rebatch=rebatch, batch_size=8, workers=workers)
            got_r = router.run_batches((b.numpy() for b in batches), c, rebatch=rebatch,   # a stream, read as it goes
                                       batch_size=None if workers == 2 else 8, workers=workers)
            _same(got_t, whole)
            _same(got_r, whole)
            np.testing.assert_allclose(_np(got_t.scores), _np(whole.scores), atol=1e-6)
    assert len(runtime.run_batches([], workers=2).exits) == len(router.run_batches([], workers=2).exits) == 0


def test_run_loader_is_a_deprecated_name_of_run_batches(sides):
    runtime, _, x = sides
    with pytest.warns(DeprecationWarning, match="use run_batches"):
        old = runtime.run_loader([x[:5], x[5:]])
    _same(old, runtime.run(x))
