"""A timm backbone: created by name (offline unless ``pretrained``), named, its input size."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ._limits import translate_download_errors
from .errors import ExitsError, UnknownModelError

__all__ = ["create_backbone", "default_input_size", "timm_name"]


def create_backbone(name: str, *, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """A timm model by name, random init unless ``pretrained`` is given; ``None`` options are dropped."""
    import timm

    if not timm.is_model(name):
        raise UnknownModelError(f"unknown model name {name!r} "
                                f"(not in timm's registry; try timm.list_models('{name}*'))")
    kwargs = {k: v for k, v in dict(kwargs, num_classes=num_classes).items() if v is not None}
    kwargs.setdefault("pretrained", False)
    if not kwargs["pretrained"]:
        return timm.create_model(name, **kwargs)
    with translate_download_errors(name):
        return timm.create_model(name, **kwargs)


def timm_name(model: nn.Module) -> str:
    """The timm name of ``model`` (architecture, with its weight tag), else its class name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if arch:
        return f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch
    return type(model).__name__


def default_input_size(model: nn.Module, input_size: Sequence[int] | None = None) -> tuple[int, ...]:
    """``input_size`` if given, else a ViT/Swin's ``patch_embed.img_size``, else ``pretrained_cfg["input_size"]``."""
    if input_size is not None:
        return tuple(int(v) for v in input_size)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if img_size is not None:
        return (3, *(int(v) for v in img_size))
    if "input_size" in cfg:
        return tuple(int(v) for v in cfg["input_size"])
    raise ExitsError(f"{type(model).__name__}: no input size known; pass input_size=(C, H, W)")
