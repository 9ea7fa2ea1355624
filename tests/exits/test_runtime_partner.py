"""``ExitRuntime`` with rules that read the partner exit (``agree``, ``ensemble``): decisions as the cache's top-k
make them, whether the partner is enabled (its top-k handed on) or not (its head run in the deciding stage), plain
and re-batching, and each row's MACs as the paired cost table predicts them (the partner head paid once)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _runtime_fixtures import safe_thresholds, tiny_dumped

from contract import ExitConfig, RuleInputs, get_rule, partner_exit
from contract.costs import get_cost_model
from exits.runtime import ExitRuntime

# (exit, rule) plans on the tiny ResNet (exits 0-7: linear/mlp at positions 0-3; partner_exit: e -> e - 2)
PLANS = {
    "partner-off": [(2, "agree")],                                   # partner 0 runs inside the stage
    "partner-on": [(0, "max_prob"), (2, "agree")],                    # partner 0 enabled: its top-k handed on
    "partner-at-input": [(1, "max_prob"), (2, "agree")],              # partner 0 off, on the stage's input state
    "chained": [(3, "agree"), (5, "ensemble"), (6, "agree")],         # off, on (k=2 handed on), off at input
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_dumped(tmp_path_factory.mktemp("partner"), n_holdout=96)


def _scores(cache, split: str, rule_name: str, e: int) -> np.ndarray:
    """The rule's scores at exit ``e`` computed from the cache's top-k arrays as stored (the search's inputs)."""
    rule = get_rule(rule_name)
    ids, probs = np.asarray(cache.topk_ids(split)), np.asarray(cache.topk_probs(split))
    k = rule.k
    inputs = RuleInputs(topk_probs=np.ascontiguousarray(probs[e, :k].T))
    if "partner" in rule.reads:
        p = partner_exit(cache.exits, e)
        inputs = RuleInputs(inputs.topk_probs, None, ids[e, :k].T.astype(np.int64), ids[p, :k].T.astype(np.int64),
                            np.ascontiguousarray(probs[p, :k].T))
    return rule.score(inputs)


def _config(cache, plan) -> tuple[ExitConfig, np.ndarray]:
    """The plan with thresholds away from every score (float rounding cannot flip a decision), and where each
    holdout row leaves by the cache's numbers."""
    n = len(np.asarray(cache.labels("holdout")))
    where = np.full(n, len(cache.exits) - 1)
    remaining = np.ones(n, bool)
    thresholds = []
    for e, name in plan:
        s = _scores(cache, "holdout", name, e)
        t = safe_thresholds(s[remaining], 0.5)
        thresholds.append(t)
        leave = remaining & get_rule(name).leaves(s, t)
        where[leave] = e
        remaining &= ~leave
    return ExitConfig(tuple(e for e, _ in plan), tuple(thresholds), rules=tuple(r for _, r in plan)), where


def _predicted_macs(cache, cfg: ExitConfig, where: np.ndarray) -> np.ndarray:
    """Each row's MACs by the paired cost table (``CostTable.paired``): the search's prediction."""
    partners = {e: partner_exit(cache.exits, e) for e, r in zip(cfg.exits, cfg.rule_names, strict=True)
                if "partner" in get_rule(r).reads}
    table = get_cost_model("macs").table(cache.units, cache.exits).paired(partners)
    path = [*cfg.exits, len(cache.exits) - 1]
    per_exit = dict(zip(path, table.exit_costs(cfg.exits), strict=True))
    return np.array([per_exit[int(w)] for w in where])


@pytest.mark.parametrize("plan", list(PLANS))
def test_partner_rules_decide_as_the_cache_and_pay_the_paired_costs(setup, plan):
    model, splits, cache = setup
    cfg, where = _config(cache, PLANS[plan])
    assert len(set(where.tolist())) >= 2                      # rows leave at more than one exit
    rt = ExitRuntime(model, device="cpu")
    x = splits["holdout"].images
    want_macs = _predicted_macs(cache, cfg, where)
    for got in (rt.run(x, cfg), rt.run_batches(torch.split(x, 20), cfg),
                rt.run_batches(torch.split(x, 7), cfg, rebatch=True, batch_size=16)):
        np.testing.assert_array_equal(got.exits.numpy(), where)
        np.testing.assert_allclose(got.macs.numpy(), want_macs, rtol=1e-12)
    top1 = np.asarray(cache.topk_ids("holdout"))[where, 0, np.arange(len(where))]
    np.testing.assert_array_equal(rt.run(x, cfg).predictions.numpy(), top1)


def test_an_enabled_partner_is_not_paid_twice(setup):
    """With the partner enabled, rows reaching the deciding exit pay its head once (where it ran); without, the
    deciding stage pays it: the same rows leaving at the same exit cost more."""
    model, splits, cache = setup
    rt = ExitRuntime(model, device="cpu")
    on, _ = _config(cache, PLANS["partner-on"])
    off = ExitConfig((2,), (on.thresholds[1],), "agree")
    head = rt.unit_macs["head:layer1.0/linear"]
    stage_on, stage_off = rt._stages_of(on), rt._stages_of(off)
    assert stage_on[0].hand_on == 1 and stage_on[1].units.partner is None
    assert stage_off[0].units.partner is not None
    assert stage_off[0].cost == pytest.approx(stage_on[0].cost + stage_on[1].cost)
    assert stage_off[0].cost - head == pytest.approx(rt.unit_macs["segment:layer1.0"] + rt.unit_macs["segment:layer2.0"]
                                                     + rt.unit_macs["head:layer2.0/linear"])


def test_a_partner_rule_at_an_exit_without_a_partner_is_refused_in_one_line(setup):
    from _runtime_fixtures import make_export

    from exits.runtime import RuntimeConfigError

    model, _, cache = setup
    doc = make_export(cache)
    entry = doc["configs"][0]
    first = next(d for d in entry["exits"] if d["position"] == 0)
    doc["configs"] = [dict(entry, exits=[dict(first, score="agree", threshold=0.5)])]
    with pytest.raises(RuntimeConfigError) as info:
        ExitRuntime(model, doc, cache_fingerprint=cache.fingerprint)
    msg = str(info.value)
    assert "\n" not in msg and "'agree'" in msg and first["name"] in msg and "one position earlier" in msg
