"""``python -m exits.profile`` on the eager runtime: a tiny profile (tiny grid, one round), what it writes, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _runtime_fixtures import dump, make_export, tiny_model, tiny_splits

from data_cache import open_cache
from data_cache.cost_tables import read_cost_table
from exits.checkpoints import save_checkpoint
from exits.memory import memory_policy
from exits.profile import main
from search.config import ExitConfig
from search.problem import ExitProblem
from search.time_cost import TimeCostModel

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    model = tiny_model()
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, include_backbone=True)
    cache = dump(model, tiny_splits(), tmp / "cache")
    args = ["--checkpoint", str(ckpt), "--cache", str(tmp / "cache"), "--batch-size", "4", "--rounds", "1",
            "--min-time", "1e-4", "--threads", "1", "--quiet"]
    assert main(args + ["--name", "cpu-t1"]) == 0
    return tmp, args, cache


def test_the_table_times_every_unit_step_and_the_base(setup, capsys):
    tmp, _, cache = setup
    table = read_cost_table(cache, "cpu-t1", batch_size=4)
    assert table.grid == (1, 2, 4)
    assert [it.units for it in table.of_kind("segment", "head")] == [(u.name,) for u in cache.units]
    assert [it.exit for it in table.of_kind("step")] == [e.name for e in cache.exits[:-1]]
    assert [it.name for it in table.of_kind("base", "finish", "collect")] == ["finish", "collect", "base"]
    assert all(min(it.min_s) > 0 and all(a <= m <= b for a, m, b in zip(it.min_s, it.median_s, it.max_s, strict=True))
               for it in table.items)
    t = table.target
    assert (t["device"], t["threads"], t["batch_size"], t["runtime"], t["score"]) == ("cpu", 1, 4, "eager", "max_prob")
    assert {"torch", "numpy", "timm"} <= set(t["versions"]) and "loadavg_before" in t and t["date"]
    # the profile's runtime held freed memory (exits.memory), as the validations' and a server's runtime do
    assert t["memory"] == memory_policy() and t["memory"]["policy"] != "default"
    assert table.model_fingerprint == cache.meta.provenance["model"]["fingerprint"]
    assert table.cache_fingerprint == cache.fingerprint


def test_the_time_model_reads_the_profile(setup):
    _, _, cache = setup
    doc = make_export(cache)
    names = [e.name for e in cache.exits]
    for entry in doc["configs"]:
        cfg = ExitConfig(tuple(names.index(e["name"]) for e in entry["exits"]),
                         tuple(e["threshold"] for e in entry["exits"]), doc.get("score", "max_prob"))
        leave = ExitProblem(cache, "holdout").assign(cfg)
        for B in (1, 3, 4):
            est = TimeCostModel.from_cache(cache, "cpu-t1", batch_size=B).estimate(cfg.exits, leave)
            assert np.isfinite(est.time_per_sample_s) and est.time_per_sample_s > 0 and est.speedup > 0


def _refused(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err


def test_refusals_exit_2_with_one_line(setup, capsys, tmp_path):
    tmp, args, cache = setup
    _refused(capsys, args + ["--name", "cpu-t1"], "file exists; pass --overwrite to replace it")
    no_ckpt = [a for a in args if a not in ("--checkpoint", args[1])]
    _refused(capsys, no_ckpt + ["--name", "x"], "--runtime eager needs --checkpoint")
    _refused(capsys, args + ["--name", "x", "--bundle", str(tmp)], "--bundle is for --runtime onnx")
    _refused(capsys, args + ["--name", "x", "--runtime", "onnx"], "--runtime onnx needs --bundle")
    other = save_checkpoint(tmp_path / "other.pt", tiny_model(seed=1), include_backbone=True)
    _refused(capsys, ["--checkpoint", str(other)] + args[2:] + ["--name", "x"], "but the cache was dumped from")
    assert sorted(p.name for p in (tmp / "cache" / "cost_tables").iterdir()) == ["cpu-t1.json"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_an_absent_device_is_one_line(setup, capsys):
    _, args, _ = setup
    with pytest.raises(SystemExit) as info:
        main(args + ["--name", "gpu", "--device", "cuda"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--device" in err and "no CUDA device on this machine" in err


def test_overwrite_replaces_the_table(setup, capsys):
    tmp, args, cache = setup
    assert main(args + ["--name", "again"]) == 0
    first = json.loads((tmp / "cache" / "cost_tables" / "again.json").read_text())
    assert main(args + ["--name", "again", "--overwrite", "--rounds", "2"]) == 0
    out = capsys.readouterr()
    assert "replacing the existing file" in out.err
    second = read_cost_table(open_cache(tmp / "cache"), "again")
    assert first["measurement"]["rounds"] == 1 and second.measurement["rounds"] == 2
    # the base model's line gives the rounds' spread beside the median: a machine whose speed came in bursts shows
    base = second.of_kind("base")[0]
    assert (f"{1e3 * base.median_s[-1] / 4:.4f} ms per sample at batch 4 (rounds {1e3 * base.min_s[-1] / 4:.4f}-"
            f"{1e3 * base.max_s[-1] / 4:.4f})") in out.out


def test_the_default_is_fifteen_rounds():
    from exits.profile import DEFAULT_ROUNDS, _parser

    assert DEFAULT_ROUNDS == 15 and _parser().parse_args(["--cache", "c", "--name", "n"]).rounds == DEFAULT_ROUNDS


@pytest.mark.parametrize("extra, culprit", [
    (["--batch-size", "0"], "argument --batch-size"), (["--batch-size", "65537"], "argument --batch-size"),
    (["--threads", "0"], "argument --threads"),
    (["--rounds", "0"], "argument --rounds"), (["--min-time", "nan"], "argument --min-time"),
    (["--runtime", "tensorrt"], "argument --runtime"), (["--device", "bogus"], "argument --device"),
    (["--name", "../x"], "argument --name: '../x' is not a cost table name"),
])
def test_bad_options_are_one_line_before_any_work(capsys, extra, culprit):
    with pytest.raises(SystemExit) as info:
        main(["--cache", "c", "--name", "n"] + extra)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err and culprit in err, err


def test_exitsearch_profile_is_python_m_exits_profile(capsys):
    from data_cache.cli import main as exitsearch

    with pytest.raises(SystemExit) as info:
        exitsearch(["profile", "--help"])
    assert info.value.code == 0 and "python -m exits.profile" in capsys.readouterr().out


def test_overwrite_replaces_a_table_a_previous_process_wrote(setup):
    """Each run of the command is its own process: the replacement must not rest on what this process remembers
    (it once failed with "a file appeared there while this command ran" on a table of an earlier run)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tmp, args, cache = setup
    assert main(args + ["--name", "earlier"]) == 0
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(Path(__file__).parent)]))
    proc = subprocess.run([sys.executable, "-m", "exits.profile", *args, "--name", "earlier", "--overwrite",
                           "--rounds", "2"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_cost_table(open_cache(tmp / "cache"), "earlier").measurement["rounds"] == 2
