"""exits.validate_bundle with an onnx cost table: predicted against measured speed-up per configuration; an eager
table refused in one line (timing values are never asserted)."""
from __future__ import annotations

import json

import pytest
from _runtime_fixtures import fashion_dump, make_export

from data_cache.cost_tables import read_cost_table
from exits.export_bundle import main as export_main
from exits.profile import main as profile_main
from exits.validate_bundle import main as validate_main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle_time")
    model, ckpt, cache = fashion_dump(tmp)
    root = tmp / "fm"
    (tmp / "front.json").write_text(json.dumps(make_export(cache)))
    assert export_main(["--checkpoint", str(ckpt), "--config", str(tmp / "front.json"), "--cache", str(tmp / "cache"),
                        "--exporter", "torchscript", "--quiet", "--out", str(tmp / "bundle")]) == 0
    common = ["--cache", str(tmp / "cache"), "--batch-size", "4", "--rounds", "1", "--min-time", "1e-4", "--threads",
              "1", "--quiet"]
    assert profile_main(common + ["--runtime", "onnx", "--bundle", str(tmp / "bundle"), "--name", "ort-t1"]) == 0
    assert profile_main(common + ["--checkpoint", str(ckpt), "--name", "cpu-t1"]) == 0
    argv = ["--bundle", str(tmp / "bundle"), "--cache", str(tmp / "cache"), "--data-root", str(root),
            "--timing-samples", "8", "--no-latency", "--rounds", "1", "--quiet"]
    return tmp, cache, argv


def test_bundle_report_has_predicted_and_measured_speedups(setup, capsys):
    tmp, cache, argv = setup
    assert validate_main(argv + ["--cost-table", "ort-t1", "--report", str(tmp / "r.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp / "r.json").read_text())
    assert report["cost_table"]["fingerprint"] == read_cost_table(cache, "ort-t1").fingerprint
    assert report["cost_table"]["runtime"] == "onnx" and report["machine"]["ort_threads"] == 1
    for c in report["configs"]:
        assert c["predicted_speedup"] > 0 and c["measured_speedup"] > 0 and c["throughput_b64"]["batch_size"] == 4
        assert c["speedup_error"] == pytest.approx(c["predicted_speedup"] / c["measured_speedup"] - 1)
    assert report["time_prediction"]["n_timed"] == len(report["configs"]) and "t pred" in out


def test_an_eager_table_for_a_bundle_is_refused(setup, capsys):
    tmp, _, argv = setup
    assert validate_main(argv + ["--cost-table", "cpu-t1", "--report", str(tmp / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "profiled for the eager runtime" in err, err
    assert not (tmp / "x.json").exists()


def test_the_routers_per_batch_cost_is_its_run_less_its_graphs_and_final_scoring_in_one_call(setup, monkeypatch):
    import bundle._stages as bs
    from bundle.router import open_bundle
    from exits._profile_targets import onnx_probes

    tmp, _, _ = setup
    router = open_bundle(tmp / "bundle", threads=1)
    scored = []
    real = bs.scores_of
    monkeypatch.setattr(bs, "scores_of", lambda rule, out, *a: scored.append(len(out[0])) or real(rule, out, *a))
    collect = next(p for p in onnx_probes(router, 4, "max_prob") if p.kind == "collect")
    scored.clear()                            # building the probes scored every exit to place its cut
    collect.make(3)()
    assert scored == [3]                      # the base graph's output scored once, inside the timed call
    assert collect.alone and collect.derive({"base": 5e-3, "collect": 3e-3, "finish": 1e-3}) == pytest.approx(2e-3)


def test_a_bundle_of_an_export_searched_on_an_eager_table_is_validated_without_a_time_prediction(setup, capsys):
    """The table the export records is of the other runtime: one warning line, accuracy and MACs still checked, no
    predicted speed-up; naming that table explicitly stays refused."""
    from search.pareto import main as pareto_main

    tmp, _, argv = setup
    export, bundle = tmp / "front_time.json", tmp / "bundle_time"
    assert pareto_main([str(tmp / "cache"), "--methods", "dp", "--objective", "time", "--cost-table", "cpu-t1",
                        "--export", str(export), "--no-progress"]) == 0
    assert json.loads(export.read_text())["cost_table"]["name"] == "cpu-t1"
    assert export_main(["--checkpoint", str(tmp / "ckpt.pt"), "--config", str(export), "--cache", str(tmp / "cache"),
                        "--exporter", "torchscript", "--quiet", "--out", str(bundle)]) == 0
    capsys.readouterr()
    own = ["--bundle", str(bundle)] + argv[2:]
    assert validate_main(own + ["--report", str(tmp / "t.json")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    flagged = [ln for ln in err if "no time prediction" in ln]
    assert len(flagged) == 1 and flagged[0].startswith("warning: ") and "profiled for the eager runtime" in flagged[0]
    report = json.loads((tmp / "t.json").read_text())
    assert report["configs"] and all("predicted_speedup" not in c for c in report["configs"])
    assert validate_main(own + ["--cost-table", "cpu-t1", "--report", str(tmp / "u.json")]) == 2
    assert "profiled for the eager runtime" in capsys.readouterr().err


def test_rebatch_serves_the_bundle_re_batched_and_predicts_it(setup, capsys):
    from search.time_cost import TimeCostModel

    tmp, cache, argv = setup
    assert validate_main(argv + ["--cost-table", "ort-t1", "--rebatch", "--report", str(tmp / "rb.json")]) == 0
    assert "served re-batched" in capsys.readouterr().out
    report = json.loads((tmp / "rb.json").read_text())
    assert report["rebatch"] is True and report["cost_table"]["rebatch"] is True
    model = TimeCostModel.from_cache(cache, "ort-t1", rebatch=True)
    assert model.additive
    for c in report["configs"]:
        assert c["time"]["rebatch"] is True and c["throughput_b64"]["rebatch"] is True
        assert c["agreement"] >= 0.99 and c["measured_speedup"] > 0   # results back per row, in input order


def test_workers_time_the_bundle_and_its_base_graph_data_parallel(setup, capsys):
    tmp, _, argv = setup
    assert validate_main(argv + ["--workers", "3", "--report", str(tmp / "w.json")]) == 0
    assert "served on 3 workers of one thread each" in capsys.readouterr().out
    report = json.loads((tmp / "w.json").read_text())
    assert report["workers"] == 3 and report["rebatch"] is False
    for c in report["configs"]:
        assert c["throughput_b64"]["workers"] == 3 and c["agreement"] >= 0.99 and c["throughput_b64"]["speedup"] > 0
        assert c["throughput_b64"]["rebatch"] is False              # data-parallel, not re-batched
    assert validate_main(argv + ["--workers", "2", "--cost-table", "ort-t1", "--report", str(tmp / "wt.json")]) == 0
    assert "warning: --workers 2: the predicted speed-up is the 1-thread cost table's" in capsys.readouterr().err
    assert all("predicted_speedup" in c for c in json.loads((tmp / "wt.json").read_text())["configs"])
    assert validate_main(argv + ["--workers", "2", "--threads", "2", "--report", str(tmp / "w2.json")]) == 2
    assert "--workers 2 runs one intra-op thread per worker" in capsys.readouterr().err
    assert not (tmp / "w2.json").exists()


def test_a_chosen_configurations_bundle_runs_fused_is_profiled_and_validated_and_never_searched_on(setup, capsys):
    """The bundle of one configuration runs every enabled head inside its segment graph; its own profile predicts
    it in the validation, and a search on that profile is refused in one line (it cannot time other
    configurations)."""
    from search.pareto import main as pareto_main

    tmp, cache, argv = setup
    doc = json.loads((tmp / "front.json").read_text())
    (tmp / "one.json").write_text(json.dumps({**doc, "configs": [next(c for c in doc["configs"]
                                                                      if len(c["exits"]) >= 2)]}))
    bundle = tmp / "bundle_one"
    assert export_main(["--checkpoint", str(tmp / "ckpt.pt"), "--config", str(tmp / "one.json"), "--cache",
                        str(tmp / "cache"), "--exporter", "torchscript", "--quiet", "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {e["graph"] for e in manifest["exits"]} <= {g["name"] for g in manifest["graphs"] if g["kind"] == "segment"}
    assert profile_main(["--cache", str(tmp / "cache"), "--batch-size", "4", "--rounds", "1", "--min-time", "1e-4",
                         "--threads", "1", "--quiet", "--runtime", "onnx", "--bundle", str(bundle),
                         "--name", "ort-one"]) == 0
    own = ["--bundle", str(bundle)] + argv[2:]
    assert validate_main(own + ["--cost-table", "ort-one", "--report", str(tmp / "one_report.json")]) == 0
    report = json.loads((tmp / "one_report.json").read_text())
    assert [c["predicted_speedup"] > 0 and c["measured_speedup"] > 0 for c in report["configs"]] == [True]
    capsys.readouterr()
    assert pareto_main([str(tmp / "cache"), "--methods", "dp", "--objective", "time", "--cost-table", "ort-one",
                        "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "times the exits that bundle serves" in err and "graphs of their own" in err, err


def test_validation_runs_every_image_through_the_batch_1_graph_too(setup, capsys, monkeypatch):
    """A bundle with a batch-1 graph: the report says how many images the one-image calls answered as the batches
    did (every one), and the table at batch 1 predicts it from its path items."""
    tmp, cache, argv = setup
    doc = json.loads((tmp / "front.json").read_text())
    entry = next(c for c in doc["configs"] if len(c["exits"]) >= 2)
    (tmp / "b1.json").write_text(json.dumps({**doc, "configs": [entry]}))
    bundle = tmp / "bundle_b1"
    assert export_main(["--checkpoint", str(tmp / "ckpt.pt"), "--config", str(tmp / "b1.json"), "--cache",
                        str(tmp / "cache"), "--exporter", "torchscript", "--quiet", "--out", str(bundle)]) == 0
    assert json.loads((bundle / "manifest.json").read_text())["graphs"][-1]["kind"] == "chain"
    from bundle.router import BundleRouter

    monkeypatch.setattr(BundleRouter, "_chain_is_faster", lambda self: True)  # the profile's router takes it
    assert profile_main(["--cache", str(tmp / "cache"), "--batch-size", "1", "--rounds", "1", "--min-time", "1e-4",
                         "--threads", "1", "--quiet", "--runtime", "onnx", "--bundle", str(bundle),
                         "--name", "ort-b1"]) == 0
    assert read_cost_table(cache, "ort-b1").of_kind("path")
    own = ["--bundle", str(bundle)] + argv[2:]
    capsys.readouterr()
    assert validate_main(own + ["--cost-table", "ort-b1", "--report", str(tmp / "b1_report.json")]) == 0
    out = capsys.readouterr().out
    (c,) = json.loads((tmp / "b1_report.json").read_text())["configs"]
    one = c["batch1_graph"]
    assert one["images"] > 0 and one["same_exit_and_prediction_as_batches"] == one["images"]
    assert c["predicted_speedup"] > 0 and "one image at a time (the batch-1 graph)" in out
