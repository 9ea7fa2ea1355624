"""The mixed encoding of the population engines: exact round trips, bounds, constraint values."""
from __future__ import annotations

import numpy as np
import pytest

from search import ExitConfig, SearchError, run_search
from search.encoding import MixedEncoding, check_constraints, constraint_values


@pytest.mark.parametrize("kind", ["float", "quantile"])
def test_encode_decode_round_trip_is_exact(small_problem, kind):
    """dp's configurations encoded and decoded again score exactly the same."""
    front = run_search(small_problem, "dp")
    enc = MixedEncoding(small_problem, kind)
    H, X = enc.encode(front.configs)
    lo, hi = enc.x_bounds
    assert H.shape == X.shape == (len(front), small_problem.n_positions)
    assert np.all((X >= lo) & (X <= hi))
    for F in (enc.evaluate(H, X), small_problem.evaluate(enc.to_configs(H, X))):
        np.testing.assert_array_equal(np.rint((1 - F[:, 0]) * small_problem.n_samples),  # same correct counts
                                      np.rint((1 - front.F[:, 0]) * small_problem.n_samples))
        np.testing.assert_allclose(F[:, 1], front.F[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["float", "quantile"])
def test_bounds_mean_everyone_and_nobody_leaves(small_problem, kind):
    enc = MixedEncoding(small_problem, kind)
    lo, hi = enc.x_bounds
    J = small_problem.n_positions
    H = np.zeros((2, J), dtype=int)
    H[:, 0] = 1                                        # first head type at the first position
    X = np.stack([lo, hi])
    (c_all,), (c_none,) = enc.to_configs(H[:1], X[:1]), enc.to_configs(H[1:], X[1:])
    e = small_problem.position_exits[0][0]
    assert small_problem.evaluate_one(c_all).exit_fractions[0] == 1.0
    assert small_problem.evaluate_one(c_none).exit_fractions[0] == 0.0
    assert c_all.exits == (e,)


def test_quantile_is_the_fraction_that_stays(small_problem):
    enc = MixedEncoding(small_problem, "quantile")
    H = np.zeros((1, small_problem.n_positions), dtype=int)
    H[0, 1] = 2
    X = np.full(H.shape, 0.3)
    (cfg,) = enc.to_configs(H, X)
    left = small_problem.evaluate_one(cfg).exit_fractions[0]
    assert abs((1 - left) - 0.3) < 0.05                # ties in float32 scores blur it a little


def test_disabled_positions_and_decode_shapes(small_problem):
    enc = MixedEncoding(small_problem, "float")
    H = np.zeros((3, small_problem.n_positions), dtype=int)
    choice, thr = enc.decode(H, np.zeros(H.shape))
    assert (choice == -1).all() and thr.shape == H.shape
    assert enc.to_configs(H, np.zeros(H.shape)) == [ExitConfig()] * 3
    assert enc.choice_names(0)[0] == "none" and len(enc.choice_names(0)) == 3


def test_bad_input(small_problem):
    with pytest.raises(SearchError, match="unknown encoding 'grid'"):
        MixedEncoding(small_problem, "grid")
    enc = MixedEncoding(small_problem)
    with pytest.raises(SearchError, match="must both be"):
        enc.decode(np.zeros((2, 2), dtype=int), np.zeros((2, 2)))
    with pytest.raises(SearchError, match="head choices"):
        enc.decode(np.full((1, small_problem.n_positions), 3), np.zeros((1, small_problem.n_positions)))
    with pytest.raises(SearchError, match="not an early exit"):
        enc.encode([ExitConfig((small_problem.final_exit,), (0.5,))])


def test_constraint_values():
    F = np.array([[0.10, 0.5], [0.13, 0.3], [0.11, 0.9]])
    G = constraint_values(F, 0.10, max_drop=0.01, max_cost=0.8)
    assert G.shape == (3, 2)
    np.testing.assert_array_equal(G <= 0, [[True, True], [False, True], [True, False]])
    assert constraint_values(F, 0.10).shape == (3, 0)
    assert constraint_values(F, 0.10, max_cost=0.5)[0, 0] <= 0   # exactly on the bound is feasible


@pytest.mark.parametrize("max_drop,max_cost,match", [(-0.1, None, "max_drop"), (1.5, None, "max_drop"),
                                                     (None, 0, "max_cost"), (None, -1.0, "max_cost"),
                                                     ("x", None, "max_drop")])
def test_bad_constraints(max_drop, max_cost, match):
    with pytest.raises(SearchError, match=match):
        check_constraints(max_drop, max_cost)
