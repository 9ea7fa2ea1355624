"""``python -m exits.profile --runtime onnx``: a bundle's graphs timed; the router's sessions never spin and share
one arena."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _bundles import resnet_setup
from _runtime_fixtures import dump, tiny_model, tiny_splits

from bundle import open_bundle
from bundle.router import BundleRouter
from data_cache.cost_tables import read_cost_table
from exits._profile_targets import onnx_probes
from exits.export_bundle import export_bundle
from exits.profile import main
from search._validation import SearchError
from search.config import ExitConfig
from search.learned import config_params
from search.problem import ExitProblem
from search.time_cost import TimeCostModel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile_onnx")
    model, _, cache, doc, bundle = resnet_setup(tmp)
    args = ["--cache", str(tmp / "cache"), "--runtime", "onnx", "--bundle", str(bundle), "--batch-size", "4",
            "--rounds", "1", "--min-time", "1e-4", "--threads", "1", "--quiet"]
    assert main(args + ["--name", "ort-t1"]) == 0
    return tmp, cache, doc, bundle, args


def test_the_table_times_every_graph_and_every_served_exit(setup):
    tmp, cache, doc, bundle, _ = setup
    table = read_cost_table(cache, "ort-t1", batch_size=4)
    manifest = json.loads((bundle / "manifest.json").read_text())
    graphs = {g["name"]: tuple(g["units"]) for g in manifest["graphs"] if g["kind"] != "base"}
    assert {it.name: it.units for it in table.of_kind("graph")} == graphs
    assert sorted(it.exit for it in table.of_kind("step")) == sorted(e["name"] for e in manifest["exits"])
    assert table.target["runtime"] == "onnx" and table.target["bundle"]["fingerprint"] == manifest["fingerprint"]
    assert table.model_fingerprint == manifest["model"]["fingerprint"]


def test_every_configuration_of_the_bundle_gets_a_time(setup):
    _, cache, doc, _, _ = setup
    for entry in doc["configs"]:
        cfg = ExitConfig.from_json(entry["exits"], cache, doc.get("score", "max_prob"))
        # a learned rule (gate) scores with the params the configuration carries, never refitted
        leave = ExitProblem(cache, "holdout", score=cfg.score, rules=cfg.rule_set,
                            params=config_params([cfg])).assign(cfg)
        est = TimeCostModel.from_cache(cache, "ort-t1").estimate(cfg.exits, leave)
        assert est.time_per_sample_s > 0 and est.base_time_per_sample_s > 0


def test_a_bundle_of_another_cache_is_refused(setup, capsys, tmp_path):
    _, _, _, bundle, args = setup
    other = dump(tiny_model(), tiny_splits(seed=3), tmp_path / "other")
    argv = [a if a != args[1] else str(tmp_path / "other") for a in args] + ["--name", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "exported for cache" in err and other.fingerprint[:19] in err


@pytest.mark.parametrize("threads", [1, 2, None])
def test_router_sessions_never_spin_and_share_one_arena(setup, threads):
    """Idle sessions do not spin; every session draws from the process's one CPU arena (a second router in the
    same process too), so a stage's graph runs in the memory the graph before it freed."""
    for router in (open_bundle(setup[3], threads=threads), open_bundle(setup[3], threads=threads)):
        for g in router.graphs.values():
            options = g.session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
            assert options.get_session_config_entry("session.use_env_allocators") == "1"
        x = np.random.default_rng(0).standard_normal((3, *router.manifest.input_shape)).astype(np.float32)
        assert len(router.run(x).predictions) == 3


def test_a_fused_exit_is_timed_inside_its_segment_graph(setup, tmp_path, monkeypatch):
    """A bundle of one configuration runs each enabled head inside its segment graph: the table times those graphs
    (their units include the head), has no head graph of its own, and predicts that configuration; a configuration
    that does not enable a fused exit cannot be predicted from it."""
    tmp, cache, doc, _, args = setup
    model = tiny_model()  # the fixture's model: tiny_model is seeded
    entry = next(c for c in doc["configs"] if len(c["exits"]) == 2 and c["id"].startswith("max_prob"))
    export_bundle(model, doc, tmp_path / "fused", cache=cache, ids=[entry["id"]], exporter="torchscript")
    argv = [a if a != args[5] else str(tmp_path / "fused") for a in args] + ["--name", "fused-t1"]
    monkeypatch.setattr(BundleRouter, "_chain_is_faster", lambda self: True)  # the router takes its batch-1 graph
    assert main(argv) == 0
    table = read_cost_table(cache, "fused-t1", batch_size=4)
    manifest = json.loads((tmp_path / "fused" / "manifest.json").read_text())
    assert not [g for g in manifest["graphs"] if g["kind"] == "head"]
    fused = {e["name"]: e["graph"] for e in manifest["exits"]}
    units = {it.name: it.units for it in table.of_kind("graph")}
    assert all(f"head:{name}" in units[graph] for name, graph in fused.items())
    model_t = TimeCostModel.from_cache(cache, "fused-t1")
    cfg = ExitConfig.from_json(entry["exits"], cache, "max_prob")
    leave = ExitProblem(cache, "holdout").assign(cfg)
    assert model_t.estimate(cfg.exits, leave).time_per_sample_s > 0
    # its batch-1 graph: one path per exit a row can leave at, what the model charges at batch 1
    finals = [e.name for e in cache.exits if e.final]
    assert [it.exit for it in table.of_kind("path")] == [*fused, *finals]
    at_one = TimeCostModel.from_cache(cache, "fused-t1", batch_size=1).estimate(cfg.exits, leave, cfg.rule_names)
    assert sorted(at_one.items) == sorted(it.name for it in table.of_kind("path"))
    router = open_bundle(tmp_path / "fused", threads=1, one_graph=True)
    paths = [p for p in onnx_probes(router, 4, "max_prob") if p.kind == "path"]
    assert len(paths) == len(fused) + 1 and all(p.alone for p in paths)  # timed as a server calls it, not swept
    exits_ = {it.exit for it in table.of_kind("path")}
    assert all(p.paired for p in paths) and all(set(it.after) == exits_ for it in table.of_kind("path"))
    one = ExitConfig(cfg.exits[1:], cfg.thresholds[1:])
    with pytest.raises(SearchError, match="profile a bundle cut at its exits"):
        model_t.estimate(one.exits, ExitProblem(cache, "holdout").assign(one))
