"""ExitModel: exits, units, forward passes, savers, cache records, fingerprints, bad input."""
import json

import pytest
import timm
import torch
from torch import nn

from data_cache._base import CacheMeta, meta_from_manifest, meta_to_manifest
from exits import ExitModel, attach_exits
from exits.errors import ExitsError, UnknownHeadError, UnknownModelError, UnknownModuleError
from exits.macs import unit_macs

SIZE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def model() -> ExitModel:
    torch.manual_seed(0)
    return attach_exits("resnet10t", points="stages", heads={"linear": {}, "mlp_h32": {"type": "mlp", "hidden": 32}},
                        num_classes=6, input_size=SIZE)


def test_exits_units_and_positions(model):
    names = [e.name for e in model.exits]
    assert names == ["layer1/linear", "layer1/mlp_h32", "layer2/linear", "layer2/mlp_h32", "layer3/linear",
                     "layer3/mlp_h32", "layer4/linear", "layer4/mlp_h32", "head"]
    assert [e.position for e in model.exits] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert model.n_positions == 5 and model.num_classes == 6
    e = model.exit("layer2/mlp_h32")
    assert e.head == "mlp_h32" and e.units == ("segment:layer1", "segment:layer2", "head:layer2/mlp_h32")
    final = model.exits[-1]
    assert final.final and final.head == "final" and final.key is None
    assert final.units == tuple(s.name for s in model.segments)
    assert sorted(model.heads.keys()) == sorted(e.key for e in model.exits[:-1])
    assert [u.kind for u in model.units].count("segment") == 5
    assert model.head_configs == {"linear": {"type": "linear"}, "mlp_h32": {"type": "mlp", "hidden": 32}}


def test_forward_exits_one_pass_final_equals_backbone(model):
    x = torch.randn(3, *SIZE)
    model.eval()
    with torch.no_grad():
        outs = model.forward_exits(x)
        feats = model.forward_features_at(x)
        ref = model.backbone(x)
    assert len(outs) == len(model.exits) and all(o.shape == (3, 6) for o in outs)
    assert torch.equal(outs[-1], ref)
    assert len(feats) == model.n_positions and torch.equal(feats[-1], ref)
    assert torch.equal(outs[2], model.heads["layer2/linear"](feats[1]))


def test_backbone_frozen_heads_trainable(model):
    assert not any(p.requires_grad for p in model.backbone.parameters())
    params = model.head_parameters()
    assert params and all(p.requires_grad for p in params)
    assert {id(p) for p in params} == {id(p) for p in model.heads.parameters()}
    model.train()
    assert model.heads.training and not model.backbone.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loss = sum(o.logsumexp(1).mean() for o in model.forward_exits(torch.randn(2, *SIZE))[:-1])
    loss.backward()
    assert all(p.grad is not None for p in params)
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())  # BN stats untouched
    model.zero_grad(set_to_none=True)
    model.eval()


def test_cache_records_pass_the_cache_checks(model):
    macs = unit_macs(model)
    meta = CacheMeta(exits=tuple(model.cache_exits()), units=tuple(model.cache_units(macs, {"segment:head": 1e-3})),
                     n_classes=6, k=5, splits={"search": 4, "holdout": 4})
    back = meta_from_manifest(json.loads(json.dumps(meta_to_manifest(meta))))
    assert [e.name for e in back.exits] == [e.name for e in model.exits]
    assert back.units[-1].latency_s == 1e-3
    with pytest.raises(ExitsError, match="no MACs for units"):
        model.cache_units({})


def test_fingerprints_and_provenance(model):
    fp = model.fingerprint()
    assert fp.startswith("sha256:") and fp == model.fingerprint()
    hfp = model.head_fingerprint()
    with torch.no_grad():
        model.heads["layer1/linear"].fc.bias.add_(1.0)
    assert model.head_fingerprint() != hfp and model.fingerprint() == fp
    prov = json.loads(json.dumps(model.provenance()))
    assert prov["model"] == {"name": "resnet10t", "fingerprint": fp}
    assert prov["input"]["input_size"] == list(SIZE) and len(prov["input"]["mean"]) == 3
    assert model.data_config["input_size"] == SIZE and model.pretrained_cfg["architecture"] == "resnet10t"


def test_saver_runs_first_from_the_input():
    torch.manual_seed(0)
    m = attach_exits("resnet10t", points=["layer2"], heads="linear", num_classes=4, input_size=SIZE,
                     saver="mobilenetv3_small_050")
    assert [(e.name, e.position, e.head) for e in m.exits] == [
        ("saver", 0, "saver"), ("layer2/linear", 1, "linear"), ("head", 2, "final")]
    assert m.exits[0].units == ("saver",) and "saver" not in m.exits[1].units
    assert [u.kind for u in m.units] == ["saver", "segment", "head", "segment"]
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        outs = m.forward_exits(x)
        assert torch.equal(outs[0], m.saver(x)) and torch.equal(outs[-1], m.backbone(x))
    macs = unit_macs(m)
    whole = attach_exits(m.saver, points=[], input_size=SIZE)
    assert macs["saver"] == unit_macs(whole)["segment:head"] > 0
    assert not any(p.requires_grad for p in m.saver.parameters()) and m.saver_fingerprint().startswith("sha256:")


def test_saver_with_exits_of_its_own_and_trainable():
    torch.manual_seed(0)
    saver = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4)
    m = attach_exits("resnet10t", points=["layer3"], heads="linear", num_classes=4, input_size=SIZE,
                     saver=saver, saver_points=["blocks.1"], saver_heads="token", train_saver=True)
    assert [e.name for e in m.exits] == ["saver:blocks.1/token", "saver", "layer3/linear", "head"]
    assert m.exits[1].units == ("saver:blocks.1", "saver")
    assert [p.module for p in m.saver_exit_points] == ["blocks.1"] and m.saver_exit_points[0].position == 0
    assert len(m.head_parameters()) == len(list(m.heads.parameters())) + len(list(saver.parameters()))
    m.train()
    assert m.saver.training and not m.backbone.training
    m.eval()


def test_plain_module_needs_an_input_size():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ExitsError, match="pass input_size"):
        attach_exits(seq)
    m = attach_exits(seq, points=["2"], heads="mlp", input_size=(3, 2, 2))
    assert m.exit_points[0].layout == "nc" and m.forward_exits(torch.randn(2, 3, 2, 2))[0].shape == (2, 3)


@pytest.mark.parametrize("kwargs, error, culprit", [
    (dict(backbone="resnet_does_not_exist"), UnknownModelError, "'resnet_does_not_exist'"),
    (dict(points=["layer7"]), UnknownModuleError, "'layer7'"),
    (dict(heads=("linear", "fancy")), UnknownHeadError, "'fancy'"),
    (dict(num_classes=9, backbone=None), ExitsError, "num_classes=9"),
    (dict(heads={"a/b": {"type": "linear"}}), ExitsError, "'a/b'"),
    (dict(saver="mobilenetv3_small_050", backbone=None), ExitsError, "outputs 5 classes, expected the saver's 1000"),
    (dict(saver="no_such_saver"), UnknownModelError, "'no_such_saver'"),
])
def test_bad_input_is_one_line_naming_the_culprit(kwargs, error, culprit):
    kwargs = dict(kwargs)
    backbone = kwargs.pop("backbone", "resnet10t")
    if backbone is None:
        backbone = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    with pytest.raises(error) as exc:
        attach_exits(backbone, input_size=SIZE, **kwargs)
    assert culprit in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)
