"""Head training: schedule, frozen backbone, distillation, resume, data parallel ranks, the CLI."""
from __future__ import annotations

import multiprocessing as mp
import re

import pytest
import torch
from _fashion import fashion_files
from torch.utils.data import DataLoader

from exits import attach_exits
from exits.checkpoints import model_from_checkpoint, read_checkpoint, save_checkpoint
from exits.data import TensorDataset, load_splits
from exits.train import heads_loss, lr_at, main, train_backbone, train_heads


def tiny(seed: int = 0, heads=("linear",)):
    torch.manual_seed(seed)
    return attach_exits("resnet10t", points="stages", heads=heads, num_classes=4, input_size=(3, 32, 32))


def learnable(n: int = 48) -> TensorDataset:
    """Class c = a bright quadrant c: easy for heads on random features."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 4
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.1
    for i, c in enumerate(y.tolist()):
        x[i, :, (c // 2) * 16:(c // 2) * 16 + 16, (c % 2) * 16:(c % 2) * 16 + 16] += 2.0
    return TensorDataset(x, y)


def loader(ds, **kw):
    return DataLoader(ds, batch_size=16, shuffle=False, **kw)


def test_lr_schedule():
    lrs = [lr_at(s, 100, base_lr=1.0, warmup_steps=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] < 0.01


def test_heads_loss_distillation():
    logits = [torch.randn(5, 4, requires_grad=True), torch.randn(5, 4)]
    y = torch.randint(0, 4, (5,))
    ce = heads_loss(logits, y, [0])
    assert float(ce.detach()) == pytest.approx(float(torch.nn.functional.cross_entropy(logits[0].detach(), y)))
    same = [logits[1].clone().requires_grad_(True), logits[1]]
    assert float(heads_loss(same, y, [0], distill=1.0, temperature=3.0).detach()) == pytest.approx(0.0, abs=1e-6)


def test_train_heads_learns_and_keeps_backbone_frozen():
    model = tiny(heads=("linear", "mlp"))
    fp, events = model.fingerprint(), []
    history = train_heads(model, loader(learnable()), epochs=4, lr=5e-3, warmup_epochs=0.5, distill=0.3,
                          callback=lambda e, info: events.append(e))
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    assert set(history[-1]["acc"]) == {e.name for e in model.exits}
    assert max(history[-1]["acc"][e.name] for e in model.exits[:-1]) > 0.5
    assert model.fingerprint() == fp and not model.training
    assert events.count("epoch") == 4 and events.count("batch") == 12


def test_resume_equals_uninterrupted(tmp_path):
    ds = learnable()
    full = tiny()
    train_heads(full, loader(ds), epochs=2, lr=5e-3)

    half, states = tiny(), []
    train_heads(half, loader(ds), epochs=1, lr=5e-3, callback=lambda e, i: e == "epoch" and states.append(i["state"]))
    path = save_checkpoint(tmp_path / "c.pt", half, include_backbone=True, train_state=states[-1])
    resumed = model_from_checkpoint(path)
    history = train_heads(resumed, loader(ds), epochs=2, lr=5e-3, resume=read_checkpoint(path)["train"])
    assert [h["epoch"] for h in history] == [1, 2]
    assert resumed.head_fingerprint() == full.head_fingerprint()


def test_train_backbone():
    model = tiny()
    fp = model.fingerprint()
    history = train_backbone(model.backbone, loader(learnable()), epochs=2, lr=2e-3)
    assert len(history) == 2 and model.fingerprint() != fp
    assert not any(p.requires_grad for p in model.backbone.parameters()) and not model.backbone.training


def _rank_worker(rank: int, world: int, init: str, queue) -> None:
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model, ds = tiny(), learnable()
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, seed=0)
        history = train_heads(model, DataLoader(ds, batch_size=8, sampler=sampler), epochs=2, lr=5e-3)
        queue.put((rank, model.head_fingerprint(), history[-1]["n_samples"]))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_two_ranks_hold_the_same_heads(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank_worker, args=(r, 2, init, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [queue.get(timeout=5) for _ in range(2)]
    assert results[0][1] == results[1][1] != tiny().head_fingerprint()
    assert results[0][2] == 48  # metrics summed over ranks


def test_cli_train_then_resume(tmp_path, capsys, monkeypatch):
    held = []
    monkeypatch.setattr("exits.train.hold_freed_memory", lambda: held.append(1))
    root = fashion_files(tmp_path / "fm")
    out = tmp_path / "ckpt.pt"
    base = ["--model", "resnet10t", "--points", "stages", "--heads", "linear,mlp", "--dataset", "fashion_mnist",
            "--data-root", str(root), "--input-size", "32", "--crop-pct", "1.0", "--batch-size", "16",
            "--out", str(out), "--quiet"]
    assert main(base + ["--train-backbone-epochs", "1", "--epochs", "1"]) == 0
    assert held == [1]   # the epochs keep freed memory (exits.memory)
    printed = capsys.readouterr().out
    assert "layer4/mlp" in printed and str(out) in printed
    n_held = min(10000, len(load_splits("fashion_mnist", root, data_config=None).search))
    assert re.search(rf"^backbone after 1 epoch: held-out accuracy [0-9.]+% on {n_held:,} rows of the search split "
                     r"\(never trained on\)$", printed, re.M)
    assert re.search(r"^epoch 1: loss [0-9.]+ per head \(the training loss sums the 8 trained heads' losses: ",
                     printed, re.M)
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.startswith("  layer")}
    assert len(rows) == 8 and all(len(v) == 2 and v[0].endswith("%") and v[1].endswith("%") for v in rows.values())
    assert f"accuracy per exit (held out: {n_held:,} rows of the search split, never trained on;" in printed
    ckpt = read_checkpoint(out)
    assert ckpt["backbone"] is not None and ckpt["data_config"]["crop_pct"] == 1.0
    assert ckpt["data"] == {"dataset": "fashion_mnist", "search_fraction": 0.1, "seed": 0, "calibration_size": 0}
    assert len(ckpt["train"]["heads"]["history"]) == 1 and ckpt["train"]["backbone"]["epoch"] == 1
    assert main(base + ["--train-backbone-epochs", "1", "--epochs", "2", "--resume", "--seed", "1"]) == 2
    assert "would change the training rows" in capsys.readouterr().err
    assert main(base + ["--train-backbone-epochs", "1", "--epochs", "2", "--resume"]) == 0
    ckpt = read_checkpoint(out)
    assert [h["epoch"] for h in ckpt["train"]["heads"]["history"]] == [1, 2]
    assert model_from_checkpoint(out).fingerprint() == ckpt["backbone_fingerprint"]


def test_cli_refuses_random_backbone(tmp_path, capsys):
    root = fashion_files(tmp_path / "fm")
    code = main(["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(root),
                 "--out", str(tmp_path / "c.pt"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "random weights" in err[0]
    assert main(["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "c.pt"), "--train-backbone-epochs", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()
