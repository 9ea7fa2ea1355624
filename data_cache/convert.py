"""``python -m data_cache.convert NAME ...``: import another tool's prediction dump into a cache.

    python -m data_cache.convert dyce --search S.npz --holdout H.npz --macs-info M.json --out DIR

Problems with the inputs print one line each on stderr and exit with status 2 (``--debug`` shows
the traceback instead); on success a short summary of the cache is printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings

from ._validation import describe
from .cli_types import CommandParser, positive_int
from .errors import CacheError, CacheWarning
from .importers import get_importer
from .importers.dyce import LAYOUTS
from .outputs import cli_entry
from .reader import MemmapCache
from .writer import check_cache_target

__all__ = ["main"]


class _DyceCommand:
    """DyCE / TinySaver records: one .npz per split plus the macs_info JSON."""

    help = "DyCE/TinySaver records (.npz per split) and their macs_info JSON"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--search", required=True, metavar="S.npz", help="records of the search split"
        )
        parser.add_argument(
            "--holdout", required=True, metavar="H.npz", help="records of the holdout split"
        )
        parser.add_argument(
            "--macs-info", required=True, metavar="M.json", help="their macs_info JSON"
        )
        parser.add_argument(
            "--n-classes",
            type=positive_int,
            default=None,
            metavar="C",
            help="number of classes (default: the largest class id in the records + 1)",
        )
        parser.add_argument(
            "--layout",
            choices=LAYOUTS,
            default="auto",
            help="'tinysaver' maps a P=2, T=1 pair to a saver and a base model (auto: detect)",
        )

    def take_action(self, args: argparse.Namespace, command: str) -> MemmapCache:
        return get_importer("dyce")(
            args.out,
            search=args.search,
            holdout=args.holdout,
            macs_info=args.macs_info,
            n_classes=args.n_classes,
            layout=args.layout,
            overwrite=args.overwrite,
            provenance={"command": command},
        )


_COMMANDS = {"dyce": _DyceCommand()}


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m data_cache.convert",
        description="Import another tool's prediction dump into a cache.",
    )
    common = CommandParser(add_help=False)
    common.add_argument("--out", required=True, metavar="DIR", help="cache folder to create")
    common.add_argument("--overwrite", action="store_true", help="replace a cache already at --out")
    common.add_argument("--quiet", action="store_true", help="print nothing on success")
    common.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="importer", required=True, metavar="IMPORTER")
    for name, cmd in _COMMANDS.items():
        cmd.add_arguments(
            sub.add_parser(name, help=cmd.help, description=cmd.__doc__, parents=[common])
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 done, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    command = "python -m data_cache.convert " + shlex.join(argv)
    try:
        check_cache_target(
            args.out,
            overwrite=args.overwrite,
            inputs=[
                (f"--{o.replace('_', '-')}", getattr(args, o, None))
                for o in ("search", "holdout", "macs_info")
            ],
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CacheWarning)
            try:
                cache = _COMMANDS[args.importer].take_action(args, command)
            finally:
                for w in caught:
                    print(f"warning: {w.message}", file=sys.stderr)
    except (CacheError, OSError) as exc:
        if args.debug:
            raise
        if isinstance(exc, CacheError):
            lines = exc.problems
        else:
            lines = [f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)]
        for line in lines:
            print(line, file=sys.stderr)
        return 2
    if not args.quiet:
        print(describe(cache))
        print(f"{args.out}: imported ({args.importer})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_entry(main))
