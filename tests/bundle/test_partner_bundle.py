"""Bundles serving rules that read the partner exit (``agree``, ``ensemble``): the partner heads exported and named
in the manifest, the router deciding and charging as the runtime and the search, refusals in one line, and bundles
written before partner rules (no partner records) still loading."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from _runtime_fixtures import dump, make_export, tiny_model, tiny_splits

from bundle import BundleError, open_bundle
from bundle.manifest import MANIFEST, seal_manifest
from exits.export_bundle import export_bundle
from exits.runtime import ExitRuntime
from search.problem import ExitProblem


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny ResNet, its cache, a bundle of an ``agree`` table and one of a ``max_prob`` table."""
    tmp = tmp_path_factory.mktemp("partner")
    model, splits = tiny_model(), tiny_splits()
    cache = dump(model, splits, tmp / "cache")
    agree, plain = make_export(cache, "agree"), make_export(cache)
    for doc, name in ((agree, "agree"), (plain, "plain")):
        export_bundle(model, doc, tmp / name, cache=cache, exporter="torchscript", base=False)
    return model, splits, cache, agree, tmp / "agree", plain, tmp / "plain"


def _manifest(path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def test_an_exported_configuration_deciding_with_agree_brings_its_partner_head(tiny, tmp_path):
    model, _, cache, doc, _, _, _ = tiny
    entry = next(c for c in doc["configs"] if c["exits"] and all(d["score"] == "agree" for d in c["exits"]))
    manifest = export_bundle(model, doc, tmp_path / "one", cache=cache, ids=[entry["id"]], exporter="torchscript",
                             base=False)
    exits = {e["name"]: e for e in manifest["exits"]}
    names = [d["name"] for d in entry["exits"]]
    partners = {exits[n]["partner"] for n in names}
    assert set(exits) == set(names) | partners and not partners & set(names)   # partners not enabled, yet served
    for n in names:
        p = exits[exits[n]["partner"]]
        assert p["graph"] == f"head:{p['name']}" and p["head"] == exits[n]["head"]
        assert p["position"] < exits[n]["position"]
    router = open_bundle(tmp_path / "one")
    assert router.session_calls() == len(router.graphs)   # a batch reaching the final exit runs every graph once


def test_a_bundle_of_an_agree_table_serves_it_as_runtime_and_search(tiny):
    model, splits, cache, doc, path, _, _ = tiny
    router, runtime = open_bundle(path), ExitRuntime(model, doc, cache=cache)
    x = splits["holdout"].images
    for rc, tc in zip(router.configs, runtime.configs, strict=True):
        got, ref = router.run(x.numpy(), rc), runtime.run(x, tc)
        want = ExitProblem(cache, "holdout", score=tc.score, rules=tc.rule_set).assign(tc)
        np.testing.assert_array_equal(got.exits, want)
        np.testing.assert_array_equal(got.predictions, ref.predictions.numpy())
        np.testing.assert_allclose(got.macs, ref.macs.numpy(), rtol=1e-12)
        assert got.relative_cost == pytest.approx(tc.relative_cost("holdout"), rel=1e-9)


def _first_position_agree(doc: dict) -> dict:
    """``doc`` with one configuration: ``agree`` at an exit of the first position (which has no partner)."""
    entry = next(c for c in doc["configs"] if c["exits"] and c["exits"][0]["position"] == 0)
    return {**doc, "configs": [dict(entry, exits=[dict(entry["exits"][0], score="agree", threshold=0.5)])]}


def test_agree_at_a_first_position_exit_is_refused_in_one_line_by_router_and_runtime(tiny):
    from exits.runtime import RuntimeConfigError

    model, _, cache, _, _, plain, plain_path = tiny
    bad = _first_position_agree(plain)
    name = bad["configs"][0]["exits"][0]["name"]
    for call, error in ((lambda: open_bundle(plain_path, configs=bad), BundleError),
                        (lambda: ExitRuntime(model, bad, cache_fingerprint=cache.fingerprint), RuntimeConfigError)):
        with pytest.raises(error) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and f"exit {name!r}" in msg and "'agree'" in msg and "one position earlier" in msg


def test_a_bundle_without_partner_records_loads_and_refuses_partner_rules_in_one_line(tiny, tmp_path):
    """A bundle written before partner rules (no ``partner`` in its exits) loads and runs its table; a table using
    ``agree`` there is refused, naming the exit."""
    import shutil

    _, splits, _, agree, _, plain, plain_path = tiny
    old = tmp_path / "old"
    shutil.copytree(plain_path, old)
    doc = _manifest(old)
    assert any("partner" in e for e in doc["exits"])      # a max_prob bundle names the partners it serves
    for e in doc["exits"]:
        e.pop("partner", None)
    (old / MANIFEST).write_text(json.dumps(seal_manifest({k: v for k, v in doc.items() if k != "fingerprint"})))
    router = open_bundle(old)
    assert len(router.run(splits["holdout"].images[:5].numpy(), router.ids[1]).exits) == 5
    paired = {**plain, "configs": [c for c in agree["configs"] if any(d["score"] == "agree" for d in c["exits"])
                                   and {d["name"] for d in c["exits"]} <= {e["name"] for e in doc["exits"]}]}
    assert paired["configs"]
    with pytest.raises(BundleError) as info:
        open_bundle(old, configs=paired)
    assert "\n" not in str(info.value) and "'agree'" in str(info.value) and "in this bundle" in str(info.value)


def test_a_manifest_naming_a_partner_it_does_not_serve_is_refused(tiny, tmp_path):
    import shutil

    _, _, _, _, path, _, _ = tiny
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    doc = copy.deepcopy(_manifest(bad))
    e = next(e for e in doc["exits"] if "partner" in e)
    e["partner"] = "nowhere"
    (bad / MANIFEST).write_text(json.dumps(seal_manifest({k: v for k, v in doc.items() if k != "fingerprint"})))
    with pytest.raises(BundleError, match=f"exit {e['name']!r} names partner 'nowhere'"):
        open_bundle(bad)


def test_rebatching_hands_partners_on_across_batches(tiny):
    _, splits, _, _, path, _, _ = tiny
    router = open_bundle(path)
    x = splits["holdout"].images.numpy()
    for c in router.configs:
        one = router.run(x, c)
        many = router.run_batches(np.array_split(x, 7), c, rebatch=True, batch_size=8)
        np.testing.assert_array_equal(many.exits, one.exits)
        np.testing.assert_array_equal(many.macs, one.macs)
    assert torch.is_tensor(splits["holdout"].images)
