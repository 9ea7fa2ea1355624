"""The command line: output, export, plots, and one-line errors with exit status 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_cache import save_cache
from data_cache.synthetic import make_synthetic_cache
from search.pareto import main


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cache"
    save_cache(path, make_synthetic_cache(3000, 4, n_head_types=2, seed=2))
    return path


def test_table_queries_export_and_plots(cache_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main([str(cache_dir), "--methods", "dp,global,geometric,greedy", "--max-drop", "0.5", "--uncertified",
               "--budget", "0.6", "--export", str(out / "front.json"), "--export-choice",
               str(out / "chosen.json"), "--plot", str(out / "front.png"), "--standalone", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    for word in ("dp", "global", "geometric", "greedy", "HV search", "save@0.5%", "oracle", "standalone",
                 "uncertified: cheapest within 0.5 points", "no guarantee on unseen data",
                 "uncertified: most accurate within relative cost 0.6"):
        assert word in text
    doc = json.loads((out / "front.json").read_text())
    assert doc["format"] == "exitconfig/1" and len(doc["configs"]) >= 50
    assert {c["method"] for c in doc["configs"]} <= {"dp", "global", "geometric", "greedy", "query"}
    assert not any("certificate" in c for c in doc["configs"])
    chosen = json.loads((out / "chosen.json").read_text())
    assert len(chosen["configs"]) == 1
    drop = chosen["base"]["search"]["accuracy"] - chosen["configs"][0]["search"]["accuracy"]
    assert drop <= 0.005 + 1e-12
    assert (out / "front.png").stat().st_size > 0 and (out / "front_exits.png").stat().st_size > 0


def test_methods_list(capsys):
    assert main(["--methods", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"dp", "global", "geometric", "greedy", "exhaustive"} <= set(names)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_give_one_line_and_status_2(cache_dir, tmp_path, capsys):
    assert "unknown method 'nope'" in _error(capsys, [str(cache_dir), "--methods", "dp,nope"])
    assert "manifest.json" in _error(capsys, [str(tmp_path), "--methods", "dp"])
    assert "needs logits" in _error(capsys, [str(cache_dir), "--methods", "dp", "--score", "neg_entropy"])
    assert "latency" in _error(capsys, [str(cache_dir), "--methods", "dp", "--objective", "latency"])
    assert "cheapest reachable" in _error(capsys, [str(cache_dir), "--methods", "dp", "--budget", "0.001",
                                                   "--uncertified"])
    assert "no configuration is certified within relative cost 0.001" in _error(
        capsys, [str(cache_dir), "--methods", "dp", "--budget", "0.001"])
    assert "--max-drop" in _error(capsys, [str(cache_dir), "--methods", "dp", "--max-drop", "-3"])
    assert "--risk needs --max-drop or --budget" in _error(capsys, [str(cache_dir), "--risk", "0.1"])
    assert "evaluation budget" in _error(capsys, [str(cache_dir), "--methods", "global", "--evaluations", "0"])


def test_invalid_cache_contents(cache_dir, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(cache_dir, bad)
    probs = np.load(bad / "search" / "topk_probs.npy")
    probs[0, 0, 0] = np.nan
    np.save(bad / "search" / "topk_probs.npy", probs)
    err = _error(capsys, [str(bad), "--methods", "dp"])
    assert "topk_probs.npy" in err
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["format"] = "exitcache/99"
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert "unknown format version" in _error(capsys, [str(bad), "--methods", "dp"])


def test_runs_on_a_cache_converted_from_dyce_records(tmp_path, capsys):
    """DyCE records (built from a synthetic cache's predictions) -> convert -> search, end to end."""
    from data_cache.convert import main as convert
    cache = make_synthetic_cache(2000, 3, n_head_types=2, seed=5)
    macs = {"head": [{"name": "mlp1x1000", "macs": [3.0, 4.0, 5.0, 0]},
                     {"name": "mlp3x500", "macs": [6.0, 7.0, 8.0, 0]}],
            "backbone": {"name": "tinynet", "macs": [100.0, 200.0, 300.0, 400.0], "ori_macs": 400.0}}
    (tmp_path / "macs.json").write_text(json.dumps(macs))
    for split in ("search", "holdout"):
        ids, probs = np.asarray(cache.topk_ids(split)), np.asarray(cache.topk_probs(split))
        np.savez(tmp_path / f"{split}.npz", label=cache.labels(split).astype(np.int16)[:, None],
                 preds=np.transpose(ids, (0, 2, 1)).astype(np.int16),
                 confs=np.transpose(probs, (0, 2, 1)).astype(np.float32))
    assert convert(["dyce", "--search", str(tmp_path / "search.npz"), "--holdout", str(tmp_path / "holdout.npz"),
                    "--macs-info", str(tmp_path / "macs.json"), "--out", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "cache"), "--methods", "dp,greedy", "--max-drop", "1", "--no-progress",
                 "--export", str(tmp_path / "front.json")]) == 0
    doc = json.loads((tmp_path / "front.json").read_text())
    heads = {e["head"] for c in doc["configs"] for e in c["exits"]}
    assert heads <= {"mlp1x1000", "mlp3x500"} and doc["configs"]
