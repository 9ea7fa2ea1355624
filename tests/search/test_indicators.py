"""Indicators: exact 2-D hypervolume and IGD+ (checked against pymoo), saving at an accuracy drop."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from search import SearchError
from search.indicators import HV, IGDPlus, hypervolume, saving_at_drop

point_sets = arrays(np.float64, st.tuples(st.integers(1, 25), st.just(2)),
                    elements=st.floats(0.0, 1.3, allow_nan=False).map(lambda v: round(v, 3)))


@settings(max_examples=80, deadline=None)
@given(point_sets)
def test_hv_equals_pymoo(F):
    from pymoo.indicators.hv import HV as PymooHV

    inside = F[(F < 1.0).all(axis=1)]
    expected = PymooHV(ref_point=np.array([1.0, 1.0]))(inside) if len(inside) else 0.0
    assert HV()(F) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(point_sets, point_sets)
def test_igd_plus_equals_pymoo(F, R):
    from pymoo.indicators.igd_plus import IGDPlus as PymooIGDPlus

    assert IGDPlus(R)(F) == pytest.approx(PymooIGDPlus(R)(F), abs=1e-12)


def test_hand_computed_values():
    assert HV()(np.array([[0.2, 0.5]])) == pytest.approx(0.4)
    # two steps: [0.1, 0.6] and [0.3, 0.2] -> 0.9*0.4 + 0.7*0.4
    assert HV()([[0.1, 0.6], [0.3, 0.2], [0.5, 0.5]]) == pytest.approx(0.36 + 0.28)
    assert HV()([0.5, 0.5]) == pytest.approx(0.25)                         # a single point, lifted
    assert HV(ref_point=(2.0, 2.0))([[1.0, 1.0]]) == pytest.approx(1.0)
    assert IGDPlus([[0.1, 0.1]])([[0.2, 0.05]]) == pytest.approx(0.1)      # only the worse objective counts
    assert IGDPlus([[0.1, 0.1]])([[0.0, 0.0]]) == 0.0


def test_empty_and_out_of_range_sets():
    assert HV()(np.zeros((0, 2))) == 0.0
    assert HV()([[1.0, 0.2], [0.3, 1.5]]) == 0.0                            # at or beyond the reference point
    assert hypervolume([[0.5, 0.5], [1.2, 0.1]]) == pytest.approx(0.25)   # the outside point adds nothing
    assert IGDPlus([[0.1, 0.1]])(np.zeros((0, 2))) == float("inf")


def test_bad_shapes_are_refused():
    with pytest.raises(SearchError, match=r"shape \(n_configs, 2\)"):
        HV()(np.zeros((3, 3)))
    with pytest.raises(SearchError, match="NaN"):
        HV()([[np.nan, 0.1]])
    with pytest.raises(SearchError, match="reference_front is empty"):
        IGDPlus(np.zeros((0, 2)))


def test_saving_at_drop():
    F = np.array([[0.20, 0.30], [0.12, 0.50], [0.105, 0.70], [0.10, 0.95]])   # base accuracy 0.90 at cost 1
    assert saving_at_drop(F, 0.90, 0.005) == pytest.approx(0.30)
    assert saving_at_drop(F, 0.90, 0.0) == pytest.approx(0.05)
    assert saving_at_drop(F, 0.90, 0.10) == pytest.approx(0.70)
    assert saving_at_drop(F, 0.95, 0.01) is None
    assert saving_at_drop(np.zeros((0, 2)), 0.9, 0.01) is None
    with pytest.raises(SearchError, match="max_drop"):
        saving_at_drop(F, 0.9, 0.5 * 100)
