"""Head registry, timm-style: ``@register_head`` fills a dict; ``create_head`` builds by name."""
from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import ExitsError, UnknownHeadError

__all__ = ["register_head", "create_head", "list_heads", "is_head", "head_entrypoint"]

_heads: dict[str, Callable[..., nn.Module]] = {}


def register_head(fn: Callable[..., nn.Module] | str | None = None, *, name: str | None = None) -> Any:
    """Register a head builder (class or function) under ``name`` (default: its ``__name__``).

    Use bare (``@register_head``) or with a name (``@register_head("linear")``). A builder is called
    as ``builder(in_chs=..., num_classes=..., layout=..., num_prefix_tokens=..., **options)``.
    """
    if isinstance(fn, str):
        return lambda f: register_head(f, name=fn)
    if fn is None:
        return lambda f: register_head(f, name=name)
    key = name or fn.__name__
    _heads[key] = fn
    return fn


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def list_heads(pattern: str = "") -> list[str]:
    """Registered head names matching a wildcard ``pattern`` (all when empty), naturally sorted."""
    names = [n for n in _heads if not pattern or fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=_natural_key)


def is_head(name: str) -> bool:
    return name in _heads


def head_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The builder registered under ``name``; ``UnknownHeadError`` listing valid names otherwise."""
    if name not in _heads:
        raise UnknownHeadError(f"unknown head type {name!r}; registered: {', '.join(list_heads())}")
    return _heads[name]


def create_head(name: str, in_chs: int, num_classes: int, *, layout: str = "nchw",
                num_prefix_tokens: int = 0, **kwargs: Any) -> nn.Module:
    """Build head ``name`` for features of ``in_chs`` channels in ``layout``; options are JSON values.

    Options equal to None are dropped, so unset options never override a head's defaults.
    """
    builder = head_entrypoint(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    call = dict(in_chs=in_chs, num_classes=num_classes, layout=layout, num_prefix_tokens=num_prefix_tokens, **kwargs)
    try:
        inspect.signature(builder).bind(**call)
    except TypeError as exc:
        raise ExitsError(f"head {name!r}: bad options {sorted(kwargs)}: {exc}") from None
    return builder(**call)
