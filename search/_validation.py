"""Input checks shared by the search package; messages name the culprit and the fix."""

from __future__ import annotations

from numbers import Real

import numpy as np

from contract import ContractError
from data_cache.synthetic import as_generator as _as_generator

__all__ = ["SearchError", "SearchWarning", "check_scalar", "check_split", "checked", "as_generator"]


class SearchError(ValueError):
    """A user's input to the search cannot be used; the CLI prints it as one line and exits 2."""


class SearchWarning(UserWarning):
    """Something a user should know before a long run; the CLI prints it as one line."""


def check_scalar(
    x,
    name: str,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    integer: bool = False,
):
    """Return ``x`` if it is a (integer) number within ``[min_val, max_val]``, else raise SearchError."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(x, (int, np.integer)) if integer else isinstance(x, Real)
    if isinstance(x, bool) or not ok_type or (not integer and not np.isfinite(x)):
        raise SearchError(f"`{name}` must be {kind}; got {x!r}")
    if min_val is not None and x < min_val:
        raise SearchError(f"`{name}` == {x}, must be >= {min_val}")
    if max_val is not None and x > max_val:
        raise SearchError(f"`{name}` == {x}, must be <= {max_val}")
    return x


def check_split(cache, split: str) -> str:
    """The split name if the cache has it and it is not empty."""
    if split not in cache.splits():
        raise SearchError(f"split {split!r} is not in the cache; it has {cache.splits()}")
    if cache.n_samples(split) == 0:
        raise SearchError(f"split {split!r} is empty")
    return split


def checked(config, cache):
    """``config`` (a :class:`contract.ExitConfig`) checked against ``cache`` once (``ExitConfig.check`` remembers
    the cache it was checked for), or a SearchError with the contract's line."""
    try:
        return config.check(cache)
    except ContractError as exc:
        raise SearchError(str(exc)) from None


def as_generator(seed) -> np.random.Generator:
    """None, an int or a numpy Generator -> a Generator; anything else is a SearchError quoting it."""
    try:
        return _as_generator(seed)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
