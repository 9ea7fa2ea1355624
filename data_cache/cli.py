"""``exitsearch``: every command line of the project under one command, beside the ``python -m`` forms.

    exitsearch search [CACHE] --max-drop 0.5        # = python -m search.pareto ...
    exitsearch dump --model resnet10t ...           # = python -m data_cache.dump ...
    exitsearch COMMAND --help                       # that command's options

Each subcommand imports its module only when run (standard library here), so ``exitsearch search`` on a
machine without torch works, and a subcommand whose side is not installed says in one line which extra to
install (exit status 2).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["COMMANDS", "load_command", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "search": ("search.pareto", "search a cache: fronts, certified answers, export, plots"),
    "validate-cache": ("data_cache.validate", "check a cache and print what it holds"),
    "convert": ("data_cache.convert", "import another tool's prediction dump into a cache"),
    "check": ("exits.check", "can exits be attached to a timm model, exactly?"),
    "train": ("exits.train", "train exit heads on a frozen timm backbone"),
    "dump": ("exits.dump_cli", "dump every exit's predictions on a dataset into a cache"),
    "validate": (
        "exits.validate",
        "run exported configurations on the real model against the cache",
    ),
    "export-bundle": ("exits.export_bundle", "export configurations as ONNX graphs and a manifest"),
    "validate-bundle": ("exits.validate_bundle", "run a bundle with onnxruntime against the cache"),
    "profile": (
        "exits.profile",
        "time each unit on this machine into a cost table beside the cache",
    ),
    "pipeline": ("exits.pipeline", "the Fashion-MNIST demo end to end"),
}
"""Subcommand -> (module whose ``main(argv)`` runs it, what it does)."""

_EXTRA = {
    "torch": "torch",
    "torchvision": "torch",
    "timm": "torch",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "bundle",
    "scipy": "search",
    "matplotlib": "search",
    "pymoo": "search",
    "optuna": "search",
}
"""A third-party package a side needs -> the ``pip install exitsearch[EXTRA]`` that installs it."""


class MissingSide(RuntimeError):
    """A command whose side of the project is not installed; one line naming the extra."""


def load_command(module: str, what: str) -> ModuleType:
    """Import ``module`` (the command ``what``); a missing third-party package of a side is a MissingSide."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in _EXTRA:
            raise
        raise MissingSide(
            f"{what} needs {root}, which is not installed: pip install 'exitsearch[{_EXTRA[root]}]'"
        ) from None


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: exitsearch COMMAND [OPTIONS]   (exitsearch COMMAND --help for its options)\n\ncommands:\n{rows}"


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand ``argv[0]`` with the rest of ``argv``; its exit status (2 with one line on bad input)."""
    from .outputs import cli_entry

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {list(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = load_command(COMMANDS[name][0], f"exitsearch {name}")
    except MissingSide as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return cli_entry(lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
