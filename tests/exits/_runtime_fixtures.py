"""Shared fixtures of the runtime and validation tests: a tiny dumped model and an export searched on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contract import RuleInputs, harmless, partner_exit, reads_partner, rule_class
from data_cache.blocks import BlockReader
from exits import attach_exits
from exits.data import TensorDataset
from exits.dump import dump_cache
from search.export import build_export
from search.problem import ExitProblem
from search.scores import read_inputs

__all__ = ["tiny_model", "tiny_splits", "dump", "tiny_dumped", "safe_thresholds", "learned_params", "make_export",
           "certify"]


def tiny_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("heads", ("linear", "mlp"))
    return attach_exits("resnet10t", points="blocks", num_classes=10, input_size=(3, 16, 16), **kwargs)


def tiny_splits(n_search: int = 40, n_holdout: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {s: TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g),
                             sample_index=np.arange(n) * 2 + 5)
            for s, n in (("search", n_search), ("holdout", n_holdout))}


def dump(model, splits, out: Path, **kwargs):
    return dump_cache(model, splits, out, k=3, with_logits=True, batch_size=16, **kwargs)


def tiny_dumped(folder: Path, n_holdout: int = 48):
    """``(model, splits, cache)``: the tiny model, its splits and their cache dumped into ``folder``."""
    model, splits = tiny_model(), tiny_splits(n_holdout=n_holdout)
    return model, splits, dump(model, splits, folder / "cache")


def safe_thresholds(scores: np.ndarray, quantile: float) -> float:
    """A threshold near ``quantile`` of ``scores``, midway in a gap wider than 1e-5 (else the widest gap),
    so that no score lies within float rounding of it."""
    s = np.unique(scores.astype(np.float64))
    if len(s) < 2:
        return float(s[0] - 1e-3)
    diff = np.diff(s)
    gaps = np.flatnonzero(diff > 1e-5)
    if not len(gaps):
        gaps = np.array([int(np.argmax(diff))])
    j = gaps[np.argmin(np.abs(gaps - quantile * (len(s) - 1)))]
    return float((s[j] + s[j + 1]) / 2)


def learned_params(cache, rules) -> dict:
    """Params of the learned rules among ``rules`` (``gate``, ``partner_gate``) at every early exit (that has a partner,
    for a rule reading it), fitted on the search and holdout rows together (the tiny splits are too small to fit on
    one; these tests check scoring, not fitting)."""
    out = {}
    splits = ("search", "holdout")
    fields = ("topk_probs", "ids", "partner_ids", "partner_probs")
    for name in rules:
        rule = rule_class(name)()
        if not rule.learned:
            continue
        out[name] = {}
        right = {s: np.asarray(cache.topk_ids(s))[:, 0] == np.asarray(cache.labels(s)) for s in splits}
        for e in range(len(cache.exits) - 1):
            if reads_partner(rule) and partner_exit(cache.exits, e) is None:
                continue
            with BlockReader() as reader:
                got = [read_inputs(cache, s, rule, e, 0, cache.n_samples(s), reader) for s in splits]
            inputs = RuleInputs(**{f: None if getattr(got[0], f) is None
                                   else np.concatenate([getattr(g, f) for g in got]) for f in fields})
            target = np.concatenate([harmless(right[s][e], right[s][-1]) for s in splits])
            out[name][e] = rule.fit(inputs, target).to_json()
    return out


def make_export(cache, score: str = "max_prob", split: str = "holdout", rules: tuple[str, ...] = ()) -> dict:
    """An export of several configurations (one, two and three early exits; the base) on ``cache``; with
    ``rules``, the j-th enabled exit of each uses ``rules[j % len(rules)]`` (configurations mixing rules).

    A rule reading its partner (``agree``, ``ensemble``) gives way to ``max_prob`` at an exit without one (the first
    position), and such a table holds one more configuration, where each partner is enabled (its top-k handed on):
    the others decide with the partner off (its head run by the deciding stage, on its path or its input)."""
    rules = tuple(rules) or (score,)
    paired = any(reads_partner(r) for r in rules)
    held = rules + ("max_prob",) if paired and "max_prob" not in rules else rules
    search = ExitProblem(cache, "search", score=rules[0], rules=held, params=learned_params(cache, rules))
    holdout = search.on_split("holdout")
    ref = holdout if split == "holdout" else search
    early = [i for i, e in enumerate(cache.exits[:-1])]
    by_pos: dict[int, list[int]] = {}
    for i in early:
        by_pos.setdefault(cache.exits[i].position, []).append(i)
    positions = sorted(by_pos)
    plans = [[(positions[0], 0, 0.5)], [(positions[1], 1, 0.3), (positions[-1], 0, 0.5)],
             [(positions[0], 1, 0.6), (positions[1], 0, 0.4), (positions[2], 1, 0.3)], []]
    if paired:  # the same head at three positions in a row: each partner enabled
        plans.insert(3, [(positions[0], 0, 0.6), (positions[1], 0, 0.4), (positions[2], 0, 0.3)])
    entries = []
    for plan in plans:
        exits, thr = [], []
        remaining = np.ones(ref.n_samples, dtype=bool)
        names = [rules[j % len(rules)] for j in range(len(plan))]
        for j, ((pos, slot, q), r) in enumerate(zip(plan, names, strict=True)):
            e = by_pos[pos][slot % len(by_pos[pos])]
            if reads_partner(r) and partner_exit(cache.exits, e) is None:
                r = names[j] = "max_prob"
            s = ref.scores_of(r)[e]
            t = safe_thresholds(s[remaining] if remaining.any() else s, q)
            exits.append(e)
            thr.append(t)
            remaining &= ~(s > t)
        entries.append(("test", search.config(exits, thr, tuple(names))))
    return build_export(entries, search=search, holdout=holdout, pareto=False)


def certify(cache, doc: dict, index: int, *, split: str = "search", seed: int = 0) -> float:
    """Give ``doc["configs"][index]`` a genuine drop certificate (trinomial, delta 0.1) on the calibration rows
    ``split`` records (a half of search cut with ``seed``, or the cache's calibration split), at the smallest
    drop those rows certify for it, rounded up to a hundredth; return that drop."""
    import math

    from search.calibration import recorded_calibration
    from search.certify import get_bound, paired_losses
    from search.costs import cost_table
    from search.export import export_configs
    from search.pareto_testing import outcomes, retest

    config = export_configs(doc, cache)[index][1]
    cal, _ = recorded_calibration(cache, split, 0.5 if split == "search" else None, seed, score=config.score,
                                  costs=cost_table(cache))
    losses = paired_losses(outcomes(cal, config)[0], cal.correct[cal.final_exit])
    drop = math.ceil(100 * get_bound("trinomial").upper_bound(losses, 0.1) + 1e-9) / 100
    cert = {"kind": "drop", "bound": "trinomial", "delta": 0.1, "n_cal": cal.n_samples, "certified_drop": drop,
            "split": split, "seed": seed, "tested": 1, "sequence": 1,
            **({"fraction": 0.5} if split == "search" else {})}
    got = retest(cal, config, cert)
    assert got["certified"]
    doc["configs"][index]["certificate"] = {**cert, "p_value": got["p_value"], "observed_drop": got["observed_drop"]}
    return drop


def fashion_dump(tmp: Path):
    """A tiny model dumped on fake Fashion-MNIST files (60 train, 30 test) with the dump's provenance: the
    model, its checkpoint (with the backbone) and the cache folder ``tmp/cache``."""
    from _fashion import fashion_files

    from exits.checkpoints import save_checkpoint
    from exits.data import load_splits
    from exits.dump import dump_provenance

    root = fashion_files(tmp / "fm", n_train=60, n_test=30)
    model = tiny_model()
    data = {"dataset": "fashion_mnist", "search_fraction": 0.3, "seed": 0}
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, include_backbone=True, data=data)
    splits = load_splits("fashion_mnist", root, data_config=model.data_config, search_fraction=0.3, seed=0)
    prov = dump_provenance(model, data_config=model.data_config, dataset="fashion_mnist",
                           split_parameters=splits.parameters, seed=0)
    cache = dump_cache(model, splits.cache_splits(), tmp / "cache", k=3, batch_size=16,
                       split_definitions=splits.definitions, provenance=prov)
    return model, ckpt, cache
