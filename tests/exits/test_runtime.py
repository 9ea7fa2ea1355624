"""ExitRuntime: agreement with the cache, compaction, MACs really spent, switching, refusals."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from _runtime_fixtures import certify, dump, make_export, tiny_dumped, tiny_model, tiny_splits
from torch.utils.flop_counter import FlopCounterMode

from contract import float32_cut
from exits.runtime import ExitRuntime, RuntimeConfigError, exit_scores
from search import SearchWarning
from search.problem import ExitProblem

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_dumped(tmp_path_factory.mktemp("rt"))


def _expected(cache, config, split="holdout"):
    problem = ExitProblem(cache, split, score=config.score)
    cfg = config  # the runtime's configuration is the search's type (contract.ExitConfig)
    exits = problem.assign(cfg)
    preds = np.asarray(cache.topk_ids(split))[exits, 0, np.arange(len(exits))]
    return exits, preds, problem.evaluate_one(cfg)


@pytest.mark.parametrize("score", ["max_prob", "margin", "neg_entropy"])
def test_agreement_with_cache_and_macs_equal_prediction(setup, score):
    model, splits, cache = setup
    runtime = ExitRuntime(model, make_export(cache, score), cache=cache)
    x = splits["holdout"].images
    n_exits_used = set()
    for config in runtime.configs:
        result = runtime.run(x, config)
        exits, preds, ev = _expected(cache, config)
        np.testing.assert_array_equal(result.exits.numpy(), exits)
        np.testing.assert_array_equal(result.predictions.numpy(), preds)
        assert result.relative_cost == pytest.approx(ev.relative_cost, rel=1e-12)
        assert result.relative_cost == pytest.approx(config.relative_cost("holdout"), rel=1e-12)
        n_exits_used |= set(exits.tolist())
    assert len(n_exits_used) >= 4  # samples really leave at several exits


def test_scores_computed_as_the_cache_stores_them(setup):
    model, splits, cache = setup
    x = splits["holdout"].images
    with torch.inference_mode():
        logits = model.forward_exits(x)
    probs = np.asarray(cache.topk_probs("holdout"))
    for i, z in enumerate(logits):
        s, p = exit_scores(z, "max_prob")
        np.testing.assert_array_equal(s.numpy(), probs[i, 0])
        np.testing.assert_array_equal(p.numpy(), np.asarray(cache.topk_ids("holdout"))[i, 0])
        m, _ = exit_scores(z, "margin")
        np.testing.assert_array_equal(m.numpy(), probs[i, 0] - probs[i, 1])


def test_float32_cut_decides_every_float32_score_as_the_float64_comparison():
    rng = np.random.default_rng(0)
    thresholds = np.concatenate([rng.uniform(0, 1, 300), rng.uniform(-2.3, 0, 100),
                                 rng.uniform(0, 1, 100).astype(np.float32).astype(np.float64), [0.0, 1.0, -0.0]])
    for t in thresholds:
        cut = float32_cut(float(t))
        assert float(np.float32(cut)) == cut <= t
        near = np.float32(t) + np.arange(-3, 4, dtype=np.float32) * np.spacing(np.float32(t))
        scores = np.concatenate([near, rng.uniform(-2.3, 1, 20).astype(np.float32)])
        assert np.array_equal(torch.from_numpy(scores) > cut, scores.astype(np.float64) > t)


def test_a_sample_alone_equals_the_sample_in_a_batch(setup):
    model, splits, cache = setup
    runtime = ExitRuntime(model, make_export(cache), cache=cache)
    x = splits["holdout"].images[:12]
    for config in runtime.configs:
        batch = runtime.run(x, config)
        for i in range(len(x)):
            alone = runtime.run(x[i:i + 1], config)
            assert int(alone.exits[0]) == int(batch.exits[i])
            assert int(alone.predictions[0]) == int(batch.predictions[i])
            assert float(alone.scores[0]) == pytest.approx(float(batch.scores[i]), abs=1e-6)
            assert float(alone.macs[0]) == float(batch.macs[i])


def test_flops_counted_during_the_run_equal_the_accounted_macs(setup):
    model, splits, cache = setup
    runtime = ExitRuntime(model, make_export(cache), cache=cache)
    x = splits["holdout"].images
    for config in runtime.configs:
        with FlopCounterMode(display=False) as counter:
            result = runtime.run(x, config)
        assert counter.get_total_flops() / 2 == pytest.approx(float(result.macs.sum()), rel=1e-9)
    with FlopCounterMode(display=False) as counter:
        runtime.base_forward(x)
    assert counter.get_total_flops() / 2 / len(x) == pytest.approx(runtime.base_macs, rel=1e-9)


def test_disabled_heads_never_run(setup):
    model, splits, cache = setup
    runtime = ExitRuntime(model, make_export(cache), cache=cache)
    config = runtime.configs[0]
    calls: dict[str, int] = {}
    hooks = [head.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls.get(k, 0) + 1))
             for k, head in model.heads.items()]
    try:
        runtime.run(splits["holdout"].images, config)
    finally:
        for h in hooks:
            h.remove()
    assert set(calls) == {model.exits[e].key for e in config.exits}


def test_switching_and_selecting_by_budget(setup):
    model, splits, cache = setup
    doc = make_export(cache)
    runtime = ExitRuntime(model, doc, cache=cache)
    assert runtime.config.id == "base" and runtime.ids == [c["id"] for c in doc["configs"]]
    x = splits["holdout"].images
    seen = {}
    for cid in runtime.ids:
        runtime.set_config(cid)
        seen[cid] = runtime.run(x).exits.numpy()
        assert runtime.config.id == cid
    assert len({tuple(v) for v in seen.values()}) == len(seen)
    runtime.set_config(0)
    np.testing.assert_array_equal(runtime.run(x, runtime.ids[-1]).exits.numpy(), seen[runtime.ids[-1]])
    assert runtime.config.id == runtime.ids[0]  # run(config=...) does not switch
    budget = sorted(c["search"]["relative_cost"] for c in doc["configs"])[1] + 1e-9
    chosen = runtime.select(budget)
    fits = [c for c in doc["configs"] if c["search"]["relative_cost"] <= budget]
    assert chosen.id == max(fits, key=lambda c: (c["search"]["accuracy"], -c["search"]["relative_cost"]))["id"]
    assert runtime.config is chosen
    with pytest.raises(RuntimeConfigError, match="no configuration within"):
        runtime.select(0.01)
    runtime.set_config(None)
    assert runtime.run(x).exits.eq(len(model.exits) - 1).all()


def test_selecting_by_certified_drop(setup):
    model, _, cache = setup
    doc = make_export(cache)
    drops = [certify(cache, doc, i) for i in range(2)]
    runtime = ExitRuntime(model, doc, cache=cache)
    assert runtime.verification.n_certificates == 2
    cheaper = min(doc["configs"][:2], key=lambda c: c["search"]["relative_cost"])
    points = [round(100 * d, 6) for d in drops]                  # select takes points, certificates fractions
    assert runtime.select(max_drop=max(points)).id == cheaper["id"]
    safer = doc["configs"][int(np.argmin(drops))]["id"]
    if drops[0] != drops[1]:
        assert runtime.select(max_drop=min(points)).id == safer and runtime.config.id == safer
    with pytest.raises(RuntimeConfigError, match=rf"certified drops \(points\): \[{min(points)}, {max(points)}\]"):
        runtime.select(max_drop=min(points) / 2)
    with pytest.raises(RuntimeConfigError, match="exactly one"):
        runtime.select(0.5, max_drop=1.0)
    with pytest.raises(RuntimeConfigError, match="holds no drop certificate"):
        ExitRuntime(model, make_export(cache), cache=cache).select(max_drop=1.0)


@pytest.mark.parametrize("drop,match", [(0.005, "looks like a fraction.*pass 0.5"), (50, "50 points is above 20"),
                                        (-1, "number of points >= 0"), (float("nan"), "number of points")])
def test_a_drop_in_the_other_unit_is_refused(setup, drop, match):
    model, _, cache = setup
    with pytest.raises(RuntimeConfigError, match=f"max_drop: .*{match}"):
        ExitRuntime(model, make_export(cache), cache=cache).select(max_drop=drop)


def test_an_edited_certificate_or_number_is_refused_before_select(setup):
    """Regression (issue 20): select(max_drop=0.005) returned a configuration losing 30 points because its
    certificate had been edited; now the table is recomputed from the cache and the edit refused."""
    model, _, cache = setup
    doc = make_export(cache)
    certify(cache, doc, 2)
    lossy = copy.deepcopy(doc)
    lossy["configs"][2]["certificate"]["certified_drop"] = 0.005
    cid = lossy["configs"][2]["id"]
    _refused(model, lossy, rf"configs\[2\] \(id '{cid}'\): certificate.certified_drop: 0.005 does not reproduce",
             cache=cache)
    edited = copy.deepcopy(doc)
    edited["configs"][0]["search"]["accuracy"] = 1.0
    _refused(model, edited, r"configs\[0\] .*: search.accuracy: 1 does not reproduce: the cache gives", cache=cache)
    wrong = copy.deepcopy(doc)
    wrong["configs"][2]["certificate"]["delta"] = "0.1"
    _refused(model, wrong, r"configs\[2\].certificate.delta: must be a number in \(0, 0.5\]",
             cache_fingerprint=cache.fingerprint)
    with pytest.warns(SearchWarning, match="unverified: without the cache"):
        runtime = ExitRuntime(model, doc, cache_fingerprint=cache.fingerprint)
    assert runtime.verification is None


def test_single_configuration_is_active_at_once(setup):
    model, _, cache = setup
    doc = make_export(cache)
    doc["configs"] = doc["configs"][1:2]
    assert ExitRuntime(model, doc, cache_fingerprint=cache.fingerprint).config.id == doc["configs"][0]["id"]


def test_config_file_round_trip(setup, tmp_path):
    model, splits, cache = setup
    doc = make_export(cache)
    path = tmp_path / "front.json"
    path.write_text(json.dumps(doc))
    runtime = ExitRuntime(model, path, cache=cache.path if hasattr(cache, "path") else cache)
    assert runtime.ids == [c["id"] for c in doc["configs"]]


def _refused(model, doc, match, **kwargs):
    with pytest.raises(RuntimeConfigError, match=match) as info:
        ExitRuntime(model, doc, **kwargs)
    assert "\n" not in str(info.value)


def test_refusals(setup, tmp_path):
    model, splits, cache = setup
    doc = make_export(cache)
    _refused(tiny_model(seed=1), doc, "configuration is for model", cache=cache)
    _refused(model, doc, "cannot be checked")
    _refused(model, doc, "not on the expected cache", cache_fingerprint="sha256:" + "0" * 64)
    other = copy.deepcopy(doc)
    other["cache"]["fingerprint"] = "sha256:" + "1" * 64
    _refused(model, other, "not on the given cache", cache=cache)
    bad = copy.deepcopy(doc)
    bad["configs"][0]["exits"][0]["name"] = "layer9.0/linear"
    _refused(model, bad, "is not an exit of this model", cache=cache)
    bad = copy.deepcopy(doc)
    bad["configs"][0]["exits"][0]["threshold"] = 1.5
    _refused(model, bad, r"threshold: 1.5 outside \[0, 1\]", cache=cache)
    bad = copy.deepcopy(doc)
    for d in bad["configs"][0]["exits"]:
        d["score"] = "confidence"
    _refused(model, bad, "unknown score kind", cache=cache)
    bad = copy.deepcopy(doc)
    bad["configs"][0]["exits"][0]["position"] += 1
    _refused(model, bad, "is at position", cache=cache)
    # same backbone, retrained heads: the cache was dumped from other heads
    retrained = tiny_model()
    with torch.no_grad():
        next(iter(retrained.heads.values())).fc.weight.add_(1.0)
    _refused(retrained, doc, "other heads weights", cache=cache)
    with pytest.raises(RuntimeConfigError, match="no such configuration file"):
        ExitRuntime(model, tmp_path / "missing.json", cache=cache)
    # a document given as a mapping is checked like a file (regression: a KeyError traceback without 'configs')
    bad = copy.deepcopy(doc)
    del bad["configs"]
    _refused(model, bad, "'configs' must be a list of configuration objects", cache=cache)
    _refused(model, {"configs": []}, r"configs: format: None is not 'exitconfig/1'", cache=cache)


def test_saver_runs_first_and_releases_samples(tmp_path):
    model = tiny_model(heads=("linear",), saver="resnet10t")
    splits = tiny_splits(24, 32)
    cache = dump(model, splits, tmp_path / "cache")
    problem = ExitProblem(cache, "holdout")
    saver = cache.exit_index("saver")
    late = next(i for i, e in enumerate(cache.exits) if e.name == "layer3.0/linear")
    t0 = float(np.median(problem.scores[saver]))
    doc = make_export(cache)
    doc["configs"] = [{"id": "saver", "exits": [
        {"name": "saver", "position": cache.exits[saver].position, "head": "saver", "score": "max_prob",
         "threshold": t0},
        {"name": "layer3.0/linear", "position": cache.exits[late].position, "head": "linear", "score": "max_prob",
         "threshold": float(np.median(problem.scores[late]))}]}]
    runtime = ExitRuntime(model, doc, cache=cache)
    x = splits["holdout"].images
    result = runtime.run(x)
    exits, preds, ev = _expected(cache, runtime.config)
    np.testing.assert_array_equal(result.exits.numpy(), exits)
    np.testing.assert_array_equal(result.predictions.numpy(), preds)
    assert result.relative_cost == pytest.approx(ev.relative_cost, rel=1e-12) and result.relative_cost > 0
    with FlopCounterMode(display=False) as counter:
        runtime.run(x)
    assert counter.get_total_flops() / 2 == pytest.approx(float(result.macs.sum()), rel=1e-9)


def test_the_exports_objective_is_read_and_an_unknown_one_refused(setup):
    model, splits, cache = setup
    doc = make_export(cache)
    assert ExitRuntime(model, doc, cache=cache).objective == doc.get("objective", "macs") == "macs"
    relabelled = {**doc, "objective": "latency"}
    with pytest.warns(SearchWarning, match="unverified"):
        assert ExitRuntime(model, relabelled, cache_fingerprint=cache.fingerprint).objective == "latency"
    # with the cache at hand the MACs numbers relabelled as latency are recomputed, and cannot be
    _refused(model, relabelled, "objective 'latency' needs measured latency for every unit", cache=cache)
    _refused(model, {**doc, "objective": "flops"}, r"configs: objective: unknown objective 'flops': this version "
                                                   r"knows the cost models \['macs', 'latency'", cache=cache)


def test_every_stage_hands_on_a_dense_state_and_the_profile_times_segments_on_it():
    """A ViT's patch embedding hands on a transposed view (``flatten(2).transpose(1, 2)``) that every residual add
    keeps. The runtime's stages hand on dense rows at batch 1 and when no row left, as a compaction writes them, so
    a segment runs on one layout either way, and the profile times it on that layout."""
    import timm

    from contract import ExitConfig
    from exits import attach_exits
    from exits._profile_targets import eager_probes

    torch.manual_seed(0)
    backbone = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, depth=3,
                                 class_token=False, global_pool="avg")
    model = attach_exits(backbone, points="blocks", heads="linear", input_size=(3, 32, 32)).eval()
    with torch.inference_mode():
        assert not model.segments[0](torch.randn(2, 3, 32, 32)).is_contiguous()   # the view timm's forward keeps
    rt = ExitRuntime(model, check_inputs=False)
    dense: list[bool] = []
    hooks = [s.register_forward_pre_hook(lambda m, args: dense.append(args[0].is_contiguous()))
             for s in model.segments[1:]]
    nobody_leaves = ExitConfig((0, 1), (1.0, 1.0), "max_prob")
    for n in (1, 3):
        dense.clear()
        rt.run(torch.randn(n, 3, 32, 32), nobody_leaves)
        assert dense == [True] * (len(model.segments) - 1), n
    first, second = [p for p in eager_probes(rt, 4, "max_prob") if p.kind == "segment"][:2]
    dense.clear()
    with torch.inference_mode():
        first.make(4)()
        second.make(4)()
    assert dense == [True]
    for h in hooks:
        h.remove()
