"""The generic plan on structurally different timm families, and what it refuses."""
import pytest
import timm
import torch
from torch import nn

from exits import attach_exits
from exits.check import compaction_keeps_rows, segments_equal_forward
from exits.errors import InexactPlanError, UnknownModuleError, UnsupportedModelError
from exits.generic_plan import find_blocks, generic_plan
from exits.probe import probe_plan
from exits.segments import BackbonePlan, Step, register_plan

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

# name -> (timm kwargs, input side, what a boundary hands on besides the stream)
FAMILIES = {
    # skip connections across blocks: every dense layer reads all earlier outputs of its block
    "densenet121": (dict(growth_rate=8, block_config=(2, 2, 2, 2)), 32, "batch@0"),
    # prefix tokens: a class token and 4 register tokens, a rotary table computed once
    "vit_small_patch16_dinov3": (dict(img_size=32, depth=2, embed_dim=64, num_heads=2), 32, "constant"),
    # multi-scale stages: parallel branches at 4 resolutions, fused between blocks
    "hrnet_w18_small": ({}, 64, "batch@0"),
    # hybrid conv / attention: conv patch embeddings, attention blocks; the forward carries B, H, W
    "pvt_v2_b0": ({}, 32, "batch size"),
    # pixel tokens with the batch folded into dim 0 (16 pixels per patch), patch tokens as the stream
    "tnt_s_legacy_patch16_224": (dict(img_size=32, depth=2), 32, "batch@0x4"),
}


def make(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    kwargs, side, _ = FAMILIES[name]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=7, **kwargs).eval(), (3, side, side)


def _first_batch_tensor(out, batch: int) -> torch.Tensor:
    leaves = out if isinstance(out, (tuple, list)) else (out,)
    return next(t for t in leaves if isinstance(t, torch.Tensor) and t.shape[0] == batch)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_generic_plan_is_exact_heads_read_block_outputs_and_compaction_follows_the_state(name):
    backbone, size = make(name)
    model = attach_exits(backbone, points="blocks", heads=("linear", "conv"), input_size=size)
    assert model.plan.family == "generic" and len(model.exit_points) >= 2
    assert segments_equal_forward(model)
    assert compaction_keeps_rows(model)
    described = " ".join(s.out_spec.describe() for s in model.segments)
    assert FAMILIES[name][2] in described
    modules = dict(backbone.named_modules())
    seen = {}
    hooks = [modules[p.module].register_forward_hook(lambda m, i, o, n=p.module: seen.__setitem__(n, o))
             for p in model.exit_points]
    x = torch.randn(3, *size)
    try:
        with torch.no_grad():
            feats = model.forward_features_at(x)
            logits = model.forward_exits(x)
    finally:
        for h in hooks:
            h.remove()
    for p in model.exit_points:
        assert torch.equal(feats[p.position], _first_batch_tensor(seen[p.module], 3)), p.module
    assert all(z.shape == (3, 7) for z in logits) and len(logits) == 2 * len(model.exit_points) + 1


def test_prefix_tokens_and_token_layout_reach_the_heads():
    backbone, size = make("vit_small_patch16_dinov3")
    model = attach_exits(backbone, points="blocks", heads="token", input_size=size)
    assert {(p.layout, p.num_prefix_tokens, p.reduction) for p in model.exit_points} == {("nlc", 5, 16)}
    assert all(model.heads[e.key].pool == "token" for e in model.exits if e.key)


def test_per_class_models_are_cut_exactly_by_the_generic_plan_too():
    for name, kwargs, side in (("resnet10t", {}, 32), ("vit_tiny_patch16_224", dict(img_size=32, depth=2), 32)):
        torch.manual_seed(0)
        backbone = timm.create_model(name, num_classes=5, **kwargs).eval()
        plan = generic_plan(backbone)
        probe = probe_plan(backbone, plan, (3, side, side))  # raises unless bit-identical
        assert [s.name for s in plan.steps if s.kind == "block"] == ([f"layer{i}.0" for i in range(1, 5)] if
                                                                    name == "resnet10t" else ["blocks.0", "blocks.1"])
        assert len(probe.states) == len(plan.steps)


def test_blocks_come_from_feature_info_and_stages_stand_for_their_last_block():
    backbone, size = make("pvt_v2_b0")
    stems, stages, blocks = find_blocks(backbone)
    assert stages == [f"stages.{i}" for i in range(4)] and blocks[:2] == ["stages.0.blocks.0", "stages.0.blocks.1"]
    model = attach_exits(backbone, points="stages", input_size=size)
    assert [p.module for p in model.exit_points] == stages
    assert segments_equal_forward(model)


class _Block(nn.Module):
    def __init__(self, chs: int):
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class _TimmLike(nn.Module):
    """Blocks in a container, described by ``feature_info``, as timm models are."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(_Block(8), _Block(8), _Block(8))
        self.head = nn.Linear(8, 4)
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=8, reduction=2) for i in range(3)]

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class _Drifting(_TimmLike):
    """Its forward reads Python state that changes between calls: a trace bakes one value in."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x) * type(self).calls


class _Branchy(_TimmLike):
    def forward(self, x):
        x = self.blocks(self.stem(x))
        if x.sum() > 0:  # data-dependent control flow between blocks: not traceable
            x = -x
        return self.head(x.mean((2, 3)))


class _Recounted(_TimmLike):
    def forward(self, x):
        n = x.shape[0] + 1  # a value that changes with the batch but is no batch count
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))[: n - 1]


def test_exact_models_pass_and_an_inexact_cut_is_refused_unless_the_check_is_skipped():
    torch.manual_seed(0)
    model = attach_exits(_TimmLike(), points="blocks", input_size=(3, 16, 16))
    assert [p.module for p in model.exit_points] == ["blocks.0", "blocks.1", "blocks.2"]
    with pytest.raises(InexactPlanError, match=r"^drifting: the generic plan's steps differ from the model's forward"):
        attach_exits(_named(_Drifting(), "drifting"), points="blocks", input_size=(3, 16, 16))
    skipped = attach_exits(_Drifting(), points="blocks", input_size=(3, 16, 16), check_exact=False)
    assert len(skipped.exit_points) == 3


def _named(module: nn.Module, name: str) -> nn.Module:
    module.pretrained_cfg = {"architecture": name}
    return module


def test_a_wrong_per_class_plan_is_refused_by_the_probe():
    class Skipping(_TimmLike):
        pass

    @register_plan(Skipping)
    def _skip_a_block(m: Skipping) -> BackbonePlan:  # forgets blocks.1
        steps = (Step("stem", "stem", m.stem, (m.stem,)), Step("blocks.0", "block", m.blocks[0], (m.blocks[0],)),
                 Step("blocks.2", "block", m.blocks[2], (m.blocks[2],)),
                 Step("head", "tail", lambda x: m.head(x.mean((2, 3))), (m.head,)))
        return BackbonePlan("skipping", steps)

    with pytest.raises(InexactPlanError, match="the skipping plan's steps differ"):
        attach_exits(_named(Skipping(), "skipper"), points="blocks", input_size=(3, 16, 16))


class _Mixing(_TimmLike):
    def forward(self, x):
        x = self.blocks[0](self.stem(x))
        x = x + x.flip(0)  # each sample's features depend on another sample (as GCViT's global queries do)
        return self.head(self.blocks[2](self.blocks[1](x)).mean((2, 3)))


@pytest.mark.parametrize("module, match", [
    (_Mixing(), r"^mixing: a tensor of shape \(1, 8, 8, 8\) crossing the boundary after 'blocks.1' takes other "
                r"values for the same sample when another sample joins the batch"),
    (_Branchy(), r"^branchy: the generic plan cannot trace the forward between blocks with torch.fx"),
    (_Recounted(), r"^recounted: the value 2 crossing the boundary after .blocks.0. changes with the batch size other"),
])
def test_refusals_are_one_line_naming_the_model(module, match):
    name = type(module).__name__.strip("_").lower()
    with pytest.raises(UnsupportedModelError, match=match) as info:
        attach_exits(_named(module, name), points="blocks", input_size=(3, 16, 16))
    assert "\n" not in str(info.value)


def test_a_module_that_is_not_a_block_boundary_and_a_refused_input_size():
    with pytest.raises(UnknownModuleError, match="module 'blocks.0.conv' of timmlike is not a block boundary"):
        attach_exits(_named(_TimmLike(), "timmlike"), points=["blocks.0.conv"], input_size=(3, 16, 16))
    with pytest.raises(UnsupportedModelError,
                       match=r"^timmlike: step 'blocks.0' fails on an input of size \(1, 16, 16\)"):
        attach_exits(_named(_TimmLike(), "timmlike"), points="blocks", input_size=(1, 16, 16))


def test_deepcopy_and_pickle_of_a_generic_model_follow_the_copied_backbone():
    import copy
    import pickle

    backbone, size = make("densenet121")
    model = attach_exits(backbone, points="blocks", input_size=size)
    x = torch.randn(2, *size)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.no_grad():
            for p in clone.backbone.parameters():
                p.mul_(0.5)
            assert segments_equal_forward(clone) and segments_equal_forward(model)
            assert not torch.equal(clone.backbone(x), backbone(x))


def test_tracing_leaves_the_model_untouched_so_exits_attach_again():
    torch.manual_seed(0)
    backbone = timm.create_model("levit_128s", img_size=64, num_classes=5).eval()  # caches attention biases
    before = {n: dict(vars(m)) for n, m in backbone.named_modules()}
    for _ in range(2):
        model = attach_exits(backbone, points="blocks", input_size=(3, 64, 64))
        assert model.plan.family == "generic" and segments_equal_forward(model)
    after = {n: dict(vars(m)) for n, m in backbone.named_modules()}
    assert before.keys() == after.keys() and all(before[n].keys() == after[n].keys() for n in before)
    caches = [v for m in backbone.modules() for v in getattr(m, "attention_bias_cache", {}).values()]
    assert all(isinstance(v, torch.Tensor) for v in caches)
