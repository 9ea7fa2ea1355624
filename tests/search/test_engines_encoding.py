"""The population engines' encoding (``search.encoding``): round trips of thresholds that are not float32 values."""
from __future__ import annotations

import numpy as np
import pytest

from search import ExitConfig
from search.encoding import MixedEncoding


@pytest.mark.parametrize("kind", ["float", "quantile"])
@pytest.mark.parametrize("offset", [-1e-12, 0.0, 1e-12])
def test_a_threshold_beside_a_score_round_trips(small_problem, kind, offset):
    """Regression: the quantile encoding rounded a float64 threshold to the nearest float32, so one just
    below a score (whose samples leave) came back at that score (they stayed): dp's midpoints between
    adjacent float32 scores could round so too, and seeding with dp was not lossless."""
    e = small_problem.position_exits[0][0]
    scores = np.unique(small_problem.scores[e])
    config = ExitConfig((e,), (float(scores[scores.size // 2]) + offset,), small_problem.score)
    enc = MixedEncoding(small_problem, kind)
    (back,) = enc.to_configs(*enc.encode([config]))
    np.testing.assert_array_equal(small_problem.assign(back), small_problem.assign(config))
