"""python -m exits.validate: report fields, full agreement on a small model, refusals with exit status 2."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _runtime_fixtures import certify, make_export, tiny_model

from data_cache import open_cache
from exits.checkpoints import save_checkpoint
from exits.data import load_splits, write_idx
from exits.dump import dump_cache, dump_provenance
from exits.validate import main


def _fashion_files(root: Path, n_train: int = 60, n_test: int = 30) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root



pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate")
    root = _fashion_files(tmp / "fm")
    model = tiny_model()
    data = {"dataset": "fashion_mnist", "search_fraction": 0.3, "seed": 0}
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, include_backbone=True, data=data)
    splits = load_splits("fashion_mnist", root, data_config=model.data_config, search_fraction=0.3, seed=0,
                         calibration_size=12)
    prov = dump_provenance(model, data_config=model.data_config, dataset="fashion_mnist",
                           split_parameters=splits.parameters, seed=0)
    cache = dump_cache(model, splits.cache_splits(), tmp / "cache", k=3, batch_size=16,
                       split_definitions=splits.definitions, provenance=prov)
    doc = make_export(cache)
    (tmp / "front.json").write_text(json.dumps(doc))
    base = ["--checkpoint", str(ckpt), "--dataset", "fashion_mnist", "--data-root", str(root), "--split", "holdout",
            "--cache", str(tmp / "cache"), "--timing-samples", "16", "--latency-samples", "3", "--rounds", "1",
            "--quiet"]
    return tmp, base, doc


def test_report_agrees_with_the_cache(setup, capsys):
    tmp, base, doc = setup
    code = main(["--config", str(tmp / "front.json"), "--all", "--report", str(tmp / "r.json"),
                 "--plot", str(tmp / "r.png")] + base)
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp / "r.json").read_text())
    assert report["format"] == "exitvalidation/1" and report["n_samples"] == 30
    assert [c["id"] for c in report["configs"]] == [c["id"] for c in doc["configs"]]
    for c, want in zip(report["configs"], doc["configs"], strict=True):
        assert c["agreement"] == 1.0 and c["n_disagree"] == 0
        assert c["predicted"]["accuracy"] == want["holdout"]["accuracy"]
        assert c["measured"]["accuracy"] == pytest.approx(want["holdout"]["accuracy"], abs=1e-12)
        assert c["measured"]["relative_cost"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-9)
        assert c["measured"]["relative_cost_accounted"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-12)
        assert c["throughput_speedup_b64"] > 0 and c["latency_speedup_b1"] > 0
    assert report["base"]["measured"]["accuracy"] == report["base"]["predicted"]["accuracy"]
    assert (tmp / "r.png").stat().st_size > 0 and doc["configs"][0]["id"] in out


def test_a_table_deciding_with_agree_measures_the_macs_predicted(setup, capsys):
    """The partner's head, run for a rule reading it, is counted by FlopCounterMode, accounted by the runtime and
    predicted by the search's paired costs: the three agree."""
    tmp, base, _ = setup
    doc = make_export(open_cache(tmp / "cache"), "agree")
    (tmp / "agree.json").write_text(json.dumps(doc))
    assert main(["--config", str(tmp / "agree.json"), "--all", "--report", str(tmp / "agree-r.json")] + base) == 0
    capsys.readouterr()
    report = json.loads((tmp / "agree-r.json").read_text())
    assert any(d["score"] == "agree" for c in doc["configs"] for d in c["exits"])
    for c, want in zip(report["configs"], doc["configs"], strict=True):
        assert c["agreement"] == 1.0
        assert c["predicted"]["relative_cost"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-12)
        assert c["measured"]["relative_cost"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-9)
        assert c["measured"]["relative_cost_accounted"] == pytest.approx(want["holdout"]["relative_cost"], rel=1e-12)


def test_one_configuration_by_id(setup, capsys):
    tmp, base, doc = setup
    cid = doc["configs"][1]["id"]
    assert main(["--config", str(tmp / "front.json"), "--id", cid, "--report", str(tmp / "one.json"),
                 "--no-timing"] + base) == 0
    report = json.loads((tmp / "one.json").read_text())
    assert [c["id"] for c in report["configs"]] == [cid] and "throughput_speedup_b64" not in report["configs"][0]


def _certified(setup, name: str, edit=None) -> tuple[dict, str]:
    """The export with a genuine certificate on configs[1] (the cache's calibration split), edited by ``edit``."""
    tmp, _, doc = setup
    doc = copy.deepcopy(doc)
    certify(open_cache(tmp / "cache"), doc, 1, split="calibration")
    if edit is not None:
        edit(doc["configs"][1]["certificate"])
    (tmp / name).write_text(json.dumps(doc))
    return doc, doc["configs"][1]["id"]


def test_measured_drop_next_to_the_certified_one(setup, capsys):
    tmp, base, _ = setup
    doc, cid = _certified(setup, "certified.json")
    cert = doc["configs"][1]["certificate"]
    assert main(["--config", str(tmp / "certified.json"), "--id", cid, "--report", str(tmp / "cert.json"),
                 "--no-timing"] + base) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp / "cert.json").read_text())
    entry = report["configs"][0]
    assert entry["certificate"] == cert
    assert entry["measured_drop"] == pytest.approx(
        report["base"]["measured"]["accuracy"] - entry["measured"]["accuracy"])
    assert f"{cid}: certified drop <= {100 * cert['certified_drop']:.3f} points (delta 0.1, 12 calibration samples, " \
           "trinomial); measured drop on holdout:" in out
    assert "verified: the numbers of 4 configuration(s) and 1 certificate(s) recomputed from the cache" in out
    assert report["verified"].startswith("verified:")


def test_an_edited_or_wrong_typed_certificate_is_refused_before_any_report(setup, capsys):
    """Regressions (issue 20): an edited "certified drop <= 0.1 points" was printed beside a measured 1.5; a
    certificate field of the wrong type ended in a traceback after the report was written."""
    tmp, base, _ = setup
    for name, edit, match in [
            ("forged.json", lambda c: c.update(certified_drop=0.001),
             "certificate.certified_drop: 0.001 does not reproduce: the trinomial test on the 12 recorded"),
            ("typed.json", lambda c: c.update(certified_drop="0.1"), "certificate.certified_drop: must be a number"),
            ("observed.json", lambda c: c.update(observed_drop=-0.5), "certificate.observed_drop: -0.5 does not")]:
        _, cid = _certified(setup, name, edit)
        assert main(["--config", str(tmp / name), "--report", str(tmp / f"r-{name}"), "--no-timing"] + base) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {tmp / name}: configs[1]") and match in err, err
        assert "Traceback" not in err and captured.out == "" and not (tmp / f"r-{name}").exists()


def test_validating_on_the_calibration_split_is_flagged(setup, capsys):
    tmp, base, _ = setup
    _certified(setup, "cal.json")
    argv = ["--config", str(tmp / "cal.json"), "--report", str(tmp / "cal-report.json"), "--no-timing"] + base
    assert main(argv[:argv.index("--split") + 1] + ["calibration"] + argv[argv.index("--split") + 2:]) == 0
    err = capsys.readouterr().err
    assert "warning: --split calibration: the certificates were computed on these very rows" in err


def _refused(setup, capsys, doc=None, extra=(), match=""):
    tmp, base, good = setup
    path = tmp / "bad.json"
    path.write_text(json.dumps(doc if doc is not None else good))
    argv = ["--config", str(path), "--report", str(tmp / "bad_report.json")] + base + list(extra)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and match in err, err


def test_the_report_never_replaces_the_cache_manifest(setup, capsys, tmp_path):
    # regression: --report CACHE/manifest.json --overwrite wrote the report over the cache's manifest
    tmp, base, _ = setup
    cache = tmp_path / "cache"
    shutil.copytree(tmp / "cache", cache)
    before = (cache / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["--config", str(tmp / "front.json"), "--report", str(cache / "manifest.json"), "--overwrite",
                 *base, "--cache", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"lies inside --cache {cache}, which this command reads" in err[0]
    assert (cache / "manifest.json").read_bytes() == before


def test_refusals_exit_2_with_one_line(setup, capsys):
    tmp, base, doc = setup
    other_model = copy.deepcopy(doc)
    other_model["model"]["fingerprint"] = "sha256:" + "2" * 64
    _refused(setup, capsys, other_model, match="configuration is for model")
    other_cache = copy.deepcopy(doc)
    other_cache["cache"]["fingerprint"] = "sha256:" + "3" * 64
    _refused(setup, capsys, other_cache, match="not on the given cache")
    lacking = copy.deepcopy(doc)
    lacking["configs"][0]["exits"][0]["name"] = "blocks.99/linear"
    _refused(setup, capsys, lacking, match="is not an exit of this model")
    threshold = copy.deepcopy(doc)
    threshold["configs"][0]["exits"][0]["threshold"] = -0.25
    _refused(setup, capsys, threshold, match="outside [0, 1]")
    _refused(setup, capsys, extra=["--checkpoint", str(tmp / "nope.pt")], match="checkpoint does not exist")
    _refused(setup, capsys, extra=["--model", "resnet18"], match="not 'resnet18'")
    _refused(setup, capsys, extra=["--cache", str(tmp / "nowhere")], match="nowhere")
    (tmp / "broken.json").write_text("{")
    assert main(["--config", str(tmp / "broken.json"), "--report", str(tmp / "x.json")] + base) == 2


def test_timing_many_configurations_warns_what_it_costs(setup, capsys, monkeypatch):
    import exits.validate as validate_module

    tmp, base, doc = setup
    monkeypatch.setattr(validate_module, "MANY_CONFIGS", 1)
    assert len(doc["configs"]) > 1
    assert main(["--config", str(tmp / "front.json"), "--all", "--report", str(tmp / "many.json")] + base) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp / 'front.json'}: {len(doc['configs'])} configurations" in err and "--max-configs" in err
    assert main(["--config", str(tmp / "front.json"), "--max-configs", "1", "--report", str(tmp / "few.json")]
                + base) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_certified_cost_in_another_objective_is_not_set_beside_measured_macs():
    from exits.validate import format_table

    cert = {"certified_relative_cost": 0.6, "delta": 0.1, "n_cal": 100, "bound": "clopper_pearson"}
    row = {"id": "dp-0000", "exits": [], "agreement": 1.0, "n_disagree_near_threshold": 0, "mac_estimate_speedup": 2.0,
           "predicted": {"accuracy": 0.9, "relative_cost": 0.5}, "measured": {"accuracy": 0.9, "relative_cost": 0.5},
           "certificate": cert}
    report = {"split": "holdout", "n_samples": 10, "configs": [row],
              "base": {"measured": {"accuracy": 0.9, "macs_per_sample": 1e6}, "predicted": {"accuracy": 0.9}}}
    assert "measured on holdout: 0.5000" in format_table(report)
    text = format_table({**report, "objective": "latency"})
    assert "certified relative latency cost <= 0.6000" in text and "not measured here (a run measures MACs)" in text
    assert "measured on holdout" not in text


def _report(rel_costs, drop_points=0.13):
    rows = [{"id": f"dp-{i:04d}", "exits": [{"name": "e", "threshold": 0.9}], "agreement": 1.0,
             "n_disagree_near_threshold": 0, "mac_estimate_speedup": 1 / r, "throughput_speedup_b64": 0.9 / r,
             "latency_speedup_b1_mean": 0.7 / r,
             "predicted": {"accuracy": 0.845 - drop_points / 100, "relative_cost": r},
             "measured": {"accuracy": 0.845 - drop_points / 100, "relative_cost": r}} for i, r in enumerate(rel_costs)]
    return {"split": "holdout", "configs": rows, "machine": {"device": "cpu", "torch_threads": 1},
            "base": {"measured": {"accuracy": 0.845}}}


def test_report_figure_ids_log_speedup_one_cost_convention_and_a_minimum_span(tmp_path):
    """A 0.13-point drop is not a cliff (the accuracy axis spans at least MIN_ACCURACY_SPAN points); every point
    carries its id; the speedup axis is logarithmic and reaches the MAC estimate; both panels plot relative MACs."""
    from exits.validate import MIN_ACCURACY_SPAN, plot_report

    fig = plot_report(_report([0.05, 0.3, 0.6]), tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 0
    left, right = fig.axes
    lo, hi = left.get_ylim()
    assert hi - lo >= MIN_ACCURACY_SPAN and lo < 84.37 and hi > 84.5
    for ax in (left, right):
        assert ax.get_xlabel() == "relative MACs (base model = 1)"
        assert {t.get_text() for t in ax.texts} == {"dp-0000", "dp-0001", "dp-0002"}
    assert right.get_yscale() == "log" and right.get_ylim()[1] >= 20.0
    assert "20x" in [t.get_text() for t in right.get_yticklabels()]
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels[0] == "MAC estimate: 1 / relative MACs" and "mean latency, batch 1" in labels
    assert not any("ideal" in label for label in labels)
    one = plot_report(_report([0.6]))            # one configuration, nothing saved
    assert one.axes[0].get_ylim()[1] - one.axes[0].get_ylim()[0] == pytest.approx(MIN_ACCURACY_SPAN)
