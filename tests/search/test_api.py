"""``search.search()`` against ``python -m search.pareto``: the same fronts, answers and export; parameters
declared once (``search/params.py``), each refused in one line; one run reads the manifest once and checks
each option once."""
from __future__ import annotations

import json
import re
import sys
from collections import Counter

import numpy as np
import pytest

import search
from data_cache import save_cache
from data_cache.bundled import bundled_cache_path
from data_cache.synthetic import make_synthetic_cache
from search import SearchError
from search.params import PARAMS, Param, check_options
from search.pareto import main

_SECONDS = re.compile(r'"seconds": [0-9.e+-]+')


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "cache"
    save_cache(path, make_synthetic_cache(3000, 4, n_head_types=2, seed=2))
    return path


def _without_seconds(text: str) -> str:
    """A table or an export with the wall times (the one thing two runs may differ in) blanked."""
    text = _SECONDS.sub('"seconds": 0', text)
    return "\n".join(re.sub(r"\s+[0-9.]+$", "", ln) if re.match(r"^\S+\s+\d+\s+[0-9.]+\s", ln) else ln
                     for ln in text.splitlines())


CASES = {
    "bundled certified drop": (None, ["--max-drop", "0.5"], dict(max_drop=0.5)),
    "synthetic uncertified both": ("synthetic", ["--methods", "dp,greedy", "--max-drop", "1", "--budget", "0.6",
                                                 "--uncertified"],
                                   dict(methods="dp,greedy", max_drop=1.0, budget=0.6, uncertified=True)),
    "synthetic subsample certified budget": ("synthetic", ["--methods", "dp", "--subsample", "600",
                                                           "--subsample-above", "1000", "--budget", "0.8", "--seed",
                                                           "3"],
                                             dict(methods=["dp"], subsample=600, subsample_above=1000, budget=0.8,
                                                  seed=3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_library_call_and_command_line_agree(case, synthetic_dir, tmp_path, capsys):
    where, argv, params = CASES[case]
    if where is None and bundled_cache_path() is None:
        pytest.skip("no bundled cache")
    cache = None if where is None else str(synthetic_dir)
    cli = tmp_path / "cli"
    cli.mkdir()
    assert main(([cache] if cache else []) + argv + ["--no-progress", "--export", str(cli / "front.json"),
                                                     "--export-choice", str(cli / "chosen.json")]) == 0
    printed = capsys.readouterr().out

    result = search.search(cache, **params)
    assert isinstance(result, search.SearchResult)
    assert result.failure is None and result.chosen is not None
    result.export(tmp_path / "front.json")
    result.export_choice(tmp_path / "chosen.json")
    for name in ("front.json", "chosen.json"):       # byte-identical, apart from the methods' wall times
        assert _without_seconds((tmp_path / name).read_text()) == _without_seconds((cli / name).read_text())
    # the same table (fronts: points, hypervolumes, IGD+, savings, evaluations) and the same answers
    assert _without_seconds(printed).startswith(_without_seconds(result.text()) + "\n\nexported ")
    doc = json.loads((tmp_path / "front.json").read_text())
    assert {c["method"] for c in doc["configs"]} <= set(result.fronts) | {"query"}
    for method, front in result.fronts.items():
        assert result.holdout_F[method].shape == (len(front), 2)
        np.testing.assert_allclose(front.F, result.search.evaluate(front.configs), rtol=0, atol=1e-12)  # whole split


def test_the_result_holds_what_the_command_prints(synthetic_dir):
    result = search.search(synthetic_dir, methods="dp,global", max_drop=4.0, show_uncertified=True)
    drop = result.answers[0]
    assert drop.kind == "drop" and drop.certificate is not None and drop.contrast is not None
    assert drop.on_search == result.search.evaluate_one(drop.config)
    assert drop.certificate.to_json()["kind"] == "drop"
    assert [r.method for r in result.indicators] == ["dp", "global"]
    assert "for contrast, uncertified" in result.text() and "HV search" in result.table()


def test_a_failed_query_is_recorded_and_the_command_exits_2(synthetic_dir, capsys):
    result = search.search(synthetic_dir, methods="dp", budget=0.001)
    assert result.chosen is None and result.failure.startswith("no configuration is certified within")
    assert main([str(synthetic_dir), "--methods", "dp", "--budget", "0.001", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "HV search" in captured.out                       # the report is printed first, as before
    assert captured.err.strip().splitlines() == [f"error: {result.failure}"]


def _bad_values(p: Param) -> list:
    """Values the declaration of ``p`` refuses (scikit-learn's tests generate them from the constraints)."""
    if p.kind == "flag":
        return ["yes", 1]
    if p.kind == "choice":
        return ["nope", 3]
    if p.kind in ("text", "names"):
        return [3, 1.5] + ([["dp", 3]] if p.kind == "names" else [])
    bad = ["1", True, float("nan"), float("inf")]
    if p.low is not None:
        bad.append(p.low if p.low_open else p.low - 1)
    if p.high is not None:
        bad.append(p.high if p.high_open else p.high + 1)
    return bad + ([1.5] if p.kind == "int" else [])


@pytest.mark.parametrize("name", list(PARAMS))
def test_every_parameter_is_refused_in_one_line_naming_it(name):
    p = PARAMS[name]
    for value in _bad_values(p):
        with pytest.raises(SearchError) as exc:
            check_options({name: value})
        message = str(exc.value)
        assert message.startswith(f"{name}: must be ") and "\n" not in message, (value, message)
        if p.kind in ("float", "int") and not isinstance(value, (bool, str)):
            with pytest.raises(Exception) as parsed:          # the option refuses it in the same words
                p.parser_type()(str(value))
            assert f"must be {p.what}" in str(parsed.value) or "must be an integer" in str(parsed.value)


def test_unknown_and_combined_parameters_are_one_line(synthetic_dir):
    for params, words in ((dict(max_dorp=1), "unknown parameter 'max_dorp'"),
                          (dict(methods="dp,nope"), "unknown method 'nope'"),
                          (dict(methods=""), "methods is empty"),
                          (dict(risk=0.1), "risk needs max_drop or budget"),
                          (dict(max_drop=1, uncertified=True, risk=0.1), "drop risk / calibration_fraction")):
        with pytest.raises(SearchError, match=re.escape(words)):
            search.search(synthetic_dir, **params)


def _count_checks(monkeypatch) -> Counter:
    """Counts, by name, of every manifest read and schema check and of every check of an option."""
    import data_cache._base as base
    import data_cache._validation as validation
    import data_cache.reader as reader

    counts: Counter = Counter()

    def counting(key, fn, name_of=lambda *a, **k: ""):
        def wrapped(*args, **kwargs):
            counts[key + name_of(*args, **kwargs)] += 1
            return fn(*args, **kwargs)
        return wrapped

    for fn in ("read_manifest", "meta_from_manifest"):
        wrapped = counting(fn, getattr(base, fn))
        for mod in (base, validation, reader):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, wrapped)
    for mod in [m for n, m in sys.modules.items() if n == "search" or n.startswith("search.")]:
        for fn, name_of in (("check_scalar", lambda x, name, **k: ":" + name.lstrip("-").replace("-", "_")),
                            ("check_fraction", lambda *a, **k: ":calibration_fraction"),
                            ("check_delta", lambda *a, **k: ":risk")):
            if callable(getattr(mod, fn, None)):
                monkeypatch.setattr(mod, fn, counting("legacy", getattr(mod, fn), name_of))
    parser_type, check = Param.parser_type, Param.check

    def counting_type(self):
        parse = parser_type(self)
        return None if parse is None else counting("option:" + self.name, parse)
    monkeypatch.setattr(Param, "parser_type", counting_type)
    monkeypatch.setattr(Param, "check", lambda self, value: counting("param:" + self.name, check)(self, value)
                        if value is not None else value)
    return counts


def test_one_max_drop_run_reads_the_manifest_once_and_checks_each_option_once(monkeypatch, capsys):
    if bundled_cache_path() is None:
        pytest.skip("no bundled cache")
    counts = _count_checks(monkeypatch)
    assert main(["--max-drop", "0.5", "--calibration-fraction", "0.5", "--no-progress"]) == 2   # has calibration
    assert "calibration split" in capsys.readouterr().err
    assert counts["read_manifest"] == counts["meta_from_manifest"] == 1
    assert counts["option:max_drop"] == counts["option:calibration_fraction"] == 1
    counts.clear()
    assert main(["--max-drop", "0.5", "--no-progress"]) == 0
    assert counts["read_manifest"] == 1 and counts["meta_from_manifest"] == 1
    assert counts["option:max_drop"] == 1
    rechecked = [k for k in counts if k.startswith(("legacy", "param")) and k.split(":")[1] in PARAMS]
    assert not rechecked, counts                                         # nothing behind argparse re-checks one
    assert all(n == 1 for k, n in counts.items() if k.startswith("option:")), counts
    counts.clear()
    search.search(max_drop=0.5, methods="dp")
    assert counts["param:max_drop"] == 1 and counts["read_manifest"] == 1
    assert not [k for k in counts if k.startswith("legacy") and k.split(":")[1] in PARAMS], counts
