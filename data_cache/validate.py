"""``python -m data_cache.validate DIR``: check a cache and print what it holds, or every problem.

Problems print one line each (``file: field: problem``) on stderr, exit status 2.
"""

from __future__ import annotations

import sys

from ._validation import describe, never_right, validate_cache, warn_identical_splits
from .cli_types import CommandParser, warn
from .outputs import cli_entry
from .reader import MemmapCache

__all__ = ["validate_cache", "describe", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 valid, 2 problems found)."""
    parser = CommandParser(
        prog="python -m data_cache.validate",
        description="Check a prediction cache and print what it holds.",
    )
    parser.add_argument("cache", help="cache folder")
    parser.add_argument(
        "--skip-integrity-check",
        action="store_true",
        help="check the manifest, file headers and fingerprint only: no checksums, no value scan",
    )
    parser.add_argument(
        "--no-checksums", action="store_true", help="scan the values but skip the checksums"
    )
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    args = parser.parse_args(argv)
    problems = validate_cache(
        args.cache, skip_integrity_check=args.skip_integrity_check, checksums=not args.no_checksums
    )
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    cache = MemmapCache(args.cache)
    warn_identical_splits(cache.manifest, f"{args.cache}: ")
    for line in never_right(cache):
        warn(f"{args.cache}: {line}")
    if not args.quiet:
        print(describe(cache))
    print(f"{args.cache}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(cli_entry(main))
