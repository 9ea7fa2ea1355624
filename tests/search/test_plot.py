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


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_chosen_marked_with_the_asked_drop_line(small_problem, fronts):
    """The chosen configuration is a labelled point on the front, the asked-drop line sits at base minus it."""
    base = small_problem.base.accuracy
    config = fronts["global"].configs[len(fronts["global"]) // 2]
    ev = small_problem.evaluate_one(config)
    label = "chosen: within 0.5 points, certified"
    fig = plot_fronts(fronts, base=(base, 1.0), chosen={label: (ev.accuracy, ev.relative_cost)}, asked_drop=0.5)
    ax = fig.axes[0]
    assert label in _legend(ax) and "base - asked drop (0.5 points)" in _legend(ax)
    marked = [c for c in ax.collections if c.get_label() == label]
    assert len(marked) == 1 and marked[0].get_offsets().tolist() == [[ev.relative_cost, 100 * ev.accuracy]]
    drop_line = next(line for line in ax.get_lines() if line.get_label().startswith("base - asked drop"))
    assert drop_line.get_ydata()[0] == pytest.approx(100 * base - 0.5)
    lo, hi = ax.get_ylim()
    assert lo <= 100 * ev.accuracy <= hi and lo <= 100 * base - 0.5 and hi >= 100 * base
    with pytest.raises(SearchError, match="`asked_drop` must be"):
        plot_fronts(fronts, asked_drop=0.5)
    with pytest.raises(SearchError, match=r"`chosen\['x'\]` must be"):
        plot_fronts(fronts, chosen={"x": 0.5})


def test_oracle_off_range_is_annotated_at_the_edge_not_stretching_the_axis(small_problem, fronts):
    base = small_problem.base.accuracy
    top = max(float(f.accuracy.max()) for f in fronts.values())
    ax = plot_fronts(fronts, base=(base, 1.0), oracle=(1.0, 0.3)).axes[0]
    lo, hi = ax.get_ylim()
    assert hi < 100.0 and hi >= 100 * max(top, base)      # the oracle at 100% is not on the axis
    assert any(t.get_text() == "oracle 100.0% (above)" for t in ax.texts)
    assert any(label.startswith("oracle (unreachable, 100.0%: off the axis)") for label in _legend(ax))
    inside = plot_fronts(fronts, base=(base, 1.0), oracle=(base, 0.3)).axes[0]   # within range: a plain point
    assert "oracle (unreachable)" in _legend(inside) and not inside.texts


def test_focus_drop_shows_the_band_near_the_base(small_problem, fronts):
    base = small_problem.base.accuracy
    low = min(float(f.accuracy.min()) for f in fronts.values())
    assert 100 * (base - low) > 3        # the fronts reach well below the band
    ax = plot_fronts(fronts, base=(base, 1.0), focus_drop=3.0).axes[0]
    lo, hi = ax.get_ylim()
    assert 100 * base - 3.5 <= lo <= 100 * base - 3.0 and hi >= 100 * base
    assert any(t.get_text() == f"fronts continue below, down to {100 * low:.1f}%" for t in ax.texts)
    full = plot_fronts(fronts, base=(base, 1.0)).axes[0]
    assert full.get_ylim()[0] <= 100 * low and not full.texts


def test_axis_never_narrower_than_the_minimum_span(small_problem):
    from search.front import Front
    from search.plot import MIN_SPAN

    front = Front([ExitConfig()], [[0.2, 1.0]], "one")
    lo, hi = plot_fronts({"one": front}, base=(0.8, 1.0)).axes[0].get_ylim()
    assert hi - lo == pytest.approx(MIN_SPAN) and lo < 80.0 < hi


def test_exit_distribution_titled_with_counts_in_percent(small_problem, fronts):
    config = next(c for c in fronts["global"].configs if len(c.exits) >= 1)
    counts, right = small_problem.exit_outcomes(config)
    ax = plot_exit_distribution(small_problem, config, label="chosen: within 0.5 points, certified").axes[0]
    assert ax.get_title().startswith("chosen: within 0.5 points, certified\n")
    assert ax.get_ylabel() == "samples leaving (% of the split)"
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx((100 * counts / small_problem.n_samples).tolist())
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == f"{counts[0]:,}" + (f"\n{100 * right[0] / counts[0]:.1f}% right" if counts[0] else "")
    assert len(texts) == len(counts) and ax.get_xticklabels()[-1].get_text().endswith(" (final)")
    default = plot_exit_distribution(small_problem, config).axes[0]
    assert default.get_title().startswith(f"{len(config.exits)} enabled exits\n")
