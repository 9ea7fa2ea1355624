"""Issue 20, every read guarded on the search side: values read with the integrity pass skipped are still
range-checked before they reach a certificate; exits that are never right are flagged by data_cache.validate and
search.pareto; --memory-limit counts every split the run loads; a budget query on a cache without early exits."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache.bundled import bundled_cache_path
from data_cache.synthetic import write_synthetic_cache
from data_cache.validate import main as validate_main
from search.pareto import main
from tests.data_cache._helpers import rewrite


@pytest.fixture
def bundled_copy(tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(bundled_cache_path(), dst)
    return dst


def _run(capsys, main_, argv) -> tuple[int, str, list[str]]:
    status = main_(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err.strip().splitlines()


def _edit(path, split, fname, change) -> None:
    arr = np.array(np.load(path / split / fname))
    change(arr)
    rewrite(path, split, fname, arr)


@pytest.mark.parametrize("split, fname, change, said", [
    ("calibration", fmt.TOPK_PROBS, lambda a: a.__setitem__((3, 0, 5), 1.5), "probabilities: 1.5 at exit"),
    ("search", fmt.TOPK_PROBS, lambda a: a.__setitem__((2, 0, 9), -0.25), "probabilities: -0.25 at exit"),
    ("calibration", fmt.TOPK_IDS, lambda a: a.__setitem__((4, 0, 0), 10), "class ids: 10 at exit"),
    ("holdout", fmt.LABELS, lambda a: a.__setitem__(7, 12), "labels: 12 is outside [0, 9]"),
])
def test_skipped_integrity_check_still_refuses_values_it_reads(bundled_copy, capsys, split, fname, change, said):
    _edit(bundled_copy, split, fname, change)
    argv = [str(bundled_copy), "--methods", "greedy", "--no-progress", "--max-drop", "1", "--skip-integrity-check",
            "--export", str(bundled_copy.parent / "e.json")]
    status, out, err = _run(capsys, main, argv)
    assert status == 2 and len(err) == 1, err
    assert f"{split}/{fname}" in err[0] and said in err[0]
    assert "certified" not in out and not (bundled_copy.parent / "e.json").exists()


def _never_right(path, exit_index: int) -> None:
    """Exit ``exit_index``'s top-k made wrong on every sample of every split (top-1 = label + 1)."""
    for split in ("search", "calibration", "holdout"):
        labels = np.load(path / split / fmt.LABELS)
        ids = np.array(np.load(path / split / fmt.TOPK_IDS))
        for j in range(ids.shape[1]):
            ids[exit_index, j] = (labels + 1 + j) % 10
        rewrite(path, split, fmt.TOPK_IDS, ids)


@pytest.mark.parametrize("which", ["early", "final"])
def test_an_exit_never_right_is_flagged(bundled_copy, capsys, which):
    from data_cache import open_cache

    cache = open_cache(bundled_copy)
    index = 2 if which == "early" else len(cache.exits) - 1
    name = cache.exits[index].name
    _never_right(bundled_copy, index)
    status, _, err = _run(capsys, validate_main, [str(bundled_copy), "--quiet"])
    assert status == 0 and len(err) == 3 and all(line.startswith("warning: ") and name in line for line in err)
    assert ("the base model" in err[0]) == (which == "final") and "never right on split 'search'" in err[0]
    status, _, err = _run(capsys, main, [str(bundled_copy), "--methods", "greedy", "--no-progress"])
    assert status == 0 and len(err) == 1 and err[0].startswith("warning: ") and name in err[0]
    assert "never right on split 'search'" in err[0]


def test_a_usual_cache_is_not_flagged(bundled_copy, capsys):
    status, _, err = _run(capsys, validate_main, [str(bundled_copy), "--quiet"])
    assert status == 0 and err == []


def test_memory_limit_counts_the_calibration_split(bundled_copy, capsys):
    # search 6,000 + calibration 10,000 + holdout 10,000 rows x 17 exits; greedy: 6 bytes per row and exit
    argv = [str(bundled_copy), "--methods", "greedy", "--no-progress"]
    need_search = 6_000 * 17 * 6 / 1e9
    limit = f"{need_search * 1.5:.6f}"              # enough for the search split alone, not for calibration too
    status, _, err = _run(capsys, main, argv + ["--max-drop", "1", "--memory-limit", limit])
    assert status == 2 and len(err) == 1 and "calibration" in err[0] and "--memory-limit" in err[0], err
    status, _, err = _run(capsys, main, argv + ["--memory-limit", limit])       # no query: no calibration read
    assert status == 0, err


@pytest.mark.parametrize("extra", [["--calibration-fraction", "0.5"], ["--uncertified"]])
def test_budget_on_a_cache_without_early_exits(tmp_path, capsys, extra):
    write_synthetic_cache(tmp_path / "c0", 400, 0, seed=0)
    argv = [str(tmp_path / "c0"), "--methods", "dp", "--no-progress", *extra]
    status, out, err = _run(capsys, main, argv + ["--budget", "0.5"])
    assert status == 2 and len(err) == 1, err
    assert "no early exits" in err[0] or "certifiable here is 1.0000" in err[0]
    status, out, err = _run(capsys, main, argv + ["--budget", "1"])
    if "--uncertified" in extra:
        assert status == 0 and "none: base model" in out, err
    else:  # the betting test cannot certify a mean equal to the budget: refused in one line, not a traceback
        assert status == 2 and len(err) == 1 and "certifiable here is 1.0000" in err[0], err
