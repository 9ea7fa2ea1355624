"""The dump: recorded top-k equal the model's outputs, ranks and resume give the same cache, refusals."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _fashion import fashion_files

from data_cache import open_cache
from data_cache.dump import main as dump_main
from exits import attach_exits
from exits.checkpoints import save_checkpoint
from exits.data import TensorDataset
from exits.dump import deterministic, dump_cache, exit_topk

REPO = Path(__file__).resolve().parents[2]


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return attach_exits("resnet10t", points="blocks", heads=("linear",), num_classes=10, input_size=(3, 32, 32))


def tiny_splits(sizes=(("search", 20), ("holdout", 13))):
    g = torch.Generator().manual_seed(0)
    return {s: TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g),
                             sample_index=np.arange(n) * 3 + 1) for s, n in sizes}


def test_exit_topk_sorted_and_consistent():
    logits = [torch.randn(4, 10), torch.randn(4, 10)]
    ids, probs, z = exit_topk(logits, 3)
    assert ids.shape == probs.shape == (4, 2, 3) and ids.dtype == np.int32 and probs.dtype == np.float32
    assert (np.diff(probs, axis=2) <= 0).all()
    p = torch.softmax(logits[1], 1)
    assert np.allclose(probs[:, 1], p.topk(3, 1).values.numpy())
    assert torch.equal(z[:, 0], logits[0])


def test_dump_records_every_exit_of_one_forward(tmp_path):
    model, splits = tiny_model(), tiny_splits()
    cache = dump_cache(model, splits, tmp_path / "c", k=3, with_logits=True, batch_size=8,
                       split_definitions={"search": "s", "holdout": "h"})
    assert cache.splits() == ["search", "holdout"] and cache.n_samples("holdout") == 13
    assert [e.name for e in cache.exits] == [e.name for e in model.exits]
    assert {u.name for u in cache.units} == {u.name for u in model.units}
    with torch.no_grad():
        ref = torch.stack(model.eval().forward_exits(splits["search"].images), 1)  # (n, exits, classes)
    top = torch.softmax(ref, 2).topk(3, 2)
    np.testing.assert_array_equal(cache.topk_ids("search"), top.indices.permute(1, 2, 0).numpy())
    np.testing.assert_allclose(cache.topk_probs("search"), top.values.permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache.logits("search"), ref.permute(1, 0, 2).numpy(), rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(cache.labels("holdout"), splits["holdout"].labels)
    np.testing.assert_array_equal(cache.sample_index("holdout"), np.arange(13) * 3 + 1)
    prov = cache.manifest["provenance"]
    assert prov["model"]["fingerprint"] == model.fingerprint()
    assert prov["heads"]["fingerprint"] == model.head_fingerprint()
    assert prov["precision"] == "float32" and prov["batch_size"] == 8 and prov["created"]
    assert {"torch", "timm", "numpy", "python"} <= set(prov["versions"])
    assert cache.meta.split_definitions == {"search": "s", "holdout": "h"}
    assert cache.meta.costs["macs_counter"] and all(u.macs > 0 for u in cache.units)


def test_dump_refuses_labels_outside_classes(tmp_path):
    splits = tiny_splits()
    splits["search"].labels_[0] = 12
    with pytest.raises(ValueError, match="labels reach 12"):
        dump_cache(tiny_model(), splits, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_deterministic_context_restores_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before


class _Kill(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    model, splits = tiny_model(), tiny_splits()
    full = dump_cache(model, splits, tmp_path / "full", batch_size=4)
    calls = []

    def die(split: str, done: int, total: int) -> None:
        calls.append(done)
        if split == "holdout" and done >= 8:
            raise _Kill

    with pytest.raises(_Kill):
        dump_cache(model, splits, tmp_path / "part", batch_size=4, progress=die)
    assert not (tmp_path / "part" / "manifest.json").exists()
    with pytest.raises(ValueError, match="half-written"):  # neither resume nor overwrite
        dump_cache(model, splits, tmp_path / "part", batch_size=4)
    seen = []
    resumed = dump_cache(model, splits, tmp_path / "part", batch_size=4, resume=True,
                         progress=lambda s, d, t: seen.append((s, d)))
    assert seen[0] == ("search", 20) and ("holdout", 8) in seen  # done rows skipped
    assert resumed.fingerprint == full.fingerprint


def _rank_worker(rank: int, world: int, init: str, out: str, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        cache = dump_cache(tiny_model(), tiny_splits(), out, batch_size=4)
        queue.put((rank, None if cache is None else cache.fingerprint))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_two_ranks_give_the_single_process_cache(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise equality needs the same kernels: one thread per process, as torchrun sets
    try:
        single = dump_cache(tiny_model(), tiny_splits(), tmp_path / "single", batch_size=4)
    finally:
        torch.set_num_threads(threads)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank_worker, args=(r, 2, init, str(tmp_path / "multi"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    results = dict(queue.get(timeout=5) for _ in range(2))
    assert results[1] is None and results[0] == single.fingerprint
    assert not (tmp_path / "multi" / ".parts").exists()


# -- command line --------------------------------------------------------------------------------

@pytest.fixture
def cli_setup(tmp_path):
    data = fashion_files(tmp_path / "fm", 30, 10)
    model = tiny_model()
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, include_backbone=True,
                           data={"dataset": "fashion_mnist", "search_fraction": 0.2, "seed": 0})
    base = ["--model", "resnet10t", "--checkpoint", str(ckpt), "--dataset", "fashion_mnist", "--data-root", str(data),
            "--batch-size", "4", "--k", "3", "--quiet"]
    return tmp_path, base


def _run(argv, capsys):
    code = dump_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_dump_and_validate(cli_setup, capsys, monkeypatch):
    tmp_path, base = cli_setup
    held = []
    monkeypatch.setattr("exits.dump_cli.hold_freed_memory", lambda: held.append(1))
    code, out, err = _run(base + ["--out", str(tmp_path / "c"), "--logits"], capsys)
    assert code == 0, err
    assert held == [1]   # the pass keeps freed memory (exits.memory)
    cache = open_cache(tmp_path / "c")
    assert cache.n_samples("search") == 6 and cache.n_samples("holdout") == 10 and cache.has_logits("search")
    prov = cache.manifest["provenance"]
    assert prov["dataset"]["name"] == "fashion_mnist" and prov["dataset"]["parameters"]["search_fraction"] == 0.2
    assert prov["command"].startswith("python -m data_cache.dump") and prov["input"]["input_size"] == [3, 32, 32]
    assert "seed=0" in cache.meta.split_definitions["search"]
    from data_cache.validate import main as validate_main
    assert validate_main([str(tmp_path / "c")]) == 0
    assert "layer1.0/linear" in capsys.readouterr().out


def test_cli_writes_a_calibration_split_kept_out_of_training(cli_setup, capsys):
    tmp_path, base = cli_setup
    ckpt = save_checkpoint(tmp_path / "cal.pt", tiny_model(), include_backbone=True,
                           data={"dataset": "fashion_mnist", "search_fraction": 0.2, "seed": 0, "calibration_size": 8})
    argv = list(base)
    argv[argv.index("--checkpoint") + 1] = str(ckpt)
    code, _, err = _run(argv + ["--out", str(tmp_path / "c")], capsys)  # the checkpoint's calibration size
    assert code == 0, err
    cache = open_cache(tmp_path / "c")
    assert cache.splits() == ["search", "calibration", "holdout"] and cache.n_samples("calibration") == 8
    search, cal = set(cache.sample_index("search").tolist()), set(cache.sample_index("calibration").tolist())
    assert not search & cal and len(search | cal) == 14
    assert "never trained on" in cache.meta.split_definitions["calibration"]
    parameters = cache.manifest["provenance"]["dataset"]["parameters"]
    assert parameters["calibration_size"] == 8 and parameters["split_parts"]["calibration"] == "train"
    code, _, err = _run(argv + ["--out", str(tmp_path / "c4"), "--calibration-size", "4"], capsys)
    assert code == 0 and set(open_cache(tmp_path / "c4").sample_index("calibration").tolist()) <= cal
    code, _, err = _run(argv + ["--out", str(tmp_path / "c9"), "--calibration-size", "9"], capsys)
    assert code == 2 and "would hold training rows" in err and not (tmp_path / "c9").exists()


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_refusals_exit_2_and_keep_files(cli_setup, capsys):
    tmp_path, base = cli_setup
    out = ["--out", str(tmp_path / "c")]
    assert _run(base + out, capsys)[0] == 0
    before = _snapshot(tmp_path / "c")

    def refused(argv, culprit):
        code, _, err = _run(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and culprit in lines[0], err
        assert _snapshot(tmp_path / "c") == before

    refused(base + out, "already holds a complete cache")
    out = out + ["--overwrite"]                  # bad inputs with --overwrite must not touch the cache either

    def swap(flag: str, value: str) -> list[str]:
        argv = list(base)
        argv[argv.index(flag) + 1] = value
        return argv

    refused(swap("--model", "resnet_nope") + out, "resnet_nope")
    refused(swap("--data-root", str(tmp_path / "missing")) + out, "missing")
    refused(swap("--model", "resnet18") + out, "not 'resnet18'")
    other = save_checkpoint(tmp_path / "other.pt", tiny_model(seed=1), include_backbone=False, backbone_weights=None)
    ck = torch.load(other, weights_only=True)
    ck["backbone"] = tiny_model(seed=2).backbone.state_dict()  # heads belong to another backbone's weights
    torch.save(ck, other)
    refused(swap("--checkpoint", str(other)) + out, "heads were trained for backbone")
    refused(base + out + ["--search-fraction", "0.5"], "search_fraction=0.2")
    refused(base + out + ["--input-size", "64"], "drop --input-size")
    refused(base + out + ["--calibration-size", "5"], "train with --calibration-size 5")


def test_cli_killed_then_resumed(cli_setup, capsys, monkeypatch):
    tmp_path, base = cli_setup
    assert _run(base + ["--out", str(tmp_path / "full")], capsys)[0] == 0
    from data_cache.writer import CacheWriter

    real_write, calls = CacheWriter.write, []

    def dying_write(self, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies after three shards
        calls.append(args)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "write", dying_write)
    out = ["--out", str(tmp_path / "part")]
    with pytest.raises(KeyboardInterrupt):
        dump_main(base + out)
    monkeypatch.setattr(CacheWriter, "write", real_write)
    shards = _snapshot(tmp_path / "part")
    assert not (tmp_path / "part" / "manifest.json").exists() and len(shards) == 4  # 3 shards + meta
    code, _, err = _run(base + out, capsys)
    assert code == 2 and "half-written" in err and "--resume" in err
    assert _snapshot(tmp_path / "part") == shards
    assert _run(base + out + ["--resume"], capsys)[0] == 0
    assert open_cache(tmp_path / "part").fingerprint == open_cache(tmp_path / "full").fingerprint


@pytest.mark.slow
def test_torchrun_two_ranks_cli(cli_setup):
    tmp_path, base = cli_setup
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "data_cache.dump"]
    subprocess.run(cmd + base + ["--out", str(tmp_path / "multi")], check=True, env=env, cwd=REPO,
                   capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-m", "data_cache.dump"] + base + ["--out", str(tmp_path / "single")],
                   check=True, env=env, cwd=REPO, capture_output=True, timeout=120)
    assert open_cache(tmp_path / "multi").fingerprint == open_cache(tmp_path / "single").fingerprint


def test_latency_is_recorded_per_unit(tmp_path):
    torch.manual_seed(0)
    model = attach_exits("resnet10t", points="stages", heads="linear", num_classes=10, input_size=(3, 32, 32))
    cache = dump_cache(model, tiny_splits((("search", 4), ("holdout", 4))), tmp_path / "c", latency_batch_size=2)
    assert all(u.latency_s is not None and u.latency_s > 0 for u in cache.units)
    assert cache.meta.costs["latency"]["batch_size"] == 2 and "cpu" in cache.meta.costs["latency"]["device"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(cli_setup, capsys):
    import signal
    import time

    tmp_path, base = cli_setup
    argv = list(base)
    argv[argv.index("--batch-size") + 1] = "1"  # one shard per row
    assert _run(argv + ["--out", str(tmp_path / "full")], capsys)[0] == 0
    out = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "data_cache.dump"] + argv + ["--out", str(out)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob(".parts/*/0*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (out / "manifest.json").exists():
        pytest.skip("the dump finished before it could be killed")
    done = len(list(out.glob(".parts/*/0*.npz")))
    assert 3 <= done < 16 and not (out / "manifest.json").exists()
    assert _run(argv + ["--out", str(out), "--resume"], capsys)[0] == 0
    assert open_cache(out).fingerprint == open_cache(tmp_path / "full").fingerprint


def test_a_splits_bar_closes_when_the_split_is_done():
    """Regression: every split's bar stayed open until the whole dump ended, so its final rate averaged its rows
    over the later splits' time too (about four times too low on the demo). Each closes when its split is done,
    and a resumed split starts at the rows already written."""
    import io

    from exits.dump_cli import split_bar

    out, bars = io.StringIO(), {}
    split_bar(bars, "search", 0, 100, file=out)
    split_bar(bars, "search", 64, 100, file=out)
    assert not bars["search"].disable
    split_bar(bars, "search", 100, 100, file=out)
    assert bars["search"].disable                           # closed: its rate is frozen at its own rows
    split_bar(bars, "holdout", 40, 50, world=2, file=out)     # resumed at 40 of 50 rows
    assert bars["holdout"].n == 40 and bars["holdout"].desc == "dump holdout (rank 0 of 2, its rows)"
    assert "dump search: 100%" in out.getvalue() and not bars["holdout"].disable
