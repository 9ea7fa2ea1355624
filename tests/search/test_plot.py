"""Plots: return a Figure, save only when asked, draw into given axes."""
from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from search import ExitConfig, SearchError, run_search  # noqa: E402
from search.indicators import HV  # noqa: E402
from search.plot import plot_exit_distribution, plot_fronts, plot_hv_history  # noqa: E402
from search.standalone import oracle_bound  # noqa: E402


@pytest.fixture(scope="module")
def fronts(small_problem):
    return {m: run_search(small_problem, m) for m in ("global", "geometric")}


def test_plot_fronts_saves_a_png(small_problem, fronts, tmp_path):
    path = tmp_path / "front.png"
    fig = plot_fronts(fronts, base=(small_problem.base.accuracy, 1.0), oracle=oracle_bound(small_problem),
                      title="search", path=path)
    assert isinstance(fig, Figure) and path.stat().st_size > 1000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("global (") and "base model" in labels and "oracle (unreachable)" in labels


def test_plot_fronts_side_by_side(small_problem, fronts, tmp_path):
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    hold = small_problem.on_split("holdout")
    held = {m: f.__class__(f.configs, hold.evaluate(f.configs), m) for m, f in fronts.items()}
    assert plot_fronts(fronts, title="search", ax=left) is fig
    plot_fronts(held, title="holdout", ax=right, base=(hold.base.accuracy, 1.0))
    fig.savefig(tmp_path / "both.png")
    assert (tmp_path / "both.png").exists() and not list(tmp_path.glob("front*"))


def test_exit_distribution_and_hv_history(small_problem, fronts, tmp_path):
    config = fronts["global"].configs[len(fronts["global"]) // 2]
    fig = plot_exit_distribution(small_problem, config, path=tmp_path / "exits.png")
    assert len(fig.axes[0].patches) == len(config.exits) + 1 and (tmp_path / "exits.png").exists()
    assert isinstance(plot_exit_distribution(small_problem, ExitConfig()), Figure)
    hist = {m: [(0, 0.0), (f.n_evals, HV()(f.F))] for m, f in fronts.items()}
    hist["empty"] = []
    plot_hv_history(hist, path=tmp_path / "hv.png")
    assert (tmp_path / "hv.png").exists()


def test_bad_inputs(fronts, tmp_path):
    with pytest.raises(SearchError, match="dict of method name -> Front"):
        plot_fronts([fronts["global"]])
    with pytest.raises(SearchError, match="`base` must be"):
        plot_fronts(fronts, base=0.9)
    with pytest.raises(SearchError, match="does not exist"):
        plot_fronts(fronts, path=tmp_path / "missing" / "f.png")
    with pytest.raises(SearchError, match="history of 'x'"):
        plot_hv_history({"x": [(1, 2, 3)]})
