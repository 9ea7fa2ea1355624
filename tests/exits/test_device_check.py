"""The GPU check's CPU quick mode runs end to end (so it cannot rot), without optuna or pymoo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fashion import fashion_files

from exits.checkpoints import save_checkpoint
from exits.data import load_splits
from exits.dump import dump_cache
from exits.pipeline import DATA_CONFIG, TIMM_KWARGS, build_model

ROOT = Path(__file__).resolve().parents[2]
# optuna and pymoo are not on the GPU machine: importing either fails in the check's process
BLOCKED = "import sys; sys.modules['optuna'] = None; sys.modules['pymoo'] = None; import runpy; " \
          "sys.argv = ['device_check.py'] + sys.argv[1:]; " \
          "runpy.run_path('benchmarks/device_check.py', run_name='__main__')"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo like the bundled one, on random Fashion-MNIST-shaped files: checkpoint, cache, test files."""
    tmp = tmp_path_factory.mktemp("demo")
    root = fashion_files(tmp / "fm", 40, 24)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(0)
        ckpt = save_checkpoint(tmp / "ckpt.pt", model, data_config=DATA_CONFIG, include_backbone=True,
                               timm_kwargs=TIMM_KWARGS, data={"dataset": "fashion_mnist", "search_fraction": 0.5,
                                                              "seed": 0})
        splits = load_splits("fashion_mnist", root, data_config=DATA_CONFIG, search_fraction=0.5, seed=0)
        dump_cache(model, splits.cache_splits(), tmp / "cache", k=2, batch_size=16)
    finally:
        torch.set_num_threads(n)
    return ckpt, tmp / "cache", root


def test_quick_mode_writes_the_report_without_optuna_or_pymoo(demo, tmp_path):
    ckpt, cache, root = demo
    out = tmp_path / "report.json"
    argv = ["--quick", "--out", str(out), "--checkpoint", str(ckpt), "--cache", str(cache), "--fashion-mnist",
            str(root), "--zoo", "resnet10t", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", BLOCKED, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["format"] == "exitdevicecheck/1" and report["quick"] and report["imported_optuna_or_pymoo"] == []
    demo_fp32 = report["sections"]["demo"]["fp32"]
    assert set(demo_fp32) == {"batch_8", "batch_16"} and set(report["sections"]["demo"]["bf16"]) == set(demo_fp32)
    for r in demo_fp32.values():
        assert r["agreement"] == 1.0  # CPU-made cache, CPU runtime, fp32
        assert r["relative_macs"] == pytest.approx(r["predicted_relative_macs"], rel=1e-6)
        assert r["speedup"] > 0 and r["mac_estimate_speedup"] >= 1.0
    assert demo_fp32["batch_8"]["latency_b1_ms"] > 0
    timed = report["sections"]["time"]
    assert timed["profile_batch_size"] == 16
    for precision in ("fp32", "bf16"):
        rows = {k: r for k, r in timed[precision].items() if k.startswith("batch_")}
        assert set(rows) == {"batch_1", "batch_8", "batch_16", "batch_8_rebatch", "batch_16_rebatch"}
        assert timed[precision]["profile_s"] > 0
        for r in rows.values():
            assert r["predicted_speedup"] > 0 and r["measured_speedup"] > 0
            assert r["speedup_error"] == pytest.approx(r["predicted_speedup"] / r["measured_speedup"] - 1)
            if precision == "fp32":  # the run leaves every sample where the cache says: measured MACs = predicted
                assert r["mac_speedup_error"] == pytest.approx(r["mac_estimate_speedup"] / r["measured_speedup"] - 1)
    partner = report["sections"]["partner"]
    assert {"agree", "ensemble"} & {d["score"] for d in partner["config"]["exits"]}
    for r in partner["fp32"].values():     # the partner path decides as the cache does, its heads paid as predicted
        assert r["agreement"] == 1.0
        assert r["relative_macs"] == pytest.approx(r["predicted_relative_macs"], rel=1e-6)
    zoo = report["sections"]["zoo:resnet10t"]
    assert zoo["segments_equal_forward_on_device"] and len(zoo["points"]) == 3
    assert zoo["dump"]["dump_img_s"] > 0 and zoo["dump"]["plain_forward_img_s"] > 0
    assert all(r["agreement"] >= 0.9 and len(r["exit_fractions"]) == 4 for r in zoo["fp32"].values())
    assert set(report["targets"]) == {"zoo agreement with the device-made cache, fp32",
                                      "vit_small_patch16_224 speedup / MAC estimate at batch 256"}


def test_bad_input_is_one_line_with_status_2(tmp_path):
    from benchmarks.device_check import main

    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert main(["--quick", "--out", str(existing)]) == 2
    assert main(["--quick", "--out", str(tmp_path / "r2.json"), "--sections", "demo,gpu"]) == 2
    assert existing.read_text() == "{}"
