"""``python -m data_cache.dump``: the dump's command line under its documented name.

The dump runs the model (torch, timm): its command lives on the torch side, ``exits/dump_cli.py``, imported only
when this runs, so importing ``data_cache`` never loads torch. Without torch installed it ends in one line naming
the extra to install (exit status 2).
"""

from __future__ import annotations

import sys

from .cli import MissingSide, load_command
from .outputs import cli_entry

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``exits.dump_cli.main``: exit status 0, or 2 with one line per problem."""
    try:
        command = load_command("exits.dump_cli", "python -m data_cache.dump")
    except MissingSide as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return command.main(argv)


if __name__ == "__main__":
    sys.exit(cli_entry(main))
