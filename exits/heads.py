"""Exit head types: ``linear``, ``mlp`` (and DyCE-like ``mlp1``, ``mlp3_h500``, ...), ``conv``, ``token``.

Every head takes features in the layout of its position (``nchw``, ``nhwc``, ``nlc`` or ``nc``) and
returns logits ``(B, num_classes)``; ``forward(x, pre_logits=True)`` returns the pooled/hidden
features before the classifier. Options are JSON values; ``get_params()`` returns them.

DyCE's reference heads: global average pooling then 1, 3 or 5 linear layers with hidden width 500 or
1000 and ReLU (arXiv 2403.01695).
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._registry import register_head
from .errors import ExitsError
from .layers import GlobalPool, check_pool, get_act_layer, pool_features, to_nchw

__all__ = ["ExitHead", "LinearHead", "MLPHead", "ConvHead", "TokenHead"]


class ExitHead(nn.Module):
    """Base of head classes: ``in_chs``, ``num_classes``, ``layout``; ``get_params()`` from the signature.

    Subclasses keep every constructor argument as an attribute of the same name.
    """

    in_chs: int
    num_classes: int
    layout: str
    fc: nn.Module

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments as JSON values (lists for tuples)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: list(v) if isinstance(v, tuple) else v for n, v in ((n, getattr(self, n)) for n in names)}

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.forward_pre_logits(x)
        return x if pre_logits else _linear(self.fc, x)


# At batch 1 a head's work is a few tiny kernels, and each module call costs about as much as one of them: the
# heads below run their own layers through these functions (the modules stay, for the state dict).
def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, without the module call when ``layer`` is a plain ``nn.Linear``."""
    return F.linear(x, layer.weight, layer.bias) if type(layer) is nn.Linear else layer(x)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return F.dropout(x, p, True) if training and p > 0 else x


def _default_pool(layout: str, num_prefix_tokens: int) -> str:
    return "token" if layout == "nlc" and num_prefix_tokens > 0 else "avg"


@register_head("linear")
class LinearHead(ExitHead):
    """Global pool + (dropout) + linear classifier."""

    def __init__(self, in_chs: int, num_classes: int, layout: str = "nchw", num_prefix_tokens: int = 0,
                 pool: str = "avg", drop: float = 0.0):
        super().__init__()
        self.in_chs, self.num_classes, self.layout = in_chs, num_classes, layout
        self.num_prefix_tokens, self.pool, self.drop = num_prefix_tokens, pool, drop
        check_pool(pool, layout, num_prefix_tokens)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = pool_features(x, self.pool, self.layout, self.num_prefix_tokens)
        return _dropout(x, self.drop, self.training)


@register_head("mlp")
class MLPHead(ExitHead):
    """Global pool + hidden layers (linear, activation, dropout) + linear classifier.

    ``hidden`` is one width or a list of widths (empty: a linear head).
    """

    def __init__(self, in_chs: int, num_classes: int, layout: str = "nchw", num_prefix_tokens: int = 0,
                 hidden: int | Sequence[int] = 256, act: str = "relu", pool: str = "avg", drop: float = 0.0):
        super().__init__()
        widths = (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
        if any(w < 1 for w in widths):
            raise ExitsError(f"head 'mlp': hidden widths must be >= 1 (got {list(widths)})")
        self.in_chs, self.num_classes, self.layout = in_chs, num_classes, layout
        self.num_prefix_tokens, self.hidden, self.act, self.pool, self.drop = (
            num_prefix_tokens, widths, act, pool, drop)
        act_layer = get_act_layer(act)
        check_pool(pool, layout, num_prefix_tokens)
        layers: list[nn.Module] = []
        width = in_chs
        for w in widths:
            layers += [nn.Linear(width, w), act_layer(), nn.Dropout(drop)]
            width = w
        self.hidden_layers = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = pool_features(x, self.pool, self.layout, self.num_prefix_tokens)
        layers = iter(self.hidden_layers)
        for linear, act, _ in zip(layers, layers, layers, strict=True):  # (linear, activation, dropout) per width
            x = _dropout(act(_linear(linear, x)), self.drop, self.training)
        return x


@register_head("conv")
class ConvHead(ExitHead):
    """A cheap conv block (depthwise k x k + BN + act, pointwise to ``width`` + BN + act), pool, linear.

    Channels-last and token features are first laid out as ``(B, C, H, W)``.
    """

    def __init__(self, in_chs: int, num_classes: int, layout: str = "nchw", num_prefix_tokens: int = 0,
                 width: int | None = None, kernel_size: int = 3, act: str = "relu", pool: str = "avg"):
        super().__init__()
        self.in_chs, self.num_classes, self.layout = in_chs, num_classes, layout
        self.num_prefix_tokens, self.width, self.kernel_size, self.act, self.pool = (
            num_prefix_tokens, width, kernel_size, act, pool)
        out_chs = width or in_chs
        act_layer = get_act_layer(act)
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs, bias=False),
            nn.BatchNorm2d(in_chs), act_layer(),
            nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs), act_layer(),
        )
        self.global_pool = GlobalPool(pool, "nchw")
        self.fc = nn.Linear(out_chs, num_classes)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(self.conv(to_nchw(x, self.layout, self.num_prefix_tokens)))


@register_head("token")
class TokenHead(ExitHead):
    """Class token (``pool='token'``) or mean token (``pool='avg'``) + LayerNorm + linear.

    Meant for transformer features; on spatial features the mean token is the spatial mean.
    The default pool is ``token`` when the features carry a class token, else ``avg``.
    """

    def __init__(self, in_chs: int, num_classes: int, layout: str = "nlc", num_prefix_tokens: int = 0,
                 pool: str | None = None, drop: float = 0.0):
        super().__init__()
        self.in_chs, self.num_classes, self.layout = in_chs, num_classes, layout
        self.num_prefix_tokens, self.drop = num_prefix_tokens, drop
        self.pool = pool or _default_pool(layout, num_prefix_tokens)
        check_pool(self.pool, layout, num_prefix_tokens)
        self.norm = nn.LayerNorm(in_chs)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward_pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = pool_features(x, self.pool, self.layout, self.num_prefix_tokens)
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return _dropout(x, self.drop, self.training)


def _register_mlp_variant(name: str, hidden: tuple[int, ...]) -> None:
    def builder(in_chs: int, num_classes: int, layout: str = "nchw", num_prefix_tokens: int = 0,
                act: str = "relu", pool: str = "avg", drop: float = 0.0) -> MLPHead:
        return MLPHead(in_chs, num_classes, layout, num_prefix_tokens, hidden=hidden, act=act, pool=pool, drop=drop)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"DyCE-like head: pool + {len(hidden) + 1} linear layer(s), hidden widths {list(hidden)}."
    register_head(builder)


# DyCE's five pooled-MLP variants: 1, 3 or 5 linear layers, hidden width 500 or 1000.
for _name, _hidden in {"mlp1": (), "mlp3_h500": (500,) * 2, "mlp3_h1000": (1000,) * 2,
                       "mlp5_h500": (500,) * 4, "mlp5_h1000": (1000,) * 4}.items():
    _register_mlp_variant(_name, _hidden)
