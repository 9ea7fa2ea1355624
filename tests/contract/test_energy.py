"""The energy rule (log-sum-exp of the logits): its formula, range, and a search -> runtime run from the command
line, with no backend knowing it by name."""
from __future__ import annotations

import json

import numpy as np
import torch

from contract import get_rule, rule_inputs_from_logits


def test_energy_is_the_log_sum_exp_of_the_float16_logits():
    rule = get_rule("energy")
    z = (np.random.default_rng(0).standard_normal((300, 9)) * 8).astype(np.float32)
    inputs, _ = rule_inputs_from_logits(rule, z)
    want = np.log(np.exp(z.astype(np.float16).astype(np.float64)).sum(axis=1))
    got = rule.score(inputs)
    assert got.dtype == np.float32 and inputs.topk_probs is None
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    lo, hi = rule.threshold_range(9)
    assert lo == -65504.0 and hi == 65504.0 + np.log(9) and rule.threshold_range()[1] == np.inf
    z[0] = 60000.0  # no overflow where float16 logits are finite
    assert np.isfinite(rule.score(rule_inputs_from_logits(rule, z)[0])).all()


def test_search_pareto_score_energy_and_the_runtime_run_its_export(tmp_path):
    from _runtime_fixtures import dump, tiny_model, tiny_splits

    from exits.runtime import ExitRuntime
    from search.pareto import main
    from search.problem import ExitProblem

    model, splits = tiny_model(), tiny_splits(n_search=64, n_holdout=64)
    cache = dump(model, splits, tmp_path / "cache")
    out = tmp_path / "energy.json"
    assert main([str(cache.path), "--score", "energy", "--methods", "global", "--export", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["score"] == "energy" and all(d["score"] == "energy" for c in doc["configs"] for d in c["exits"])
    runtime = ExitRuntime(model, out, cache=cache)
    problem = ExitProblem(cache, "holdout", score="energy")
    with torch.inference_mode():
        x = splits["holdout"].images
    for config in runtime.configs:
        got = runtime.run(x, config).exits.numpy()
        want = problem.assign(config)
        near = np.zeros(len(want), dtype=bool)  # a batch of another size may round a score's last bits
        for e, t in zip(config.exits, config.thresholds, strict=True):
            near |= np.abs(problem.scores[e].astype(np.float64) - t) <= 1e-3
        assert np.array_equal(got[~near], want[~near])
