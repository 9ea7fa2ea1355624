"""exits.validate with a cost table: predicted against measured speed-up in the report, the table and the figure;
exports for another runtime, table or target refused or flagged in one line (timing values are never asserted)."""
from __future__ import annotations

import json

import pytest
import torch
from _runtime_fixtures import fashion_dump, make_export

from data_cache.cost_tables import read_cost_table
from data_cache.format import COST_TABLES_DIR
from exits.memory import memory_policy
from exits.profile import main as profile_main
from exits.time_prediction import TimeTargetError, resolve_time_target
from exits.validate import main
from search.config import ExitConfig
from search.problem import ExitProblem
from search.time_cost import TimeCostModel

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model dumped on fake Fashion-MNIST files, a MAC export and an eager cost table at batch 4."""
    tmp = tmp_path_factory.mktemp("validate_time")
    model, ckpt, cache = fashion_dump(tmp)
    root = tmp / "fm"
    assert profile_main(["--checkpoint", str(ckpt), "--cache", str(tmp / "cache"), "--name", "cpu-t1",
                         "--batch-size", "4", "--rounds", "1", "--min-time", "1e-4", "--threads", "1",
                         "--quiet"]) == 0
    doc = make_export(cache)
    (tmp / "front.json").write_text(json.dumps(doc))
    base = ["--checkpoint", str(ckpt), "--data-root", str(root), "--cache", str(tmp / "cache"), "--timing-samples",
            "8", "--no-latency", "--rounds", "1", "--quiet"]
    return tmp, base, doc, cache


def _config(cache, entry, score="max_prob") -> ExitConfig:
    names = [e.name for e in cache.exits]
    return ExitConfig(tuple(names.index(e["name"]) for e in entry["exits"]),
                      tuple(e["threshold"] for e in entry["exits"]), score)


def test_predicted_against_measured_speedup_in_report_table_and_figure(setup, capsys):
    tmp, base, doc, cache = setup
    assert main(["--config", str(tmp / "front.json"), "--cost-table", "cpu-t1", "--report", str(tmp / "r.json"),
                 "--plot", str(tmp / "r.png")] + base) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp / "r.json").read_text())
    table = read_cost_table(cache, "cpu-t1")
    assert report["cost_table"]["name"] == "cpu-t1" and report["cost_table"]["fingerprint"] == table.fingerprint
    assert report["cost_table"]["batch_size"] == 4 and report["cost_table"]["runtime"] == "eager"
    model = TimeCostModel.from_cache(cache, "cpu-t1")
    for c, entry in zip(report["configs"], doc["configs"], strict=True):
        cfg = _config(cache, entry)
        want = model.estimate(cfg.exits, ExitProblem(cache, "holdout").assign(cfg))
        assert c["predicted_speedup"] == pytest.approx(want.speedup, rel=1e-12)   # recomputed from the cache
        assert c["measured_speedup"] > 0 and c["throughput_b64"]["batch_size"] == 4   # timed at the table's B
        assert c["throughput_b64"]["n_samples"] == 8                                  # full batches only
        assert c["speedup_error"] == pytest.approx(c["predicted_speedup"] / c["measured_speedup"] - 1)
        assert c["mac_speedup_error"] == pytest.approx(
            1 / c["predicted"]["relative_cost"] / c["measured_speedup"] - 1)
        t = c["time"]
        assert t["batch_size"] == 4 and t["predicted_ms_per_sample"] == pytest.approx(1e3 * want.time_per_sample_s)
        assert t["measured_base_ms_per_sample"] / t["measured_ms_per_sample"] == pytest.approx(c["measured_speedup"])
    summary = report["time_prediction"]
    assert summary["n_timed"] == len(doc["configs"])
    assert summary["max_abs_speedup_error"] == max(abs(c["speedup_error"]) for c in report["configs"])
    assert "t pred" in out and "t err" in out and "cost table 'cpu-t1'" in out
    assert report["memory"] == memory_policy() == table.target["memory"]   # run as profiled (exits.memory)
    assert (tmp / "r.png").stat().st_size > 0


def test_without_a_table_nothing_is_predicted(setup):
    tmp, base, _, _ = setup
    assert main(["--config", str(tmp / "front.json"), "--report", str(tmp / "plain.json"), "--no-timing"] + base) == 0
    report = json.loads((tmp / "plain.json").read_text())
    assert "cost_table" not in report and all("predicted_speedup" not in c for c in report["configs"])


def test_a_table_of_the_other_runtime_is_refused(setup, capsys):
    tmp, base, _, _ = setup
    folder = tmp / "cache" / COST_TABLES_DIR
    doc = json.loads((folder / "cpu-t1.json").read_text())
    doc["name"], doc["target"]["runtime"] = "ort", "onnx"
    (folder / "ort.json").write_text(json.dumps(doc))
    assert main(["--config", str(tmp / "front.json"), "--cost-table", "ort", "--report", str(tmp / "x.json")]
                + base) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "profiled for the onnx runtime" in err, err
    assert main(["--config", str(tmp / "front.json"), "--cost-table", "nope", "--report", str(tmp / "x.json")]
                + base) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no cost table 'nope'" in err, err
    assert not (tmp / "x.json").exists()


def test_another_target_is_flagged_in_one_line(setup, capsys):
    tmp, base, _, _ = setup
    folder = tmp / "cache" / COST_TABLES_DIR
    doc = json.loads((folder / "cpu-t1.json").read_text())
    doc["name"], doc["target"]["device_name"], doc["target"]["threads"] = "elsewhere", "Some Other CPU", 3
    (folder / "elsewhere.json").write_text(json.dumps(doc))
    assert main(["--config", str(tmp / "front.json"), "--cost-table", "elsewhere", "--threads", "1", "--report",
                 str(tmp / "e.json"), "--no-timing"] + base) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert any("Some Other CPU" in line for line in warnings), warnings
    assert any("profiled with 3 thread(s); this run uses 1" in line for line in warnings), warnings
    report = json.loads((tmp / "e.json").read_text())
    assert all("predicted_speedup" in c and "measured_speedup" not in c for c in report["configs"])


def test_a_table_profiled_under_another_memory_policy_is_flagged(setup, capsys):
    tmp, base, _, _ = setup
    folder = tmp / "cache" / COST_TABLES_DIR
    doc = json.loads((folder / "cpu-t1.json").read_text())
    for name, memory in (("same", doc["target"]["memory"]), ("returned", {"policy": "default"}), ("older", None)):
        doc["name"], doc["target"]["memory"] = name, memory
        (folder / f"{name}.json").write_text(json.dumps(doc))
        assert main(["--config", str(tmp / "front.json"), "--cost-table", name, "--report", str(tmp / f"{name}.json"),
                     "--no-timing"] + base) == 0
        warned = [ln for ln in capsys.readouterr().err.splitlines() if "freed memory" in ln]
        if name == "returned":
            assert len(warned) == 1 and warned[0].startswith("warning: ") and "'default'" in warned[0], warned
        else:   # the same policy, or a table written before the policy was recorded
            assert warned == [], warned


def _time_doc(doc, table, **changes):
    rec = {"name": table.name, "fingerprint": table.fingerprint, "device": table.target["device"],
           "threads": table.target["threads"], "batch_size": table.batch_size, "runtime": table.runtime,
           "method": "binomial"}
    return dict(doc, objective="time", cost_table={**rec, **changes})


def test_time_exports_bound_to_their_table(setup):
    tmp, _, doc, cache = setup
    table = read_cost_table(cache, "cpu-t1")
    target, lines = resolve_time_target(_time_doc(doc, table), cache, None, runtime="eager", source="f.json")
    assert target.table.fingerprint == table.fingerprint and target.batch_size == 4 and lines == ()
    with pytest.raises(TimeTargetError, match=r"f.json: cost_table.fingerprint: .*profiled again"):
        resolve_time_target(_time_doc(doc, table, fingerprint="sha256:" + "0" * 64), cache, None, runtime="eager",
                            source="f.json")
    with pytest.raises(TimeTargetError, match="profiled for the eager runtime, this validation runs a bundle"):
        resolve_time_target(_time_doc(doc, table), cache, "cpu-t1", runtime="onnx", source="f.json")
    # the table the export was searched on is of the other runtime: flagged, validated without a time prediction
    target, lines = resolve_time_target(_time_doc(doc, table), cache, None, runtime="onnx", source="f.json")
    assert target is None and len(lines) == 1
    assert lines[0].startswith("f.json: searched on cost table 'cpu-t1': profiled for the eager runtime")
    assert "no time prediction" in lines[0]
    with pytest.raises(TimeTargetError, match="f.json: cost_table: objective 'time' but no record"):
        resolve_time_target(dict(doc, objective="time"), cache, None, runtime="eager", source="f.json")
    other = _time_doc(doc, table, name="gone", device="cuda")
    target, lines = resolve_time_target(other, cache, "cpu-t1", runtime="eager", source="f.json")
    assert target.table.name == "cpu-t1" and len(lines) == 1 and "searched on cost table 'gone'" in lines[0]


def test_latency_exports_are_flagged(setup):
    _, _, doc, cache = setup
    target, lines = resolve_time_target(dict(doc, objective="latency"), cache, None, runtime="eager", source="f")
    assert target is None and len(lines) == 1 and "objective 'latency'" in lines[0] and "--cost-table" in lines[0]
    target, lines = resolve_time_target(dict(doc, objective="latency"), cache, "cpu-t1", runtime="eager", source="f")
    assert target is not None and len(lines) == 1 and "one-batch latency table" in lines[0]
    assert resolve_time_target(doc, cache, None, runtime="eager", source="f") == (None, ())


def test_a_time_export_is_validated_at_the_batch_size_it_was_searched_at(setup, capsys):
    # searched with --batch-size 2 on a table profiled up to 4: its numbers are at batch 2, so is the validation
    from search.pareto import main as pareto_main

    tmp, base, _, cache = setup
    assert pareto_main([str(tmp / "cache"), "--methods", "dp", "--objective", "time", "--cost-table", "cpu-t1",
                        "--batch-size", "2", "--export", str(tmp / "b2.json"), "--no-progress"]) == 0
    capsys.readouterr()
    doc = json.loads((tmp / "b2.json").read_text())
    target, lines = resolve_time_target(doc, cache, None, runtime="eager", source="b2.json")
    assert (target.batch_size, target.model.batch_size, target.record()["batch_size"]) == (2, 2, 2) and lines == ()
    assert main(["--config", str(tmp / "b2.json"), "--max-configs", "1", "--report", str(tmp / "b2r.json")]
                + base) == 0
    report = json.loads((tmp / "b2r.json").read_text())
    assert report["cost_table"]["batch_size"] == 2
    assert all(c["time"]["batch_size"] == 2 and c["throughput_b64"]["batch_size"] == 2 for c in report["configs"])


def test_a_table_that_cannot_time_a_configuration_is_one_line_before_any_work(setup, capsys):
    tmp, base, _, _ = setup
    folder = tmp / "cache" / COST_TABLES_DIR
    doc = json.loads((folder / "cpu-t1.json").read_text())
    doc["name"], doc["items"] = "nostep", [i for i in doc["items"] if i["kind"] != "step"]
    (folder / "nostep.json").write_text(json.dumps(doc))
    assert main(["--config", str(tmp / "front.json"), "--cost-table", "nostep", "--report", str(tmp / "n.json")]
                + base) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: configuration ") and "\n" not in err and "has no step time for exit" in err, err
    assert not (tmp / "n.json").exists()


@pytest.mark.parametrize("command, argv", [("validate", ["--config", "x", "--checkpoint", "k.pt"]),
                                           ("validate_bundle", ["--bundle", "x"])])
def test_a_table_name_that_is_a_path_is_a_usage_error(command, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(f"exits.{command}").main(argv + ["--cache", "c", "--report", "r.json",
                                                                 "--cost-table", "../other/t"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and "argument --cost-table: '../other/t' is not a cost" in err


def test_rebatch_serves_and_predicts_re_batched(setup, capsys):
    # --rebatch: the configuration runs re-batched (same decisions, in input order) and is timed as one stream; the
    # prediction is the re-batched model's (every item on full batches), and the export's compaction is flagged
    from search.pareto import main as pareto_main

    tmp, base, _, cache = setup
    for name, extra in (("t4.json", []), ("t4r.json", ["--rebatch"])):
        assert pareto_main([str(tmp / "cache"), "--methods", "dp", "--objective", "time", "--cost-table", "cpu-t1",
                            "--export", str(tmp / name), "--no-progress", *extra]) == 0
    capsys.readouterr()
    doc = json.loads((tmp / "t4.json").read_text())
    assert main(["--config", str(tmp / "t4.json"), "--rebatch", "--max-configs", "2", "--report",
                 str(tmp / "rb.json")] + base) == 0
    captured = capsys.readouterr()
    assert any("searched for plain compaction at batch 4; --rebatch predicts" in line
               for line in captured.err.splitlines() if line.startswith("warning:")), captured.err
    assert "served re-batched" in captured.out
    report = json.loads((tmp / "rb.json").read_text())
    assert report["rebatch"] is True and report["cost_table"]["rebatch"] is True
    model = TimeCostModel.from_cache(cache, "cpu-t1", rebatch=True)
    for c in report["configs"]:
        entry = next(e for e in doc["configs"] if e["id"] == c["id"])
        cfg = _config(cache, entry)
        leave = ExitProblem(cache, "holdout").assign(cfg)
        assert c["predicted_speedup"] == pytest.approx(model.estimate(cfg.exits, leave).speedup, rel=1e-12)
        assert c["time"]["rebatch"] is True and c["throughput_b64"]["rebatch"] is True
        assert c["agreement"] == 1.0   # re-batched serving returns every row's answer in input order
    # an export searched re-batched is validated re-batched without the flag, and nothing is flagged
    searched = json.loads((tmp / "t4r.json").read_text())
    assert searched["cost_table"]["rebatch"] is True
    target, lines = resolve_time_target(searched, cache, None, runtime="eager", source="f.json")
    assert target.rebatch and target.model.additive and lines == ()
    target, _ = resolve_time_target(doc, cache, None, runtime="eager", source="f.json")
    assert not target.rebatch
    assert main(["--config", str(tmp / "t4r.json"), "--max-configs", "1", "--report", str(tmp / "rb2.json")]
                + base) == 0
    assert json.loads((tmp / "rb2.json").read_text())["rebatch"] is True


def test_rebatch_without_a_table_still_times_re_batched(setup):
    tmp, base, _, _ = setup
    assert main(["--config", str(tmp / "front.json"), "--rebatch", "--max-configs", "1", "--report",
                 str(tmp / "rb0.json")] + base) == 0
    report = json.loads((tmp / "rb0.json").read_text())
    assert report["rebatch"] is True and "cost_table" not in report
    assert all(c["throughput_b64"]["rebatch"] is True for c in report["configs"])


def test_workers_time_the_configuration_and_the_base_data_parallel_on_one_thread_each(setup, capsys):
    tmp, base, _, _ = setup
    torch.set_num_threads(2)                                         # the fixture restores it
    assert main(["--config", str(tmp / "front.json"), "--workers", "2", "--rebatch", "--max-configs", "1",
                 "--report", str(tmp / "w.json")] + base) == 0
    assert torch.get_num_threads() == 1                              # one intra-op thread per worker
    assert "served on 2 workers of one thread each" in capsys.readouterr().out
    report = json.loads((tmp / "w.json").read_text())
    assert report["workers"] == 2 and report["rebatch"] is True
    for c in report["configs"]:
        assert c["throughput_b64"]["workers"] == 2 and c["agreement"] == 1.0   # rows back in input order
    # with a cost table: the one-thread table's prediction, flagged in one warning line
    assert main(["--config", str(tmp / "front.json"), "--workers", "2", "--cost-table", "cpu-t1", "--max-configs",
                 "1", "--report", str(tmp / "wt.json")] + base) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "--workers 2: the predicted speed-up" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "1-thread cost table" in warned[0]
    assert all("predicted_speedup" in c for c in json.loads((tmp / "wt.json").read_text())["configs"])
    assert main(["--config", str(tmp / "front.json"), "--workers", "2", "--threads", "2", "--max-configs", "1",
                 "--report", str(tmp / "w2.json")] + base) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--workers 2 runs one intra-op thread per worker; --threads 2" in err
    assert not (tmp / "w2.json").exists()


def test_compile_validates_compiled_stages_and_flags_the_eager_table(setup, capsys, monkeypatch):
    tmp, base, _, _ = setup
    compile_ = torch.compile   # dynamo's tracing as compiled, no code generated (minutes here)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", **kw))
    assert main(["--config", str(tmp / "front.json"), "--compile", "--cost-table", "cpu-t1", "--max-configs", "1",
                 "--report", str(tmp / "c.json")] + base) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: --compile")]
    assert len(warned) == 1 and "timed the eager runtime's units" in warned[0]
    report = json.loads((tmp / "c.json").read_text())
    assert report["compile"] is True
    assert all(c["agreement"] == 1.0 and "measured_speedup" in c for c in report["configs"])
