"""Argument types, the parser and the warning line every command line shares: numbers checked at the boundary.

Each type is an ``argparse`` ``type=`` callable: it turns the text into a value or raises
``ArgumentTypeError``, which :class:`CommandParser` prints as one line naming the option
(``error: argument --batch-size: must be a positive integer, got 0``) and exit status 2, before any
work starts. Every command says the same thing the same way (``docs/bad-inputs.md``).

Standard library only (no numpy, no torch), so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = [
    "CommandParser",
    "int_at_least",
    "positive_int",
    "non_negative_int",
    "seed",
    "threads",
    "finite_float",
    "positive_float",
    "non_negative_float",
    "fraction",
    "probability",
    "float_in",
    "PLOT_SUFFIXES",
    "check_name_length",
    "warn",
]

# what matplotlib's Agg canvas writes (FigureCanvasAgg.get_supported_filetypes(), matplotlib 3.11) but .pgf, which
# needs a LaTeX installation (a traceback after the search without one; .pdf is the same figure); kept here so a
# plot's suffix is checked before any work without importing matplotlib (tests/cli checks the list)
PLOT_SUFFIXES = (
    ".avif",
    ".eps",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pdf",
    ".png",
    ".ps",
    ".raw",
    ".rgba",
    ".svg",
    ".svgz",
    ".tif",
    ".tiff",
    ".webp",
)
_NUMBER = re.compile(r"[+-]?[0-9.eE+-]+|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (``error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message.splitlines()[0] if message else 'bad arguments'}\n")

    def parse_known_args(self, args=None, namespace=None):
        """A NUL byte cannot name a file (nor come from a shell): refused before any option is read, which
        would otherwise meet it as a ``ValueError`` deep in ``os`` (an argument vector built in-process)."""
        for arg in sys.argv[1:] if args is None else args:
            if isinstance(arg, str) and "\0" in arg:
                self.error(f"argument {arg.split(chr(0))[0]!r}...: holds a NUL byte")
        return super().parse_known_args(args, namespace)


def _strict(text: str) -> bool:
    """Plain ASCII digits, sign, point and exponent only: Python's ``int``/``float`` also take ``1_0`` (10),
    surrounding spaces and non-ASCII digits, which a command line reads as a typo, not a number."""
    return isinstance(text, str) and _NUMBER.fullmatch(text) is not None


def _int(text: str) -> int:
    try:
        if not _strict(text):
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        if not _strict(text):
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(
    minimum: int, what: str | None = None, *, maximum: int | None = None
) -> Callable[[str], int]:
    """An integer >= ``minimum`` (and <= ``maximum``); ``what`` names it in the message."""
    what = what or (
        f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    )

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        if (
            value > sys.maxsize
        ):  # no count, size or index of this machine is larger (islice, range, numpy refuse it)
            raise argparse.ArgumentTypeError(
                f"must be {what} no larger than {sys.maxsize}, got {value}"
            )
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")
seed = int_at_least(0, f"a random seed in [0, {2**32 - 1}]", maximum=2**32 - 1)
threads = int_at_least(1, "a number of threads >= 1")


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    return _float(text)


def float_in(
    low: float | None,
    high: float | None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    what: str | None = None,
) -> Callable[[str], float]:
    """A finite number in the interval from ``low`` to ``high`` (``None``: unbounded; ``*_open``: excluded)."""
    if what is None:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        opening = "(" if low_open or low is None else "["
        closing = ")" if high_open or high is None else "]"
        what = f"a number in {opening}{left}, {right}{closing}"

    def parse(text: str) -> float:
        try:
            value = _float(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (low is not None and (value < low or (low_open and value == low))) or (
            high is not None and (value > high or (high_open and value == high))
        ):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


positive_float = float_in(0.0, None, low_open=True, what="a finite number > 0")
non_negative_float = float_in(0.0, None, what="a finite number >= 0")
fraction = float_in(0.0, 1.0, low_open=True, high_open=True, what="a fraction in (0, 1)")
probability = float_in(0.0, 1.0, what="a number in [0, 1]")


def check_name_length(path: str | os.PathLike, option: str, *, spare: int = 0) -> None:
    """``ValueError`` (one line naming ``option``) when a component of ``path`` is longer than the file system
    takes (ENAMETOOLONG, usually 255 bytes); ``spare``: bytes a temporary name adds to the last one."""
    text = os.fspath(path)
    parts = [p for p in text.split(os.sep) if p]
    for i, part in enumerate(parts):
        limit = 255 - (spare if i == len(parts) - 1 else 0)
        if len(os.fsencode(part)) > limit:
            needed = f" ({spare} are needed for a temporary name)" if spare else ""
            raise ValueError(
                f"{option} {text[:40]}...: a file name of {len(os.fsencode(part))} bytes; the file "
                f"system takes at most 255{needed}"
            )


def warn(message: str) -> None:
    """A suspicious but legal input: one line ``warning: ...`` on stderr."""
    print(f"warning: {message}", file=sys.stderr)
