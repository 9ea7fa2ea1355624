"""Layer factories by name, so that a head is fully described by JSON values (``pool='avg'``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ExitsError

__all__ = ["ACT_LAYERS", "POOL_TYPES", "get_act_layer", "GlobalPool", "check_pool", "pool_features", "to_nchw"]

ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "hardswish": nn.Hardswish,
    "tanh": nn.Tanh, "identity": nn.Identity,
}
POOL_TYPES = ("avg", "max", "avgmax", "token")


def get_act_layer(act: str | type[nn.Module]) -> type[nn.Module]:
    """An activation class from its name (``relu``, ``gelu``, ...) or the class itself."""
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act
    if act not in ACT_LAYERS:
        raise ExitsError(f"unknown activation {act!r}; choose from {', '.join(ACT_LAYERS)}")
    return ACT_LAYERS[act]


class GlobalPool(nn.Module):
    """Pool features of any layout to ``(B, C)``.

    ``avg``/``max``/``avgmax`` reduce the spatial (or patch-token) axes; ``token`` takes the first
    (class) token of ``nlc`` features. Prefix tokens are left out of ``nlc`` averages when there
    are patch tokens. ``nc`` features pass through.
    """

    def __init__(self, pool_type: str = "avg", layout: str = "nchw", num_prefix_tokens: int = 0):
        super().__init__()
        check_pool(pool_type, layout, num_prefix_tokens)
        self.pool_type = pool_type
        self.layout = layout
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(x, self.pool_type, self.layout, self.num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, layout={self.layout!r}"


def check_pool(pool_type: str, layout: str, num_prefix_tokens: int = 0) -> None:
    """ExitsError unless ``pool_type`` can pool features of ``layout``."""
    if pool_type not in POOL_TYPES:
        raise ExitsError(f"unknown pool type {pool_type!r}; choose from {', '.join(POOL_TYPES)}")
    if pool_type == "token" and (layout != "nlc" or num_prefix_tokens < 1):
        raise ExitsError(f"pool='token' needs token features with a class token (layout {layout!r}, "
                         f"{num_prefix_tokens} prefix tokens)")


def pool_features(x: torch.Tensor, pool_type: str, layout: str, num_prefix_tokens: int = 0) -> torch.Tensor:
    """What :class:`GlobalPool` computes, as a plain function (heads call it without a module call: at batch 1 a
    module call costs as much as the pooling)."""
    if layout == "nc":
        return x
    if pool_type == "token":
        return x[:, 0]
    if layout == "nchw":
        dims: tuple[int, ...] = (2, 3)
    elif layout == "nhwc":
        dims = (1, 2)
    else:
        if x.shape[1] > num_prefix_tokens:
            x = x[:, num_prefix_tokens:]
        dims = (1,)
    if pool_type == "avg":
        return x.mean(dims)
    if pool_type == "max":
        return x.amax(dims)
    return 0.5 * (x.mean(dims) + x.amax(dims))


def to_nchw(x: torch.Tensor, layout: str, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Features as ``(B, C, H, W)``: channels-last is permuted; tokens (prefix dropped) are laid on
    their square grid; flat ``(B, C)`` becomes ``(B, C, 1, 1)``."""
    if layout == "nchw":
        return x
    if layout == "nhwc":
        return x.permute(0, 3, 1, 2)
    if layout == "nc":
        return x[:, :, None, None]
    x = x[:, num_prefix_tokens:]
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ExitsError(f"cannot lay {x.shape[1]} tokens on a square grid for a conv head")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)
