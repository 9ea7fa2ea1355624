"""The command line's certified answers: defaults, output, the certificate in the export (re-checked by an
independent recomputation from the cache files), and the one-line refusals before any search."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from data_cache import format as fmt
from data_cache import open_cache, save_cache
from data_cache.memory import InMemoryCache
from data_cache.synthetic import make_synthetic_cache
from search.pareto import main


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("certified") / "cache"
    save_cache(path, make_synthetic_cache(24_000, 3, n_head_types=2, seed=9))
    return path


@pytest.fixture(scope="module")
def cal_cache(tmp_path_factory):
    return make_synthetic_cache(24_000, 3, n_head_types=2, seed=9, calibration_fraction=0.25)


def _run(capsys, argv) -> str:
    assert main(argv + ["--methods", "dp", "--no-progress"]) == 0
    return capsys.readouterr().out


def _error(capsys, argv) -> str:
    try:
        status = main(argv + ["--methods", "dp", "--no-progress"])
    except SystemExit as exc:                      # argparse refuses a bad option value
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""                      # refused before any search
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    return captured.err


def _recheck(cache_path, entry: dict) -> None:
    """Recompute a drop certificate from the cache files alone: calibration rows, losses, p-value."""
    cert = entry["certificate"]
    cache = open_cache(cache_path)
    split = "search" if cert["split"] == "search" else "calibration"
    labels = np.asarray(cache.labels(split))
    n = labels.size
    perm = np.random.default_rng(cert["seed"]).permutation(n)
    rows = perm[:cert["n_cal"]] if cert["split"] == "search" else perm
    probs, ids = np.asarray(cache.topk_probs(split)), np.asarray(cache.topk_ids(split))
    names = [e.name for e in cache.exits]
    pred = ids[-1, 0].copy()
    left = np.zeros(n, dtype=bool)
    for ex in entry["exits"]:
        e = names.index(ex["name"])
        go = ~left & (probs[e, 0].astype(np.float64) > ex["threshold"])
        pred[go], left = ids[e, 0][go], left | go
    right, base = (pred == labels)[rows], (ids[-1, 0] == labels)[rows]
    k_plus, k_minus = int(np.sum(base & ~right)), int(np.sum(~base & right))
    assert cert["n_cal"] == rows.size
    assert cert["observed_drop"] == pytest.approx((k_plus - k_minus) / rows.size)
    # Berger-Boos at the upper end of the discordance interval, summed over every D (no window)
    eps, delta, m = cert["certified_drop"], cert["delta"], rows.size
    gamma = delta / 10
    s = stats.beta.ppf(1 - gamma, k_plus + k_minus + 1, m - k_plus - k_minus)
    D = np.arange(m + 1)
    tail = stats.binom.pmf(D, m, s) @ stats.binom.cdf(np.floor((k_plus - k_minus + D) / 2), D, (s + eps) / (2 * s))
    assert cert["p_value"] == pytest.approx(gamma + tail, abs=1e-9) and cert["p_value"] <= delta


def test_certified_by_default(cache_dir, tmp_path, capsys):
    out = _run(capsys, [str(cache_dir), "--max-drop", "1", "--budget", "0.6", "--export", str(tmp_path / "front.json"),
                        "--export-choice", str(tmp_path / "chosen.json")])
    for words in ("certified: cheapest within 1.0 points of the base accuracy, with confidence 90%",
                  "drop <= 1.0 points certified at delta 0.1 on 6,000 calibration samples (50% of the search split, "
                  "cut with seed 0) by the exact trinomial test (Berger-Boos)",
                  "certified: most accurate within relative cost 0.6, with confidence 90%", "accuracy >= "):
        assert words in out
    chosen = json.loads((tmp_path / "chosen.json").read_text())["configs"][0]
    cert = chosen["certificate"]
    assert {k: cert[k] for k in ("kind", "bound", "delta", "n_cal", "certified_drop", "split", "fraction", "seed")} == \
        {"kind": "drop", "bound": "trinomial", "delta": 0.1, "n_cal": 6000, "certified_drop": 0.01, "split": "search",
         "fraction": 0.5, "seed": 0}
    assert all(isinstance(v, (int, float, str)) for v in cert.values())
    _recheck(cache_dir, chosen)
    front = json.loads((tmp_path / "front.json").read_text())["configs"]
    kinds = sorted(c["certificate"]["kind"] for c in front if "certificate" in c)
    assert kinds == ["cost", "drop"]


def test_risk_sets_delta_and_uncertified_is_labelled(cache_dir, tmp_path, capsys):
    out = _run(capsys, [str(cache_dir), "--max-drop", "1", "--risk", "0.05", "--show-uncertified", "--seed", "3",
                        "--export-choice", str(tmp_path / "c.json")])
    assert "with confidence 95%" in out and "delta 0.05" in out and "cut with seed 3" in out
    assert "for contrast, uncertified (chosen on the whole search split" in out
    chosen = json.loads((tmp_path / "c.json").read_text())["configs"][0]
    assert chosen["certificate"]["delta"] == 0.05
    _recheck(cache_dir, chosen)
    out = _run(capsys, [str(cache_dir), "--max-drop", "1", "--uncertified",
                        "--export-choice", str(tmp_path / "u.json")])
    assert "uncertified: cheapest within 1.0 points" in out and "certified at delta" not in out
    assert "certificate" not in json.loads((tmp_path / "u.json").read_text())["configs"][0]


def test_nothing_certified_says_what_it_would_take(cache_dir, capsys, monkeypatch):
    # without tempered candidates (near-base configurations that pass nearly any certifiable drop), nothing passes
    monkeypatch.setattr("search.pareto_testing._TEMPER", ())
    out = _run(capsys, [str(cache_dir), "--max-drop", "0.07"])
    line = next(x for x in out.splitlines() if x.startswith("certified:"))
    assert "nothing cheaper than the base model is certified within 0.07 points at delta 0.1" in line
    assert "the smallest drop certifiable here is" in line and "(none: base model)" in out


def test_a_calibration_split_is_the_calibration_set(cal_cache, tmp_path, capsys):
    save_cache(tmp_path / "cache", cal_cache)
    out = _run(capsys, [str(tmp_path / "cache"), "--max-drop", "1", "--export-choice", str(tmp_path / "c.json")])
    assert "on 6,000 calibration samples (the cache's calibration split)" in out
    chosen = json.loads((tmp_path / "c.json").read_text())["configs"][0]
    assert chosen["certificate"]["split"] == "calibration" and "fraction" not in chosen["certificate"]
    _recheck(tmp_path / "cache", chosen)
    assert "only cuts a search split when there is none" in _error(
        capsys, [str(tmp_path / "cache"), "--max-drop", "1", "--calibration-fraction", "0.3"])


def test_bad_input_is_one_line_before_any_search(cache_dir, cal_cache, tmp_path, capsys):
    c = str(cache_dir)
    for delta in ("0", "-0.1", "0.6", "nan"):
        assert "(0, 0.5]" in _error(capsys, [c, "--max-drop", "1", "--risk", delta])
    for fraction in ("0", "1", "1.5"):
        assert "in (0, 1)" in _error(capsys, [c, "--max-drop", "1", "--calibration-fraction", fraction])
    err = _error(capsys, [c, "--max-drop", "0.05"])
    assert "a calibration set of 6000 samples cannot certify a drop of 0.05 points" in err
    assert "the smallest drop it certifies is 0.0" in err
    assert "looks like a fraction; drops are in points" in _error(capsys, [c, "--max-drop", "0.005"])
    assert "50 points is above 20" in _error(capsys, [c, "--max-drop", "50"])
    assert "drop --risk" in _error(capsys, [c, "--max-drop", "1", "--uncertified", "--risk", "0.1"])
    arrays = {s: {f: np.array(cal_cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cal_cache.splits()}
    arrays["calibration"][fmt.SAMPLE_INDEX][:3] = arrays["holdout"][fmt.SAMPLE_INDEX][:3]
    save_cache(tmp_path / "overlap", InMemoryCache(dataclasses.replace(cal_cache.meta), arrays))
    assert "calibration split shares 3 rows with holdout" in _error(capsys, [str(tmp_path / "overlap"),
                                                                           "--max-drop", "1"])


def test_the_planned_calibration_set_is_the_one_used_refused_before_any_search(cache_dir, capsys):
    """Regression: the check before the search counted a cut of the whole split (10,800 samples here) where
    calibration is drawn from outside the fitted subsample (6,000), and let --budget with an empty part run
    the whole search before refusing it."""
    c = str(cache_dir)
    fit_on_half = ["--subsample", "6000", "--subsample-above", "0", "--calibration-fraction", "0.9"]
    assert "a calibration set of 6000 samples cannot certify a drop of 0.05 points" in _error(
        capsys, [c, "--max-drop", "0.05", *fit_on_half])
    assert "leaves the fit or the calibration part empty" in _error(
        capsys, [c, "--budget", "0.8", "--calibration-fraction", "0.00001"])
