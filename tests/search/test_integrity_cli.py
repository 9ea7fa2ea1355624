"""What search.pareto reads is checked the way data_cache.validate checks it, at every size (issue 13).

Regression tests: a stray 1 GiB sparse ``junk.npy`` once switched the checks off, so corrupted holdout
labels gave a wrong holdout accuracy with exit status 0; NaN scores were reported as a threshold the
user never gave.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache.bundled import bundled_cache_path
from data_cache.validate import main as validate_main
from search.pareto import main
from tests.data_cache._helpers import rewrite


@pytest.fixture
def bundled_copy(tmp_path):
    src = bundled_cache_path()
    assert src is not None
    dst = tmp_path / "cache"
    shutil.copytree(src, dst)
    return dst


def _stray_junk(path):
    with open(path / "junk.npy", "wb") as f:  # 1 GiB, sparse: no disk used
        f.truncate(1 << 30)


def _errors(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.strip().splitlines()


def test_stray_file_does_not_switch_checks_off(bundled_copy, capsys):
    _stray_junk(bundled_copy)
    labels = np.array(np.load(bundled_copy / "holdout" / fmt.LABELS))
    labels[: labels.size // 2] = (labels[: labels.size // 2] + 1) % 10
    np.save(bundled_copy / "holdout" / fmt.LABELS, labels)  # the manifest's checksum is now stale
    assert main([str(bundled_copy), "--methods", "dp", "--no-progress"]) == 2
    err = _errors(capsys)
    assert err[0].startswith("error: ") and "holdout/labels.npy: sha256: checksum mismatch" in err[0]
    assert capsys.readouterr().out == ""


def test_probabilities_above_one_are_refused_with_consistent_checksums(bundled_copy, capsys):
    _stray_junk(bundled_copy)
    probs = np.array(np.load(bundled_copy / "search" / fmt.TOPK_PROBS))
    probs[3, 0, :100] = 1.5
    rewrite(bundled_copy, "search", fmt.TOPK_PROBS, probs)  # checksum and fingerprint made to agree
    assert main([str(bundled_copy), "--methods", "dp", "--no-progress"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "search/topk_probs.npy: probabilities: outside [0, 1]" in err[0]


def test_skipping_is_explicit_and_named(bundled_copy, capsys):
    labels = np.array(np.load(bundled_copy / "holdout" / fmt.LABELS))
    labels[0] = (labels[0] + 1) % 10
    np.save(bundled_copy / "holdout" / fmt.LABELS, labels)
    assert validate_main([str(bundled_copy), "--quiet"]) == 2
    assert "checksum mismatch" in _errors(capsys)[0]
    assert validate_main([str(bundled_copy), "--quiet", "--skip-integrity-check"]) == 0
    capsys.readouterr()
    assert main([str(bundled_copy), "--methods", "greedy", "--no-progress", "--skip-integrity-check"]) == 0


def test_nan_scores_with_checks_skipped_name_the_file_not_a_threshold(bundled_copy, capsys):
    probs = np.array(np.load(bundled_copy / "search" / fmt.TOPK_PROBS))
    probs[2, 0, 7] = np.nan
    np.save(bundled_copy / "search" / fmt.TOPK_PROBS, probs)
    assert main([str(bundled_copy), "--methods", "dp", "--no-progress", "--skip-integrity-check"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and "threshold" not in err[0]
    assert "search/topk_probs.npy" in err[0] and "NaN or inf" in err[0]
    assert main([str(bundled_copy), "--methods", "dp", "--no-progress"]) == 2
    err = _errors(capsys)
    assert "search/topk_probs.npy" in err[0] and "threshold" not in " ".join(err)
