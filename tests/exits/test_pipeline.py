"""exits.pipeline end to end on a few random 28x28 images: every step's outputs, a cache reproduced run to run."""
from __future__ import annotations

import json

import pytest
from _fashion import fashion_files

from data_cache import open_cache
from exits.pipeline import main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def test_pipeline_runs_every_step_and_reproduces_its_cache(tmp_path, capsys):
    root = fashion_files(tmp_path / "fm", 60, 20)
    bundled = tmp_path / "bundled"
    common = ["--data-root", str(root), "--backbone-epochs", "1", "--head-epochs", "1", "--batch-size", "16",
              "--calibration-size", "24", "--max-drop", "20",
              "--front-configs", "2", "--threads", "1", "--bundled", str(bundled)]
    assert main(["--out", str(tmp_path / "first")] + common) == 1  # nothing bundled to match
    assert "differs from the bundled one" in capsys.readouterr().out
    first = tmp_path / "first"
    for name in ("checkpoint.pt", "front.json", "choice.json", "front.png", "report_choice.json", "report_front.json"):
        assert (first / name).is_file(), name
    cache = open_cache(first / "cache")
    assert (cache.n_samples("search"), cache.n_samples("calibration"), cache.n_samples("holdout")) == (6, 24, 20)
    report = json.loads((first / "report_choice.json").read_text())
    assert [c["agreement"] for c in report["configs"]] == [1.0]

    assert main(["--out", str(tmp_path / "first"), "--from-step", "search", "--update-bundled"] + common) == 0
    assert open_cache(bundled).fingerprint == cache.fingerprint
    assert (tmp_path / "bundled.checkpoint.pt").read_bytes() == (first / "checkpoint.pt").read_bytes()
    assert main(["--out", str(tmp_path / "second")] + common) == 0  # trained and dumped again from scratch
    assert "the pipeline reproduced the bundled cache" in capsys.readouterr().out
