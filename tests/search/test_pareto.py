"""The command line: output, export, plots, and one-line errors with exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from data_cache import save_cache
from data_cache.synthetic import make_synthetic_cache
from search.pareto import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cache"
    save_cache(path, make_synthetic_cache(3000, 4, n_head_types=2, seed=2))
    return path


def test_table_queries_export_and_plots(cache_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    rc = main([str(cache_dir), "--methods", "dp,global,geometric,greedy", "--max-drop", "0.5", "--uncertified",
               "--budget", "0.6", "--export", str(out / "front.json"), "--export-choice",
               str(out / "chosen.json"), "--plot", str(out / "front.png"), "--standalone", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    for word in ("dp", "global", "geometric", "greedy", "HV search", "save@0.5pt", "oracle", "standalone",
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
    assert f"plots written to {out / 'front.png'} and {out / 'front_exits.png'}" in text


def test_methods_list(capsys):
    assert main(["--methods", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"dp", "global", "geometric", "greedy", "exhaustive"} <= set(names)


def _status(argv) -> int:
    """main's exit status; argparse refuses a bad option value by raising SystemExit(2)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _error(capsys, argv) -> str:
    assert _status(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in captured.err
    return captured.err


def test_bad_inputs_give_one_line_and_status_2(cache_dir, tmp_path, capsys):
    assert "unknown method 'nope'" in _error(capsys, [str(cache_dir), "--methods", "dp,nope"])
    assert "manifest.json" in _error(capsys, [str(tmp_path), "--methods", "dp"])
    assert "--score: rule 'neg_entropy' cannot be scored at any exit of this cache: it reads logits" in _error(
        capsys, [str(cache_dir), "--methods", "dp", "--score", "neg_entropy"])
    assert "latency" in _error(capsys, [str(cache_dir), "--methods", "dp", "--objective", "latency"])
    assert "cheapest reachable" in _error(capsys, [str(cache_dir), "--methods", "dp", "--budget", "0.001",
                                                   "--uncertified"])
    assert "no configuration is certified within relative cost 0.001" in _error(
        capsys, [str(cache_dir), "--methods", "dp", "--budget", "0.001"])
    assert "--max-drop" in _error(capsys, [str(cache_dir), "--methods", "dp", "--max-drop", "-3"])
    assert "--risk needs --max-drop or --budget" in _error(capsys, [str(cache_dir), "--risk", "0.1"])
    assert "--evaluations: must be a positive integer, got 0" in _error(
        capsys, [str(cache_dir), "--methods", "global", "--evaluations", "0"])


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


def test_subsample_path_scores_every_number_on_all_samples(cache_dir, tmp_path, capsys):
    """A search split above --subsample-above: methods fit on a seeded subsample; the table and the
    export say so, and every exported number is the exact evaluation on the whole split."""
    from data_cache import open_cache
    from search import ExitConfig, ExitProblem

    out = tmp_path / "front.json"
    rc = main([str(cache_dir), "--methods", "dp,global,geometric,greedy", "--subsample", "600",
               "--subsample-above", "1000", "--chunk-size", "257", "--max-drop", "0.5", "--budget", "0.6",
               "--uncertified", "--export", str(out), "--export-choice", str(tmp_path / "chosen.json"),
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "fitted on a seeded random subsample of 600 of the 1,500 search samples" in text
    assert "on the fitted subsample of search (600 samples)" in text
    doc = json.loads(out.read_text())
    assert doc["fit"] == {"split": "search", "subsample": 600, "of": 1500, "seed": 0}
    chosen = json.loads((tmp_path / "chosen.json").read_text())
    assert chosen["fit"] == doc["fit"]
    # the answer meets the drop limit on every search sample, not only on the fitted subsample
    assert chosen["base"]["search"]["accuracy"] - chosen["configs"][0]["search"]["accuracy"] <= 0.005 + 1e-12
    assert len(doc["configs"]) >= 20
    cache = open_cache(cache_dir)
    problems = {s: ExitProblem(cache, s) for s in ("search", "holdout")}
    for entry in doc["configs"]:
        config = ExitConfig.from_json(entry["exits"], cache)
        for split, problem in problems.items():
            ev = problem.evaluate_one(config)
            assert entry[split] == {"accuracy": ev.accuracy, "relative_cost": ev.relative_cost,
                                    "exit_fractions": list(ev.exit_fractions)}
    assert "dp" in {c["method"] for c in doc["configs"]}


def test_full_fit_is_stated_in_the_export(cache_dir, tmp_path, capsys):
    assert main([str(cache_dir), "--methods", "dp", "--export", str(tmp_path / "f.json"), "--no-progress"]) == 0
    assert "fitted on a seeded random subsample" not in capsys.readouterr().out
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["fit"] == {"split": "search", "subsample": None, "of": 1500, "seed": None}


def test_large_cache_options_refuse_bad_values(cache_dir, capsys):
    assert "below the number of exit positions (4)" in _error(capsys, [str(cache_dir), "--methods", "dp",
                                                                       "--subsample", "3", "--subsample-above", "10"])
    assert "needs about" in _error(capsys, [str(cache_dir), "--methods", "dp", "--memory-limit", "0.01"])
    for argv in (["--chunk-size", "0"], ["--subsample", "0"], ["--subsample-above", "-1"], ["--memory-limit", "0"],
                 ["--chunk-size", "many"]):
        with pytest.raises(SystemExit) as exc:
            main([str(cache_dir), *argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert argv[0] in err and "Traceback" not in err


def test_tpe_warns_in_one_line_when_asked_for_many_trials(cache_dir, capsys):
    from search.engines.optuna_engine import TPE_TRIALS_WARN
    n = TPE_TRIALS_WARN + 1000
    assert main([str(cache_dir), "--methods", "optuna", "--sampler", "tpe", "--evaluations", str(n),
                 "--time-limit", "0.3", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: optuna: {n} trials with the TPE sampler")
    assert main([str(cache_dir), "--methods", "optuna", "--evaluations", str(n), "--time-limit", "0.3",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""                       # the default sampler (NSGA-II) does not warn


def _python(code: str, *args, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_start_up_imports_only_what_is_used(cache_dir):
    """--help, and a dp search on a small cache, load none of scipy, optuna, pymoo, matplotlib, tqdm."""
    heavy = ("scipy", "optuna", "pymoo", "matplotlib", "tqdm")
    code = textwrap.dedent(f"""
        import runpy, sys
        for args in (["--help"], [{str(cache_dir)!r}, "--methods", "dp", "--no-progress"]):
            sys.argv = ["search.pareto", *args]
            try:
                runpy.run_module("search.pareto", run_name="__main__")
            except SystemExit as exc:
                assert exc.code in (0, None), exc.code
            print("loaded:", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})))
    """)
    run = _python(code)
    assert run.returncode == 0, run.stderr
    assert [ln for ln in run.stdout.splitlines() if ln.startswith("loaded:")] == ["loaded: []"] * 2


def test_a_closed_pipe_ends_quietly(cache_dir):
    """``python -m search.pareto ... | head -1``: the reader goes away; no traceback, status 0."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "search.pareto", str(cache_dir), "--methods", "dp,global",
                             "--standalone", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.close()                                        # closed before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err
    shell = subprocess.run(f"{sys.executable} -m search.pareto {cache_dir} --methods dp --standalone --no-progress "
                           "| head -1", shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert shell.stdout.startswith("cache ") and shell.stdout.count("\n") == 1
    assert "Traceback" not in shell.stderr


def test_certified_answer_on_a_subsample_calibrates_outside_it(cache_dir, tmp_path, capsys):
    """On a subsampled fit, the certificate's calibration rows are search rows the methods never saw,
    drawn as docs/search.md states; its observed drop is recomputed here from the cache files."""
    from data_cache import open_cache
    from search import ExitConfig
    from search.subsample import FitSample

    chosen = tmp_path / "chosen.json"
    assert main([str(cache_dir), "--methods", "dp", "--subsample", "600", "--subsample-above", "1000",
                 "--max-drop", "4", "--seed", "4", "--export-choice", str(chosen), "--no-progress"]) == 0
    assert "drawn with seed 4 from the rows outside the fitted subsample" in capsys.readouterr().out
    entry = json.loads(chosen.read_text())["configs"][0]
    cert = entry["certificate"]
    assert cert["split"] == "search" and cert["seed"] == 4 and cert["n_cal"] == 750
    fitted = FitSample(600, 1500, 4).indices()
    outside = np.setdiff1d(np.arange(1500), fitted)
    rows = np.sort(np.random.default_rng(4).choice(outside, 750, replace=False))
    assert not np.isin(rows, fitted).any()
    cache = open_cache(cache_dir)
    labels = np.asarray(cache.labels("search"))[rows]
    top1 = np.asarray(cache.topk_ids("search"))[:, 0, rows]
    probs = np.asarray(cache.topk_probs("search"))[:, 0, rows]
    config = ExitConfig.from_json(entry["exits"], cache)
    leave = np.full(rows.size, len(cache.exits) - 1)
    for e, t in zip(reversed(config.exits), reversed(config.thresholds), strict=True):
        leave = np.where(probs[e] > t, e, leave)
    right = top1[leave, np.arange(rows.size)] == labels
    base = top1[-1] == labels
    assert cert["observed_drop"] == pytest.approx(float(np.mean(base.astype(int) - right.astype(int))))


def test_plots_mark_what_the_queries_chose(cache_dir, tmp_path, monkeypatch, capsys):
    """Both panels of the fronts' figure mark every chosen configuration, labelled by query and certification,
    with the asked-drop line; the exit distribution is titled with the first answer."""
    import search.plot as plot

    calls = {"fronts": [], "exits": []}
    fronts, exits = plot.plot_fronts, plot.plot_exit_distribution
    monkeypatch.setattr(plot, "plot_fronts", lambda *a, **kw: (calls["fronts"].append(kw), fronts(*a, **kw))[1])
    monkeypatch.setattr(plot, "plot_exit_distribution",
                        lambda *a, **kw: (calls["exits"].append(kw), exits(*a, **kw))[1])
    rc = main([str(cache_dir), "--methods", "dp", "--max-drop", "0.5", "--uncertified", "--budget", "0.6",
               "--plot", str(tmp_path / "front.png"), "--no-progress"])
    assert rc == 0
    capsys.readouterr()
    labels = ["chosen: within 0.5 points, not certified", "chosen: relative cost <= 0.6, not certified"]
    assert [list(kw["chosen"]) for kw in calls["fronts"]] == [labels, labels]
    assert [kw["asked_drop"] for kw in calls["fronts"]] == [0.5, 0.5]
    assert all(kw["focus_drop"] == 5.0 for kw in calls["fronts"])
    search_drop, search_budget = calls["fronts"][0]["chosen"].values()
    assert search_budget[1] <= 0.6 + 1e-12
    assert [kw["label"] for kw in calls["exits"]] == [labels[0]]
