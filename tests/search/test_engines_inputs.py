"""Bad inputs to what the engines share (indicators): one SearchError line, never a numpy traceback."""
from __future__ import annotations

import pytest

from search import SearchError
from search.indicators import HV, hypervolume, igd_plus


@pytest.mark.parametrize("ref_point,match", [
    ((), "ref_point must be one point .* got 0 points"),                   # was an IndexError traceback
    ([(1.0, 1.0), (0.5, 0.5)], "ref_point must be one point .* got 2 points"),   # the second was ignored
    ("ab", "ref_point must hold numbers"),                                  # was a ValueError traceback
])
def test_a_bad_reference_point_is_one_line(ref_point, match):
    with pytest.raises(SearchError, match=match):
        HV(ref_point)
    with pytest.raises(SearchError, match=match):
        hypervolume([[0.5, 0.5]], ref_point)


def test_a_front_that_is_not_numbers_is_one_line():
    with pytest.raises(SearchError, match="F must hold numbers"):
        hypervolume("x")
    with pytest.raises(SearchError, match="reference_front must hold numbers"):
        igd_plus([[0.1, 0.2]], [["a", "b"]])
