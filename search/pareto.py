"""``python -m search.pareto [CACHE]``: Pareto-optimal exit configurations of a cache.

A thin command line over :func:`search.search` (``search/api.py``): parse (the options come from the
declarations in ``search/params.py``), call, print the result's table and answers, and write
``--export`` / ``--export-choice`` / ``--plot`` through ``data_cache.outputs`` (every file checked
before any work, none replaced unless all were written). Data errors print one line each and exit
with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

from data_cache import CacheError
from data_cache.bundled import bundled_cache_path
from data_cache.cli_types import PLOT_SUFFIXES, CommandParser
from data_cache.outputs import OutputError, atomic_outputs, check_outputs, cli_entry
from data_cache.ownership import json_kind, suffix_kind

from ._validation import SearchError, SearchWarning
from .api import search
from .engines import list_engines
from .export import EXPORT_FORMAT, write_export
from .params import add_arguments, options_from_args
from .result import SearchResult, exits_plot_path

__all__ = ["main", "build_parser"]

_OUTPUTS = ("--export", "--export-choice", "--plot", "--plot (exit distribution)")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m search.pareto",
        description="Search early-exit configurations on a prediction cache: Pareto fronts of accuracy "
        "against cost, constrained queries, JSON export and plots.",
    )
    p.add_argument(
        "cache", nargs="?", help="cache folder (default: the cache bundled in data_cache/)"
    )
    add_arguments(p)
    p.add_argument(
        "--export",
        metavar="FILE.json",
        help="write the Pareto set (all methods) as exitconfig/1 JSON",
    )
    p.add_argument(
        "--export-choice",
        metavar="FILE.json",
        help="write the configuration chosen by --max-drop/--budget alone (for deployment)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw every front on search and holdout (base and oracle marked); the exit "
        "distribution of the chosen configuration goes to FILE_exits.png (any format matplotlib's "
        "Agg backend writes: png, pdf, svg, ...)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing --export / --export-choice / --plot files (each is announced)",
    )
    p.add_argument(
        "--standalone", action="store_true", help="also print every exit's accuracy and cost alone"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    return p


def _run(args, out) -> int:
    if args.methods == "list":
        print("\n".join(list_engines()), file=out)
        return 0
    args.progress = not args.no_progress and sys.stderr.isatty()
    opts = options_from_args(args)
    queried = opts.max_drop is not None or opts.budget is not None
    if args.export_choice and not queried:
        raise SearchError("--export-choice needs --max-drop or --budget to choose a configuration")
    outputs = _check_outputs(args, queried)
    with _warning_lines():
        result = search(args.cache, options=opts)
    print(result.report(standalone=args.standalone), file=out)
    for answer in result.answers:
        if answer.failure is not None:
            raise SearchError(answer.failure)
        print(result.answer_text(answer), file=out)
    _write_outputs(args, out, outputs, result)
    return 0


def _output_kinds() -> dict:
    """What an existing file at each output must be for ``--overwrite`` to replace it (``docs/outputs.md``)."""
    plot = suffix_kind("figure", PLOT_SUFFIXES)
    return {
        "--export": json_kind(EXPORT_FORMAT),
        "--export-choice": json_kind(EXPORT_FORMAT),
        "--plot": plot,
        _OUTPUTS[3]: plot,
    }


def _check_outputs(args, queried: bool) -> dict[str, Path]:
    """Every file the run will write, checked before any work (``docs/outputs.md``): none inside the cache read."""
    plot_exits = exits_plot_path(args.plot) if args.plot and queried else None
    return check_outputs(
        list(zip(_OUTPUTS, (args.export, args.export_choice, args.plot, plot_exits), strict=True)),
        overwrite=args.overwrite,
        kinds=_output_kinds(),
        inputs=[("CACHE", args.cache if args.cache is not None else bundled_cache_path())],
        suffixes={"--export": (".json",), "--export-choice": (".json",), "--plot": PLOT_SUFFIXES},
    )


@contextlib.contextmanager
def _warning_lines():
    """Warnings raised meanwhile (identical splits, a sampler asked for more trials than it handles) print as
    ``warning: ...`` on stderr, one line each."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", SearchWarning)
        warnings.showwarning = show
        yield


def _write_outputs(args, out, outputs: dict[str, Path], result: SearchResult) -> None:
    """--export, --export-choice and --plot, checked before the search (``outputs``); every file is written to a
    temporary file first and none replaces its target unless all were written."""
    docs = {}
    if args.export:
        docs["--export"] = result.export_document()
    if args.export_choice:
        docs["--export-choice"] = result.choice_document()
    targets = [(option, outputs[option]) for option in docs]
    if args.plot:
        targets.append(("--plot", outputs["--plot"]))
        if result.chosen is not None:
            targets.append((_OUTPUTS[3], outputs[_OUTPUTS[3]]))
    with atomic_outputs(targets, overwrite=args.overwrite, kinds=_output_kinds()) as tmps:
        files = dict(zip((option for option, _ in targets), tmps, strict=True))
        for option, doc in docs.items():
            write_export(files[option], doc)
        if args.plot:
            _plots(result, files["--plot"], files.get(_OUTPUTS[3]), Path(args.plot).suffix)
    if args.export:
        print(
            f"\nexported {len(docs['--export']['configs'])} configurations to {args.export}",
            file=out,
        )
    if args.export_choice:
        print(f"exported the chosen configuration to {args.export_choice}", file=out)
    if args.plot:
        also = f" and {outputs[_OUTPUTS[3]]}" if result.chosen is not None else ""
        print(f"plots written to {args.plot}{also}", file=out)


def _plots(result: SearchResult, path: Path, exits_path: Path | None, suffix: str) -> None:
    """The figures to ``path`` and ``exits_path`` (temporary files) in the format ``suffix`` names."""
    result.plot(path, exits_path=exits_path, format=suffix)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args, sys.stdout)
    except (CacheError, SearchError, OutputError) as exc:
        if args.debug:
            raise
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli_entry(main))
