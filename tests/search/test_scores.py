"""Score kinds: computed from the cache exactly as from a softmax vector at run time."""
from __future__ import annotations

import numpy as np
import pytest

from contract import get_rule, rule_inputs_from_logits
from search import ExitProblem, SearchError
from search.scores import compute_scores, score_range


@pytest.fixture(scope="module")
def logit_cache(make_cache, chain):
    exits, units = chain(3)
    return make_cache(exits, units, n_samples=300, n_classes=7, k=3, seed=4, logits=True)


def test_max_prob_and_margin_from_topk(logit_cache):
    p = logit_cache.topk_probs("search")
    np.testing.assert_array_equal(compute_scores(logit_cache, "search", "max_prob"), p[:, 0])
    np.testing.assert_array_equal(compute_scores(logit_cache, "search", "margin"), p[:, 0] - p[:, 1])
    np.testing.assert_array_equal(compute_scores(logit_cache, "search", "margin", exits=[2, 0]),
                                  (p[:, 0] - p[:, 1])[[2, 0]])


def test_neg_entropy_from_logits(logit_cache):
    z = np.asarray(logit_cache.logits("search"), dtype=np.float64)
    logp = z - z.max(axis=-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    expected = (np.exp(logp) * logp).sum(axis=-1)
    got = compute_scores(logit_cache, "search", "neg_entropy")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)
    lo, hi = score_range("neg_entropy", logit_cache.n_classes)
    assert np.all((got >= lo - 1e-6) & (got <= hi + 1e-6))


@pytest.mark.parametrize("kind", ["max_prob", "margin", "neg_entropy"])
def test_live_scores_from_logits_agree_with_the_cache(logit_cache, kind):
    """The scores of live logits (the numpy adapter the router uses) equal the search's (from the stored
    top-k/logits)."""
    rule = get_rule(kind)
    logits = np.asarray(logit_cache.logits("search"), dtype=np.float32)
    cached = compute_scores(logit_cache, "search", kind)
    for e in range(logits.shape[0]):
        live = rule.score(rule_inputs_from_logits(rule, logits[e])[0])
        if kind == "neg_entropy":
            np.testing.assert_array_equal(live, cached[e])
        else:
            np.testing.assert_allclose(live, cached[e], atol=1e-7)


def test_problem_uses_the_chosen_kind(logit_cache):
    problem = ExitProblem(logit_cache, score="margin")
    np.testing.assert_array_equal(problem.scores, compute_scores(logit_cache, "search", "margin"))


def test_missing_inputs_and_unknown_kinds(make_cache, chain, small_cache):
    with pytest.raises(SearchError, match="neg_entropy' needs logits"):
        compute_scores(small_cache, "search", "neg_entropy")
    exits, units = chain(1)
    k1 = make_cache(exits, units, k=1)
    with pytest.raises(SearchError, match="needs the top-2"):
        compute_scores(k1, "search", "margin")
    with pytest.raises(SearchError, match="unknown score kind 'entropy'"):
        compute_scores(small_cache, "search", "entropy")
    with pytest.raises(ValueError, match=r"unknown score kind 'top1': must be one of \['max_prob'"):
        get_rule("top1")
    assert score_range("max_prob", 10) == (0.0, 1.0)
    assert score_range("neg_entropy", 10) == (pytest.approx(-np.log(10)), 0.0)
