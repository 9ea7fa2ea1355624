"""Segments run in order reproduce the backbone exactly, for every supported family."""
import pytest
import timm
import torch
from torch import nn

from exits import attach_exits
from exits.errors import UnsupportedModelError
from exits.segments import cut_segments, plan_for, whole_plan

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


SWIN_SMALL = dict(img_size=32, window_size=2, embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 1, 1, 1))

# name -> (timm kwargs, input size, layout at exit points)
FAMILIES = {
    "resnet10t": ({}, (3, 32, 32), "nchw"),
    "convnext_atto": ({}, (3, 32, 32), "nchw"),
    "convnextv2_atto": ({}, (3, 32, 32), "nchw"),
    "efficientnet_b0": ({}, (3, 32, 32), "nchw"),
    "mobilenetv3_small_050": ({}, (3, 32, 32), "nchw"),
    "vit_tiny_patch16_224": (dict(img_size=32, depth=4), None, "nlc"),
    "deit_tiny_distilled_patch16_224": (dict(img_size=32, depth=2), None, "nlc"),
    "swin_tiny_patch4_window7_224": (SWIN_SMALL, None, "nhwc"),
    "davit_tiny": (dict(depths=(1, 1, 2, 1), embed_dims=(16, 32, 64, 128), num_heads=(1, 1, 2, 2)),
                   (3, 32, 32), "nchw"),
}


def make(name: str) -> tuple[nn.Module, tuple]:
    kwargs, input_size, _ = FAMILIES[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=7, **kwargs).eval()
    return model, input_size


def _run_segments(model, x):
    h = x
    for seg in model.segments:
        h = seg(h)
    return h


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_segments_reproduce_backbone_and_features_are_block_outputs(name):
    backbone, input_size = make(name)
    model = attach_exits(backbone, points="blocks", heads="linear", input_size=input_size)
    assert {p.layout for p in model.exit_points} == {FAMILIES[name][2]}
    modules = dict(backbone.named_modules())
    seen = {}
    hooks = [modules[p.module].register_forward_hook(lambda m, i, o, n=p.module: seen.__setitem__(n, o))
             for p in model.exit_points]
    x = torch.randn(2, *model.input_size)
    try:
        with torch.no_grad():
            ref = backbone(x)
    finally:
        for h in hooks:
            h.remove()
    assert not any(m._forward_hooks for m in modules.values())
    with torch.no_grad():
        assert torch.equal(_run_segments(model, x), ref)
        feats = model.forward_features_at(x)
        # what the backbone hands to its next block, read with (removed) read-only hooks
        for p in model.exit_points:
            assert torch.equal(feats[p.position], seen[p.module]), p.module
        assert torch.equal(feats[-1], ref)
        stages = attach_exits(backbone, points="stages", heads="linear", input_size=model.input_size)
        assert torch.equal(_run_segments(stages, x), ref)
    assert [s.position for s in model.segments] == list(range(len(model.exit_points) + 1))
    assert model.segments[-1].name == "segment:head"
    assert 0 < len(stages.exit_points) <= len(model.exit_points)


def test_every_block_is_a_position():
    backbone, input_size = make("convnextv2_atto")
    model = attach_exits(backbone, points="blocks", input_size=input_size)
    assert len(model.exit_points) == 12  # 2 + 2 + 6 + 2 blocks, as DyCE counts
    backbone, input_size = make("resnet10t")
    assert len(attach_exits(backbone, points="blocks", input_size=input_size).exit_points) == 4


def test_plain_sequential_stack():
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)),
    ).eval()
    model = attach_exits(seq, points="blocks", heads=("linear", "conv"), input_size=(3, 32, 32))
    assert [p.module for p in model.exit_points] == ["0", "1", "2"]
    assert [p.num_chs for p in model.exit_points] == [8, 16, 16]
    assert [p.reduction for p in model.exit_points] == [2, 4, 4]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        outs = model.forward_exits(x)
        assert torch.equal(outs[-1], seq(x))
    assert len(outs) == 7 and all(o.shape == (3, 5) for o in outs)


def test_segments_share_backbone_modules_and_are_not_registered():
    backbone, input_size = make("resnet10t")
    model = attach_exits(backbone, points="stages", input_size=input_size)
    assert model.segments[0].parts[0] is backbone.conv1
    n_backbone = sum(p.numel() for p in backbone.parameters())
    n_heads = sum(p.numel() for p in model.heads.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_backbone + n_heads


def test_cut_segments_and_whole_plan():
    backbone, _ = make("resnet10t")
    plan = plan_for(backbone)
    segs = cut_segments(plan, [("layer1.0", "layer1"), ("layer3.0", "layer3")], first_position=2)
    assert [s.name for s in segs] == ["segment:layer1", "segment:layer3", "segment:head"]
    assert [s.position for s in segs] == [2, 3, 4]
    assert segs[1].step_names == ("layer2.0", "layer3.0")
    whole = whole_plan(backbone)
    assert len(whole.steps) == 1 and whole.steps[0].fn is backbone


def test_a_model_without_blocks_is_refused_in_one_line_naming_it():
    class Odd(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedModelError, match="^Odd: no blocks found"):
        plan_for(Odd())


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "efficientnet_b0"])
def test_deepcopy_and_pickle_follow_the_copied_backbone(name):
    import copy
    import pickle

    backbone, input_size = make(name)
    model = attach_exits(backbone, points="stages", heads="linear", input_size=input_size)
    x = torch.randn(2, *model.input_size)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            for p in clone.backbone.parameters():
                p.mul_(0.5)
            assert torch.equal(_run_segments(clone, x), clone.backbone(x))
            assert torch.equal(_run_segments(model, x), backbone(x))
            assert not torch.equal(clone.backbone(x), backbone(x))
