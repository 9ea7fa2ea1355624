"""The exit-rule registry, the one leave test, the numpy adapter and the one configuration validator."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract import (
    ContractError,
    ExitConfig,
    ExitRef,
    ExitRule,
    ExitTable,
    RuleInputs,
    float32_cut,
    get_rule,
    list_rules,
    register_rule,
    rule_class,
    rule_inputs_from_logits,
    topk_of_logits,
)

ROOT = Path(__file__).resolve().parents[2]


def test_registry_knows_todays_rules_and_refuses_unknown_names_in_one_line():
    assert list_rules()[:3] == ["max_prob", "margin", "neg_entropy"]
    with pytest.raises(ContractError) as info:
        get_rule("confidence")
    msg = str(info.value)
    assert "'confidence'" in msg and all(name in msg for name in list_rules()) and "\n" not in msg
    with pytest.raises(ContractError, match="takes no params"):
        get_rule("max_prob", {"temperature": 2.0})


def test_a_rule_is_registered_once_and_reads_only_what_the_contract_names():
    class Twice(ExitRule):
        name = "max_prob"
        reads = frozenset({"topk_probs"})

        def score(self, inputs):
            return inputs.topk_probs[:, 0]

        def threshold_range(self, n_classes=None):
            return (0.0, 1.0)

    with pytest.raises(ContractError, match="registered twice"):
        register_rule(Twice)
    Twice.name, Twice.reads = "odd", frozenset({"features"})
    with pytest.raises(ContractError, match="reads \\['features'\\]"):
        register_rule(Twice)
    assert "odd" not in list_rules()


def test_float32_cut_and_the_leave_test_follow_the_float64_comparison():
    rng = np.random.default_rng(0)
    rule = get_rule("max_prob")
    for t in np.concatenate([rng.uniform(-3, 1, 300), [0.0, 1.0, -0.0]]):
        cut = float32_cut(float(t))
        assert float(np.float32(cut)) == cut <= t
        near = np.float32(t) + np.arange(-3, 4, dtype=np.float32) * np.spacing(np.float32(t))
        assert np.array_equal(rule.leaves(near, float(t)), near.astype(np.float64) > t)


@pytest.mark.parametrize("name", list_rules())
def test_scores_are_float32_within_the_rule_range(name):
    rule = rule_class(name)()
    z, theirs = (np.random.default_rng(1).standard_normal((2, 200, 7)) * 6).astype(np.float32)
    partner = topk_of_logits(theirs, rule.k) if "partner" in rule.reads else None   # agree, ensemble
    inputs, pred = rule_inputs_from_logits(rule, z, partner)
    if rule.learned:                      # a rule with learned params (gate): fitted on these inputs first
        rule = rule.fit(inputs, pred == 0)
    s = rule.score(inputs)
    lo, hi = rule.threshold_range(7)
    assert s.dtype == np.float32 and s.shape == (200,) and pred.dtype == np.int64
    assert np.all((s >= lo - 1e-6) & (s <= hi + 1e-6))
    assert (inputs.topk_probs is None) == ("topk_probs" not in rule.reads)
    assert (inputs.logits is None) == ("logits" not in rule.reads)
    if inputs.topk_probs is not None:
        assert inputs.topk_probs.shape == (200, rule.k) and np.all(np.diff(inputs.topk_probs, axis=1) <= 0)
    if inputs.logits is not None:
        assert inputs.logits.dtype == np.float16


def _table() -> ExitTable:
    refs = (ExitRef(0, "a/linear", 0, "linear"), ExitRef(1, "b/linear", 1, "linear"), ExitRef(2, "head", 2, "final"))
    return ExitTable(refs, 2, 10, "in this cache")


def test_one_validator_resolves_and_refuses_in_one_line():
    entries = [{"name": "a/linear", "position": 0, "head": "linear", "score": "margin", "threshold": 0.5},
               {"name": "b/linear", "position": 1, "threshold": 0.25}]
    config = ExitConfig.from_json(entries, _table(), "margin", id="x", predicted={"search": {"relative_cost": 0.5}})
    assert config == ExitConfig((0, 1), (0.5, 0.25), "margin") and config.relative_cost() == 0.5
    assert config.to_json(type("C", (), {"exits": [type("E", (), {"name": r.name, "position": r.position,
                                                                     "head": r.head}) for r in _table().refs]})) \
        == [dict(d, head="linear", score="margin") for d in entries]
    cases = [({"score": "confidence"},
              r"exits\[0\].score: must be one of \['max_prob'.*unknown score kind 'confidence'"),
             ({"threshold": 1.5}, r"exits\[0\].threshold: 1.5 outside \[0, 1\]"),
             ({"name": "c/linear"}, r"exits\[0\]: exit 'c/linear' is not in this cache"),
             ({"name": "head", "position": 2, "head": "final"}, "is the final exit"),
             ({"position": 1}, r"is at position 0 with head 'linear', not 1"),
             ({"params": {"w": 1}}, "takes no params")]
    for change, match in cases:
        bad = [dict(entries[0], **change), entries[1]] if change.get("position") != 1 else [dict(entries[0], **change)]
        with pytest.raises(ContractError, match=match) as info:
            ExitConfig.from_json(bad, _table())
        assert "\n" not in str(info.value)
    with pytest.raises(ContractError, match="execution order"):
        ExitConfig.from_json(entries[::-1], _table())


def test_a_configuration_is_checked_once_per_owner():
    table, config = _table(), ExitConfig((0, 1), (0.5, 0.25))
    assert config.check(table) is config
    object.__setattr__(config, "thresholds", (0.5, 7.0))  # tampered after the check: not looked at again
    assert config.check(table) is config
    with pytest.raises(ContractError, match="outside"):
        config.check(_table())


def test_contract_and_bundle_import_no_torch_and_no_other_side():
    code = ("import sys, contract, bundle; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'optuna', 'pymoo', 'matplotlib', 'search', 'exits', 'data_cache')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_rule_inputs_default_to_nothing():
    empty = RuleInputs()
    assert empty.topk_probs is None and empty.ids is None and empty.partner_ids is None and empty.partner_probs is None
