"""Tiny exported bundles for the tests: a dumped model, a table searched on its cache, the bundle of it."""
from __future__ import annotations

import copy

from _runtime_fixtures import dump, make_export, tiny_model, tiny_splits

from contract import list_rules
from exits.export_bundle import export_bundle

__all__ = ["resnet_setup", "mixed_score_table"]


def mixed_score_table(cache) -> dict:
    """One table whose configurations use every registered exit rule (ids ``<score>-<i>``), and configurations
    mixing them across exits (ids ``mixed-<i>``)."""
    doc = make_export(cache)
    doc["configs"] = []
    for score in list_rules():
        for i, entry in enumerate(make_export(cache, score)["configs"]):
            doc["configs"].append(dict(copy.deepcopy(entry), id=f"{score}-{i}"))
    for i, entry in enumerate(make_export(cache, rules=tuple(reversed(list_rules())))["configs"]):
        if len({d["score"] for d in entry["exits"]}) > 1:
            doc["configs"].append(dict(copy.deepcopy(entry), id=f"mixed-{i}"))
    return doc


def resnet_setup(tmp, **export_kwargs):
    """(model, splits, cache, table, bundle path) for the tiny ResNet with linear and mlp heads."""
    model = tiny_model()
    splits = tiny_splits()
    cache = dump(model, splits, tmp / "cache")
    doc = mixed_score_table(cache)
    export_kwargs.setdefault("exporter", "torchscript")
    export_bundle(model, doc, tmp / "bundle", cache=cache, **export_kwargs)
    return model, splits, cache, doc, tmp / "bundle"
