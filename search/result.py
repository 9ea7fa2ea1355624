"""``SearchResult``: everything one search found, as :func:`search.search` returns it and
``python -m search.pareto`` prints and writes it (pymoo's ``minimize() -> Result`` is the model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._answers import QueryAnswer
from .config import ExitConfig
from .exact import SplitEvaluator
from .export import build_export, write_export
from .front import Front
from .params import Options
from .subsample import FitSample

__all__ = ["SearchResult", "Indicators", "QueryAnswer", "exits_plot_path"]


@dataclass(frozen=True)
class Indicators:
    """One method's row of the table: points of its front, hypervolume on search and holdout, IGD+ to the
    union of all fronts on search, cost saved at 0.5 and 1 point of drop on holdout, evaluations, seconds."""

    method: str
    points: int
    hv_search: float
    hv_holdout: float
    igd: float | None
    save05: float | None
    save1: float | None
    evals: int
    seconds: float


FOCUS_POINTS = (
    5.0  # with a query answered, the fronts' figure shows this many points below the base (or more)
)


def exits_plot_path(path: str | Path) -> Path:
    """Where the exit distribution of the chosen configuration goes, beside the fronts' figure."""
    path = Path(path)
    return path.with_name(path.stem + "_exits" + path.suffix)


@dataclass
class SearchResult:
    """What :func:`search.search` found.

    ``fronts``: each method's front, every number exact on the whole search split (on a subsampled fit,
    rescored there and kept non-dominated); ``union``: their non-dominated union; ``holdout_F``: each
    front's ``F`` on holdout; ``search``/``holdout``: the exact evaluators of the two splits (ask them for
    any configuration's numbers); ``oracle``: the oracle bound (accuracy, relative cost) on search;
    ``indicators``: the table's rows; ``answers``: one per query asked (drop first), each with its
    certificate; ``sample``: the subsample the methods fitted on (None: the whole split).
    """

    cache: object
    options: Options
    fronts: dict[str, Front]
    union: Front
    holdout_F: dict[str, np.ndarray]
    search: SplitEvaluator
    holdout: SplitEvaluator
    oracle: tuple[float, float]
    indicators: list[Indicators]
    answers: list[QueryAnswer] = field(default_factory=list)
    sample: FitSample | None = None

    @property
    def chosen(self) -> ExitConfig | None:
        """The configuration a deployment takes: the drop answer if asked, else the budget answer."""
        for a in self.answers:
            if a.config is not None:
                return a.config
        return None

    @property
    def failure(self) -> str | None:
        """Why a query has no answer (nothing certified or reachable within a budget); None when all have one."""
        return next((a.failure for a in self.answers if a.failure), None)

    def entries(self) -> list[tuple]:
        """Export entries: every front's configurations, then each answer (with its certificate)."""
        fronts = [(name, c) for name, f in self.fronts.items() for c in f.configs]
        return fronts + [a.entry() for a in self.answers if a.config is not None]

    # -- exports -----------------------------------------------------------------------------------
    def _fit_json(self) -> dict:
        return {
            "split": "search",
            **(
                self.sample.to_json()
                if self.sample
                else {"subsample": None, "of": self.search.n_samples, "seed": None}
            ),
        }

    def _method_info(self) -> dict:
        return {
            name: {
                "engine": {"name": name, "params": f.params},
                "n_evals": f.n_evals,
                "seconds": f.exec_time,
                "message": f.message,
            }
            for name, f in self.fronts.items()
        }

    def export_document(self) -> dict:
        """The ``exitconfig/1`` document of the Pareto set (all methods, and the answers)."""
        return build_export(
            self.entries(),
            search=self.search,
            holdout=self.holdout,
            method_info=self._method_info(),
            fit=self._fit_json(),
        )

    def choice_document(self) -> dict:
        """The ``exitconfig/1`` document of the chosen configuration alone (for deployment)."""
        if self.chosen is None:
            from ._validation import SearchError

            raise SearchError("no configuration was chosen: ask max_drop or budget")
        entry = next(e for e in reversed(self.entries()) if e[1] == self.chosen)
        return build_export(
            [entry],
            search=self.search,
            holdout=self.holdout,
            method_info=self._method_info(),
            pareto=False,
            fit=self._fit_json(),
        )

    def export(self, path: str | Path) -> dict:
        """Write :meth:`export_document` to ``path`` (atomically); return it."""
        doc = self.export_document()
        write_export(path, doc)
        return doc

    def export_choice(self, path: str | Path) -> dict:
        """Write :meth:`choice_document` to ``path`` (atomically); return it."""
        doc = self.choice_document()
        write_export(path, doc)
        return doc

    # -- figures and text ----------------------------------------------------------------------------
    def marks(self) -> list[tuple[str, QueryAnswer]]:
        """Each answered query with its label on the figures: what it asked and whether it is certified."""
        out = []
        for a in self.answers:
            if a.config is not None:
                asked = (
                    f"within {a.limit:g} points"
                    if a.kind == "drop"
                    else f"relative cost <= {a.limit:g}"
                )
                out.append(
                    (
                        f"chosen: {asked}, {'certified' if a.certificate is not None else 'not certified'}",
                        a,
                    )
                )
        return out

    def plot(
        self, path: str | Path, *, exits_path: str | Path | None = None, format: str | None = None
    ) -> None:
        """Every front on search and holdout (base and oracle marked) to ``path``, with each answer marked and
        labelled and the line base minus the asked drop; with a query, the band within ``FOCUS_POINTS`` (or 10x the
        asked drop) of the base. With a chosen configuration, its exit distribution on holdout to ``exits_path``
        (default :func:`exits_plot_path`). ``format``: what matplotlib's Agg backend writes (default: the suffix of
        ``path``)."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        from .plot import plot_exit_distribution, plot_fronts

        fmt = (format or Path(path).suffix).lower().lstrip(".")
        fig = Figure(figsize=(12, 4.8))
        ax_s, ax_h = fig.subplots(1, 2, sharey=True)
        marks, drop = self.marks(), self.options.max_drop
        focus = max(FOCUS_POINTS, 10 * (drop or 0.0)) if marks else None
        on_holdout = {
            m: Front(f.configs, self.holdout_F[m], m) for m, f in self.fronts.items() if len(f)
        }
        for ax, split, fronts, title in (
            (ax_s, "search", self.fronts, "search split"),
            (ax_h, "holdout", on_holdout, "holdout split (same configurations)"),
        ):
            ev = {
                label: getattr(a, f"on_{split}") or getattr(self, split).evaluate_one(a.config)
                for label, a in marks
            }
            plot_fronts(
                fronts,
                base=(getattr(self, split).base.accuracy, 1.0),
                oracle=self.oracle if split == "search" else None,
                chosen={label: (e.accuracy, e.relative_cost) for label, e in ev.items()},
                asked_drop=drop,
                focus_drop=focus,
                title=title,
                ax=ax,
            )
            if split == "search":
                limits = ax.get_ylim()
        lo, hi = ax_h.get_ylim()
        ax_s.set_ylim(min(lo, limits[0]), max(hi, limits[1]))  # shared: both panels' points
        fig.tight_layout()
        fig.savefig(path, dpi=120, format=fmt)
        if marks:
            target = exits_plot_path(path) if exits_path is None else exits_path
            label, answer = marks[0]
            plot_exit_distribution(self.holdout, answer.config, label=label).savefig(
                target, dpi=150, format=fmt
            )

    def report(self, *, standalone: bool = False) -> str:
        """The header and the table of methods (``standalone``: and every exit alone), as the command prints."""
        from ._report import report

        return report(self, standalone=standalone)

    def answer_text(self, answer: QueryAnswer) -> str:
        from ._report import answer_text

        return answer_text(self, answer)

    def table(self) -> str:
        """The table of methods alone."""
        from ._report import table

        return table(self.indicators)

    def text(self, *, standalone: bool = False) -> str:
        """Everything the command prints before writing files: the report, then each answer (or its failure)."""
        parts = [self.report(standalone=standalone)]
        parts += [
            self.answer_text(a) if a.failure is None else f"error: {a.failure}"
            for a in self.answers
        ]
        return "\n".join(parts)
