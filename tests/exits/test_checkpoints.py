"""Head checkpoints: round trip, strict loading, refusal of heads for another backbone, paired weights."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from exits import attach_exits
from exits.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_backbone_weights,
    load_heads,
    load_paired_state_dict,
    model_from_checkpoint,
    offline_weights_path,
    read_checkpoint,
    save_checkpoint,
)


def tiny(seed: int = 0, heads=("linear",), saver=None):
    torch.manual_seed(seed)
    return attach_exits("resnet10t", points="stages", heads=heads, num_classes=5, input_size=(3, 32, 32), saver=saver)


def test_round_trip_with_backbone(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model, include_backbone=True, train_state={"epoch": 3},
                           data={"dataset": "mnist", "search_fraction": 0.1, "seed": 0})
    ckpt = read_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["model"] == "resnet10t" and ckpt["train"] == {"epoch": 3}
    assert ckpt["backbone_fingerprint"] == model.fingerprint() and ckpt["data"]["dataset"] == "mnist"
    again = model_from_checkpoint(path, model_name="resnet10t")
    assert again.fingerprint() == model.fingerprint() and again.head_fingerprint() == model.head_fingerprint()
    assert [e.name for e in again.exits] == [e.name for e in model.exits]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), again.eval()(x), strict=True))


def test_round_trip_with_saver(tmp_path):
    model = tiny(saver="resnet10t")
    path = save_checkpoint(tmp_path / "c.pt", model, include_backbone=True)
    again = model_from_checkpoint(path)
    assert again.saver_fingerprint() == model.saver_fingerprint() and again.exits[0].name.startswith("saver")


def test_heads_for_another_backbone_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", tiny(seed=0), include_backbone=True)
    other = tiny(seed=1)  # same architecture, other weights
    before = other.head_fingerprint()
    with pytest.raises(CheckpointError, match="heads were trained for backbone resnet10t"):
        load_heads(other, path)
    assert other.head_fingerprint() == before
    with pytest.raises(CheckpointError, match="not 'resnet18'"):
        model_from_checkpoint(path, model_name="resnet18")


def test_strict_head_loading(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path / "c.pt", model)
    ckpt = read_checkpoint(path)
    ckpt["heads"] = OrderedDict(list(ckpt["heads"].items())[:-1])
    with pytest.raises(CheckpointError, match="head weights do not fit"):
        load_heads(model, ckpt)


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other/9"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="format"):
        read_checkpoint(tmp_path / "other.pt")
    path = save_checkpoint(tmp_path / "c.pt", tiny())
    with pytest.raises(CheckpointError, match="no backbone weights"):
        model_from_checkpoint(path)


def test_paired_loading():
    src = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    dst = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4), fc=nn.Linear(4, 2)))
    load_paired_state_dict(dst, src.state_dict())
    assert torch.equal(dst.fc.weight, src[2].weight)
    with pytest.raises(CheckpointError, match="do not pair"):
        load_paired_state_dict(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)), src.state_dict())
    with pytest.raises(CheckpointError, match="tensors"):
        load_paired_state_dict(nn.Linear(4, 2), src.state_dict())


def test_backbone_weight_file(tmp_path):
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    load_backbone_weights(b, tmp_path / "w.pt")
    assert torch.equal(a.weight, b.weight)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_backbone_weights(nn.Linear(3, 4), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="no offline weights"):
        offline_weights_path("resnet50")
