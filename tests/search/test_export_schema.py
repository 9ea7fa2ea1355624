"""The exitconfig/1 schema on read: exact types, one line ``file: field: problem``, unknown fields kept (issue 13)."""
from __future__ import annotations

import copy
import json

import pytest

from contract import ContractError
from contract.costs import list_cost_models
from data_cache.synthetic import make_synthetic_cache
from search import ExitProblem, run_search
from search._validation import SearchError
from search.config import ExitConfig
from search.export import build_export, export_configs, read_export


@pytest.fixture(scope="module")
def made():
    cache = make_synthetic_cache(300, 3, n_head_types=2, seed=4)
    search = ExitProblem(cache)
    configs = [c for c in run_search(search, "dp").configs if c.exits][:6]
    doc = build_export([("dp", c) for c in configs], search=search, holdout=search.on_split("holdout"))
    return cache, doc


def _read(tmp_path, doc):
    path = tmp_path / "front.json"
    path.write_text(json.dumps(doc))
    return path, read_export(path)


def _set(path: str, value):
    def edit(doc):
        *keys, last = path.split("/")
        d = doc
        for k in keys:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if value is _DELETE:
            del d[int(last) if isinstance(d, list) else last]
        else:
            d[int(last) if isinstance(d, list) else last] = value
    return edit


_DELETE = object()

E0 = "configs/0/exits/0"
BAD = [
    ("configs hold numbers", _set("configs", [1, 2]), "configs[0]: must be an object"),
    ("threshold as a string", _set(f"{E0}/threshold", "0.5"), "configs[0].exits[0].threshold: must be a finite number"),
    ("threshold NaN", _set(f"{E0}/threshold", float("nan")), "configs[0].exits[0].threshold: must be a finite number"),
    ("threshold above 1", _set(f"{E0}/threshold", 1.5), "configs[0].exits[0].threshold: 1.5 outside [0, 1]"),
    ("position 1.9", _set(f"{E0}/position", 1.9), "configs[0].exits[0].position: must be an integer >= 0"),
    ("position true", _set(f"{E0}/position", True), "configs[0].exits[0].position: must be an integer >= 0"),
    ("position as a string", _set(f"{E0}/position", "0"), "configs[0].exits[0].position: must be an integer"),
    ("name a path", _set(f"{E0}/name", "../../x"), "configs[0].exits[0].name: '../../x': a plain name"),
    ("no threshold", _set(f"{E0}/threshold", _DELETE), "configs[0].exits[0].threshold: missing"),
    ("exits an object", _set("configs/0/exits", {"name": "x"}), "configs[0].exits: must be a list"),
    ("unknown score", _set(f"{E0}/score", "max"), "configs[0].exits[0].score: must be one of"),
    ("configs missing", _set("configs", _DELETE), "configs: must be a list"),
    ("cache fingerprint missing", _set("cache/fingerprint", _DELETE),
     "cache.fingerprint: must be a non-empty string"),
    ("cache a string", _set("cache", "sha256:abc"), "cache: must be an object"),
    ("duplicate id", lambda d: d["configs"][1].update(id=d["configs"][0]["id"]),
     "configs[1].id: 'dp-0000' is used twice"),
    ("accuracy 2", _set("configs/0/holdout/accuracy", 2), "configs[0].holdout.accuracy: must be a number in [0, 1]"),
    ("exit fractions short", _set("configs/0/search/exit_fractions", [1.0]),
     "configs[0].search.exit_fractions: 1 entries"),
    ("objective unknown", _set("objective", "flops"), f"objective: must be one of {list_cost_models()}"),
    ("model name a number", _set("model/name", 3), "model.name: must be a string or null"),
    ("fit subsample a string", _set("fit", {"split": "search", "subsample": "all", "of": 300, "seed": 0}),
     "fit.subsample: must be an integer >= 1"),
]

CERT = {"kind": "drop", "bound": "trinomial", "delta": 0.1, "n_cal": 150, "certified_drop": 0.2, "split": "search",
        "seed": 0, "fraction": 0.5, "p_value": 0.05, "observed_drop": 0.01, "tested": 2, "sequence": 3}


def _cert(key: str, value):
    """A valid certificate on configs[0], then ``key`` set to ``value`` (deleted for _DELETE)."""
    def edit(doc):
        doc["configs"][0]["certificate"] = dict(CERT)
        _set(f"configs/0/certificate/{key}", value)(doc)
    return edit


C0 = "configs[0].certificate"
BAD += [
    ("certificate a list", _set("configs/0/certificate", [0.01]), f"{C0}: must be an object"),
    ("certified drop a string", _cert("certified_drop", "0.001"), f"{C0}.certified_drop: must be a number in [0, 1]"),
    ("certified drop missing", _cert("certified_drop", _DELETE), f"{C0}.certified_drop: missing"),
    ("certified drop 5", _cert("certified_drop", 5), f"{C0}.certified_drop: must be a number in [0, 1]"),
    ("delta 0.9", _cert("delta", 0.9), f"{C0}.delta: must be a number in (0, 0.5]"),
    ("delta true", _cert("delta", True), f"{C0}.delta: must be a number"),
    ("n_cal 1.5", _cert("n_cal", 1.5), f"{C0}.n_cal: must be an integer >= 1"),
    ("kind unknown", _cert("kind", "risk"), f"{C0}.kind: must be 'drop' or 'cost'"),
    ("split holdout", _cert("split", "holdout"), f"{C0}.split: must be one of ['calibration', 'search']"),
    ("seed missing", _cert("seed", _DELETE), f"{C0}.seed: missing"),
    ("bound unknown", _cert("bound", "hoeffding"), f"{C0}.bound: must be one of"),
    ("fraction missing on a cut", _cert("fraction", _DELETE), f"{C0}.fraction: missing"),
    ("p-value 2", _cert("p_value", 2), f"{C0}.p_value: must be a number in [0, 1]"),
    ("tested beyond the sequence", _cert("tested", 9), f"{C0}.tested: 9 configurations tested of a sequence of 3"),
    ("fallback level above delta", _cert("level", 0.2), f"{C0}.level: 0.2 must be a drop test's level, at most delta"),
    ("fallback level 0", _cert("level", 0), f"{C0}.level: must be a number in (0, 0.5]"),
    ("cost certificate with a drop bound", lambda d: d["configs"][0].update(certificate={
        **{k: v for k, v in CERT.items() if k not in ("certified_drop", "observed_drop")},
        "kind": "cost", "certified_relative_cost": 0.7}), f"{C0}.bound: must be one of ['betting']"),
]


@pytest.mark.parametrize("edit, field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_exports_are_one_line_naming_file_and_field(made, tmp_path, edit, field):
    _, good = made
    doc = copy.deepcopy(good)
    edit(doc)
    path = tmp_path / "front.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SearchError) as info:
        read_export(path)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"{path}: ") and field in line, line


def test_out_of_order_exits_refused_and_mixed_rules_read_per_exit(made, tmp_path):
    cache, good = made
    doc = copy.deepcopy(good)
    two = next(c for c in doc["configs"] if len(c["exits"]) >= 2)
    two["exits"].reverse()
    with pytest.raises(SearchError, match=r"exits\[1\].position: .* execution order"):
        _read(tmp_path, doc)
    two["exits"].reverse()
    two["exits"][1]["score"] = "margin"
    two["exits"][1]["threshold"] = 0.25
    config = dict(export_configs(doc, cache))[two.get("id", str(doc["configs"].index(two)))]
    assert config.rule_names[:2] == (two["exits"][0].get("score", "max_prob"), "margin")
    assert config.to_json(cache)[1]["score"] == "margin"


def test_unknown_optional_fields_are_accepted_with_the_same_configs(made, tmp_path):
    cache, good = made
    doc = copy.deepcopy(good)
    doc["subsample"] = {"n": 32768, "of": 300}
    for c in doc["configs"]:
        c["audit"] = {"delta": 0.1, "bound": 0.01}
        c["exits"][0]["note"] = "anything"
    _, back = _read(tmp_path, doc)
    assert export_configs(back, cache) == export_configs(good, cache)


def test_configs_resolve_against_the_cache_naming_the_field(made, tmp_path):
    cache, good = made
    doc = copy.deepcopy(good)
    doc["configs"][2]["exits"][0]["name"] = "blocks.9/linear"
    path, back = _read(tmp_path, doc)
    with pytest.raises(SearchError, match=rf"^{path}: configs\[2\].exits\[0\]: exit .* is not in this cache"):
        export_configs(back, cache, source=str(path))


def test_from_json_checks_exact_types(made):
    cache, good = made
    entries = copy.deepcopy(good["configs"][0]["exits"])
    assert ExitConfig.from_json(entries, cache).exits
    entries[0]["threshold"] = "0.5"
    with pytest.raises(ContractError, match=r"exits\[0\].threshold: must be a finite number"):
        ExitConfig.from_json(entries, cache)
    entries[0]["threshold"], entries[0]["position"] = 0.5, float(entries[0]["position"])
    with pytest.raises(ContractError, match=r"exits\[0\].position: must be an integer"):
        ExitConfig.from_json(entries, cache)


def test_an_exit_without_score_has_the_documents_score_as_the_runtime_reads_it(made, tmp_path):
    """Regression: export_configs read such an exit as max_prob while exits.runtime and bundle.router
    (and the schema check) read it with the document's ``score``."""
    cache, good = made
    doc = copy.deepcopy(good)
    doc["score"] = "margin"
    for c in doc["configs"]:
        for d in c["exits"]:
            del d["score"]
    _, back = _read(tmp_path, doc)
    configs = export_configs(back, cache)
    assert {c.score for _, c in configs} == {"margin"}
    assert [(c.exits, c.thresholds) for _, c in configs] == [(c.exits, c.thresholds)
                                                           for _, c in export_configs(good, cache)]
