"""Every registered exit rule through the three sides on the same inputs: the search (from a cache stored as the
dump stores it), the runtime (torch) and the bundle router (numpy + onnxruntime); identical decisions required.

A new rule registered in ``contract/rules`` is picked up here with no change to this file (a rule with learned params,
``gate``, ``partner_gate``, is fitted per exit on the cache first and travels in the configurations; a rule reading
its partner exit, ``agree`` / ``ensemble`` / ``partner_gate``, is run at the exits that have one, with the partner
enabled and not).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bundle import open_bundle
from bundle.router import exit_scores as router_scores
from contract import get_rule, list_rules, partner_exit, reads_partner, topk_of_logits
from data_cache import format as fmt
from data_cache._base import CacheMeta, ExitInfo, UnitInfo
from data_cache.memory import InMemoryCache
from exits.dump import exit_topk
from exits.runtime import ExitRuntime
from exits.runtime import exit_scores as runtime_scores
from search.learned import config_params
from search.problem import ExitProblem

N_EXITS, N, C, K = 3, 400, 10, 3


def _logits(seed: int = 0) -> np.ndarray:
    """``(n_exits, n, n_classes)`` float32 logits with repeated rows (ties) and a few extreme ones."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((N_EXITS, N, C)) * rng.uniform(0.5, 6, (N_EXITS, N, 1))).astype(np.float32)
    z[:, 10:20] = z[:, :1]
    z[:, 20] = 0.0
    z[:, 21, 0] = 60.0
    return z


def _cache(z: np.ndarray) -> InMemoryCache:
    """The cache ``exits.dump`` writes for these logits: torch's softmax top-k, float16 logits."""
    ids, probs, z16 = exit_topk([torch.from_numpy(zi) for zi in z], K)
    units = tuple(UnitInfo(f"seg{p}", "segment", 10.0) for p in range(N_EXITS))
    exits = tuple(ExitInfo(f"blocks.{p}/linear", p, "linear", tuple(f"seg{q}" for q in range(p + 1)))
                  for p in range(N_EXITS - 1))
    exits += (ExitInfo("head", N_EXITS - 1, "final", tuple(f"seg{q}" for q in range(N_EXITS)), final=True),)
    meta = CacheMeta(exits=exits, units=units, n_classes=C, k=K, splits={"search": N})
    arrays = {fmt.LABELS: np.zeros(N, np.int64), fmt.SAMPLE_INDEX: np.arange(N),
              fmt.TOPK_IDS: np.transpose(ids, (1, 2, 0)), fmt.TOPK_PROBS: np.transpose(probs, (1, 2, 0)),
              fmt.LOGITS: np.transpose(np.asarray(z16), (1, 0, 2))}
    return InMemoryCache(meta, {"search": arrays})


@pytest.mark.parametrize("name", list_rules())
def test_every_rule_scores_and_decides_identically_on_every_side(name):
    """At every threshold equal to a score (the hardest ties), runtime decides exactly as the search; the
    router as well for rules read from logits, and for top-k rules away from float32 rounding of softmax."""
    z = _logits()
    cache = _cache(z)
    problem = ExitProblem(cache, "search", score=name)       # a learned rule (gate) fitted here, per exit
    tested = 0
    for e in range(N_EXITS - 1):
        partner = partner_exit(cache.exits, e)
        if reads_partner(name) and partner is None:
            continue   # refused by every side (tests/exits/test_runtime_partner.py, tests/bundle)
        rule = get_rule(name, problem.params[name][e]) if name in problem.params else get_rule(name)
        tested += 1
        cached = problem.scores[e]
        theirs = z[partner] if "partner" in rule.reads else None   # the partner's logits (its head run here)
        torch_s, torch_p = runtime_scores(torch.from_numpy(z[e]), rule,
                                          partner_logits=None if theirs is None else torch.from_numpy(theirs))
        np_s, np_p = router_scores(z[e], rule,
                                   partner=None if theirs is None else topk_of_logits(theirs, rule.k))
        np.testing.assert_array_equal(torch_s.numpy(), cached)        # bit for bit: same inputs, same formula
        np.testing.assert_array_equal(torch_p.numpy(), np.asarray(problem.cache.topk_ids("search"))[e, 0])
        exact_router = "topk_probs" not in rule.reads
        if exact_router:
            np.testing.assert_array_equal(np_s, cached)
        else:  # numpy's softmax may differ from torch's in the last bit
            np.testing.assert_allclose(np_s, cached, atol=1e-6)
        values = np.unique(cached.astype(np.float64))
        gaps = np.flatnonzero(np.diff(values) > 1e-5)
        safe = (values[gaps] + values[gaps + 1]) / 2        # no score within float rounding of these
        for t in np.concatenate([values, safe]):
            want = rule.leaves(cached, t)
            np.testing.assert_array_equal(rule.leaves(torch_s.numpy(), t), want)
            if exact_router or t in safe:
                np.testing.assert_array_equal(rule.leaves(np_s, t), want)
    assert tested


@pytest.fixture(scope="module")
def every_rule_bundle(tmp_path_factory):
    """A tiny ResNet, its cache (with logits), a table with configurations of every registered rule and its
    bundle."""
    from _bundles import resnet_setup

    return resnet_setup(tmp_path_factory.mktemp("parity"))


def test_every_rule_through_search_runtime_and_router_end_to_end(every_rule_bundle):
    model, splits, cache, doc, path = every_rule_bundle
    assert {c["exits"][0]["score"] for c in doc["configs"] if c["exits"]} == set(list_rules())
    assert any(len({d["score"] for d in c["exits"]}) > 1 for c in doc["configs"])   # rules mixed across exits
    router = open_bundle(path)
    runtime = ExitRuntime(model, doc, cache=cache)
    x = splits["holdout"].images
    for rc, tc in zip(router.configs, runtime.configs, strict=True):
        want = ExitProblem(cache, "holdout", score=tc.score, rules=tc.rule_set, params=config_params([tc])).assign(tc)
        # re-batching: survivors (and what a partner handed on) gathered; on two workers, each its own stream
        for rebatch, workers in ((False, 1), (True, 1), (True, 2)):
            batches = list(torch.split(x, 13))
            got_runtime = runtime.run_batches(batches, tc, rebatch=rebatch, batch_size=16, workers=workers)
            got_router = router.run_batches([b.numpy() for b in batches], rc, rebatch=rebatch, batch_size=16,
                                            workers=workers)
            np.testing.assert_array_equal(got_runtime.exits.numpy(), want)
            np.testing.assert_array_equal(got_router.exits, want)
            np.testing.assert_array_equal(got_router.predictions, got_runtime.predictions.numpy())
            # MACs as the search predicted them (a partner's head paid once, where it ran)
            np.testing.assert_allclose(got_router.macs, got_runtime.macs.numpy(), rtol=1e-12)
            assert got_runtime.relative_cost == pytest.approx(tc.relative_cost("holdout"), rel=1e-9)
    # partner rules ran with the partner enabled (its top-k handed on) and not (its head run by the deciding stage)
    for side in (runtime, router):
        stages = [s for c in side.configs for s in side._stages_of(c)]
        assert any(s.hand_on for s in stages) and any(s.units.partner is not None for s in stages)


def test_a_table_naming_an_unknown_rule_is_refused_by_every_side(every_rule_bundle, tmp_path):
    from exits.runtime import RuntimeConfigError
    from search.export import export_configs, read_export

    model, _, cache, doc, path = every_rule_bundle
    bad = copy.deepcopy(doc)
    for d in bad["configs"][0]["exits"]:
        d["score"] = "learned_gate"
    file = tmp_path / "bad.json"
    file.write_text(__import__("json").dumps(bad))
    known = str(list_rules())
    for call, error in [(lambda: export_configs(read_export(file), cache), ValueError),
                        (lambda: ExitRuntime(model, bad, cache=cache), RuntimeConfigError),
                        (lambda: open_bundle(path, configs=bad), ValueError)]:
        with pytest.raises(error) as info:
            call()
        msg = str(info.value)
        assert "'learned_gate'" in msg and known in msg and "\n" not in msg


@pytest.mark.parametrize("name", list_rules())
def test_every_rule_scores_from_a_graphs_topk_as_from_the_cache(name):
    """A bundle graph that outputs its logits' softmax top-k (``exits/onnx_graphs.py``) is scored from them: given
    the top-k the dump wrote, every rule scores bit for bit as the search does, and predicts the cache's top-1."""
    from contract import ContractError, rule_inputs_from_topk

    z = _logits(1)
    cache = _cache(z)
    problem = ExitProblem(cache, "search", score=name)
    ids, probs = np.asarray(cache.topk_ids("search")), np.asarray(cache.topk_probs("search"))
    for e in range(N_EXITS - 1):
        partner = partner_exit(cache.exits, e)
        if reads_partner(name) and partner is None:
            continue
        rule = get_rule(name, problem.params[name][e]) if name in problem.params else get_rule(name)
        theirs = None if partner is None else (ids[partner].T[:, :rule.k], probs[partner].T[:, :rule.k])
        inputs, pred = rule_inputs_from_topk(rule, probs[e].T, ids[e].T.astype(np.int64), z[e], theirs)
        np.testing.assert_array_equal(rule.score(inputs), problem.scores[e])
        np.testing.assert_array_equal(pred, ids[e, 0])
    with pytest.raises(ContractError, match="reads the top 2 classes; 1 were given"):
        rule_inputs_from_topk(get_rule("margin"), probs[0].T[:, :1], ids[0].T[:, :1])
