"""Head registry and head types on every feature layout."""
import json

import pytest
import torch
from torch import nn

from exits import create_head, list_heads, register_head
from exits.errors import ExitsError, UnknownHeadError
from exits.heads import ExitHead, MLPHead
from exits.layers import GlobalPool, get_act_layer, to_nchw

FEATURES = {
    "nchw": torch.randn(2, 16, 4, 4),
    "nhwc": torch.randn(2, 4, 4, 16),
    "nlc": torch.randn(2, 17, 16),  # class token + 4x4 patches
    "nc": torch.randn(2, 16),
}


def test_registry_lists_builtin_heads():
    assert {"linear", "mlp", "conv", "token", "mlp1", "mlp3_h500", "mlp5_h1000"} <= set(list_heads())
    assert list_heads("mlp*") == ["mlp", "mlp1", "mlp3_h500", "mlp3_h1000", "mlp5_h500", "mlp5_h1000"]


def test_unknown_head_names_culprit_and_valid_names():
    with pytest.raises(UnknownHeadError, match=r"unknown head type 'lineer'; registered: .*linear") as exc:
        create_head("lineer", 16, 10)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("layout", sorted(FEATURES))
@pytest.mark.parametrize("name", ["linear", "mlp", "mlp3_h500", "conv", "token"])
def test_every_head_accepts_every_layout(name, layout):
    head = create_head(name, 16, 10, layout=layout, num_prefix_tokens=1 if layout == "nlc" else 0)
    out = head(FEATURES[layout])
    assert out.shape == (2, 10)
    assert head(FEATURES[layout], pre_logits=True).shape[0] == 2
    json.dumps(head.get_params())


def test_head_options_are_json_values():
    head = create_head("mlp", 16, 10, hidden=[32, 8], act="gelu", drop=0.1)
    assert isinstance(head, MLPHead)
    assert [m.out_features for m in head.hidden_layers if isinstance(m, nn.Linear)] == [32, 8]
    assert isinstance(head.hidden_layers[1], nn.GELU)
    assert head.get_params()["hidden"] == [32, 8]
    dyce = create_head("mlp3_h500", 16, 10)
    assert [m.out_features for m in dyce.modules() if isinstance(m, nn.Linear)] == [500, 500, 10]
    assert dyce.get_params()["hidden"] == [500, 500]
    assert create_head("mlp", 16, 10, hidden=None).hidden == (256,)  # None means "not given"


def test_bad_options_are_one_clear_error():
    with pytest.raises(ExitsError, match="head 'mlp': bad options \\['hiden'\\]"):
        create_head("mlp", 16, 10, hiden=3)
    with pytest.raises(ExitsError, match="unknown activation 'relu6x'"):
        create_head("mlp", 16, 10, act="relu6x")
    with pytest.raises(ExitsError, match="unknown pool type 'median'"):
        create_head("linear", 16, 10, pool="median")
    with pytest.raises(ExitsError, match="pool='token' needs token features"):
        create_head("linear", 16, 10, layout="nchw", pool="token")


def test_token_head_pools_class_or_mean_token():
    x = FEATURES["nlc"]
    head = create_head("token", 16, 10, layout="nlc", num_prefix_tokens=1)
    assert head.pool == "token"
    assert torch.allclose(head(x, pre_logits=True), head.norm(x[:, 0]))
    mean = create_head("token", 16, 10, layout="nlc", num_prefix_tokens=1, pool="avg")
    assert torch.allclose(mean(x, pre_logits=True), mean.norm(x[:, 1:].mean(1)))
    assert create_head("token", 16, 10, layout="nhwc").pool == "avg"


def test_layers_pool_and_layout():
    x = FEATURES["nchw"]
    assert torch.allclose(GlobalPool("avg", "nchw")(x), x.mean((2, 3)))
    assert torch.allclose(GlobalPool("max", "nhwc")(x.permute(0, 2, 3, 1)), x.amax((2, 3)))
    assert torch.equal(to_nchw(x.permute(0, 2, 3, 1), "nhwc"), x)
    tokens = torch.cat([torch.zeros(2, 1, 16), x.flatten(2).transpose(1, 2)], 1)
    assert torch.equal(to_nchw(tokens, "nlc", 1), x)
    with pytest.raises(ExitsError, match="square grid"):
        to_nchw(torch.randn(2, 6, 16), "nlc", 1)
    assert get_act_layer(nn.ReLU) is nn.ReLU


def test_register_a_new_head_type():
    @register_head("test_zero")
    class ZeroHead(ExitHead):
        def __init__(self, in_chs, num_classes, layout="nchw", num_prefix_tokens=0, scale: float = 1.0):
            super().__init__()
            self.in_chs, self.num_classes, self.layout, self.num_prefix_tokens, self.scale = (
                in_chs, num_classes, layout, num_prefix_tokens, scale)
            self.fc = nn.Linear(in_chs, num_classes)

        def forward_pre_logits(self, x):
            return GlobalPool("avg", self.layout)(x) * self.scale

    head = create_head("test_zero", 16, 3, scale=0.0)
    assert "test_zero" in list_heads("test_*")
    assert torch.allclose(head(FEATURES["nchw"]), head.fc.bias.expand(2, 3))
    assert head.get_params() == {"in_chs": 16, "num_classes": 3, "layout": "nchw", "num_prefix_tokens": 0,
                                 "scale": 0.0}


@pytest.mark.parametrize("name", ["linear", "mlp", "mlp3_h500", "token"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "nlc"])
def test_heads_compute_what_their_modules_compose(name, layout):
    """The heads run their layers without module calls (batch 1 pays each call); the result is what the modules
    in order give, bit for bit, and dropout still acts in training."""
    x = FEATURES[layout]
    prefix = 1 if layout == "nlc" else 0
    torch.manual_seed(0)
    head = create_head(name, 16, 10, layout=layout, num_prefix_tokens=prefix, drop=0.5).eval()
    pooled = GlobalPool(head.pool, layout, prefix)(x)
    if isinstance(head, MLPHead):
        pooled = head.hidden_layers(pooled)
    elif hasattr(head, "norm"):
        pooled = head.norm(pooled)
    with torch.no_grad():
        assert torch.equal(head(x), head.fc(pooled))
        assert torch.equal(head(x, pre_logits=True), pooled)
        head.train()
        assert not torch.equal(head(x), head(x))   # dropout p=0.5 draws a new mask each call
