"""Recompute, don't trust (search/verify.py), independence by content (search/overlap.py, search/calibration.py):
genuine exports verify, every edited number or certificate is refused in one line naming the configuration and
field, and calibration rows repeating fit rows are refused whatever sample_index or provenance say (issue 20)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache.memory import InMemoryCache
from data_cache.synthetic import make_synthetic_cache
from search import ExitConfig, ExitProblem, SearchError
from search.calibration import Roles, calibration_roles, check_calibration_split
from search.exact import SplitEvaluator
from search.export import build_export
from search.overlap import row_hashes, split_overlap
from search.pareto_testing import certified_within_budget, certified_within_drop, certify_drop
from search.subsample import FitSample, fit_problem
from search.verify import verify_export


def _export(fit: ExitProblem, answer, fit_record: dict | None = None) -> dict:
    """An export of a dp front plus the certified answer, numbers on the whole splits (as search.pareto writes)."""
    search = SplitEvaluator.like(fit, "search")
    holdout = SplitEvaluator.like(fit, "holdout")
    lossy = ExitConfig((0,), (0.0,), fit.score)                     # every sample leaves at the first exit
    entries = [("dp", c) for c in answer.sequence[:4]] + [("lossy", lossy),
                                                          ("query", answer.config, answer.certificate.to_json())]
    return build_export(entries, search=search, holdout=holdout, pareto=False, fit=fit_record)


@pytest.fixture(scope="module")
def cut():
    cache = make_synthetic_cache(12_000, 3, n_head_types=2, seed=9)
    fit = ExitProblem(cache)
    return cache, _export(fit, certified_within_drop(fit, 2.0, seed=3))


@pytest.fixture(scope="module")
def cal_cache():
    return make_synthetic_cache(16_000, 3, n_head_types=2, seed=9, calibration_fraction=0.25)


def _refused(doc: dict, cache, match: str) -> str:
    with pytest.raises(SearchError) as info:
        verify_export(doc, cache, source="front.json")
    line = str(info.value)
    assert "\n" not in line and line.startswith("front.json: ") and match in line, line
    return line


def test_genuine_exports_verify_on_each_kind_of_calibration(cut, cal_cache):
    cache, doc = cut
    assert verify_export(doc, cache).n_certificates == 1
    fit = ExitProblem(cal_cache)
    doc = _export(fit, certified_within_budget(fit, 0.8, seed=1))
    v = verify_export(doc, cal_cache)
    assert (v.n_configs, v.n_certificates, v.warnings) == (len(doc["configs"]), 1, ())
    big = make_synthetic_cache(12_000, 3, n_head_types=2, seed=5)
    sample = FitSample(3000, big.n_samples("search"), 2)
    fit = fit_problem(big, "search", sample)
    answer = certified_within_drop(fit, 3.0, seed=2)
    assert answer.certificate is not None
    assert verify_export(_export(fit, answer, {"split": "search", **sample.to_json()}), big).n_certificates == 1


def _entry(doc: dict, cid: str) -> tuple[int, dict]:
    return next((i, c) for i, c in enumerate(doc["configs"]) if c["id"] == cid)


def _edit(cid: str, key: str, value, *, split: str | None = None):
    def edit(doc):
        entry = _entry(doc, cid)[1]
        target = entry[split] if split else entry["certificate"]
        target[key] = value
    return edit


EDITS = [
    ("holdout accuracy", _edit("dp-0000", "accuracy", 0.99, split="holdout"),
     "(id 'dp-0000'): holdout.accuracy: 0.99 does not reproduce: the cache gives 0.8"),
    ("search relative cost", _edit("dp-0001", "relative_cost", 0.1, split="search"),
     "(id 'dp-0001'): search.relative_cost: 0.1 does not reproduce"),
    ("exit fractions", lambda d: _entry(d, "dp-0000")[1]["search"]["exit_fractions"].reverse(),
     "(id 'dp-0000'): search.exit_fractions"),
    ("base accuracy", lambda d: d["base"]["holdout"].update(accuracy=0.5), "base.holdout.accuracy: 0.5 does not"),
    ("certified drop", _edit("query-0000", "certified_drop", 0.001),
     "(id 'query-0000'): certificate.certified_drop: 0.001 does not reproduce: the trinomial test on the 3000 "
     "recorded calibration rows (search split, seed 3) gives p = "),
    ("observed drop", _edit("query-0000", "observed_drop", -0.01),
     "(id 'query-0000'): certificate.observed_drop: -0.01 does not reproduce"),
    ("p-value", _edit("query-0000", "p_value", 1e-9), "certificate.p_value: 1e-09 does not reproduce"),
    ("calibration size", _edit("query-0000", "n_cal", 50), "certificate.n_cal: 50 does not reproduce"),
    ("seed", _edit("query-0000", "seed", 5), "(id 'query-0000'): certificate."),
    ("fraction", _edit("query-0000", "fraction", 0.3), "certificate.n_cal: 3000 does not reproduce"),
    ("delta", _edit("query-0000", "delta", 0.001), "certificate.certified_drop"),
    ("a string", _edit("query-0000", "certified_drop", "0.001"),
     "certificate.certified_drop: must be a number in [0, 1] (got '0.001')"),
    ("split sizes", lambda d: d["cache"]["splits"].update(search=5), "cache.splits.search: 5 does not reproduce"),
]


@pytest.mark.parametrize("edit, match", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_an_edited_number_or_certificate_is_refused_naming_config_and_field(cut, edit, match):
    cache, good = cut
    doc = copy.deepcopy(good)
    edit(doc)
    _refused(doc, cache, match)


def test_a_certificate_moved_onto_a_lossy_configuration_is_refused(cut):
    cache, good = cut
    doc = copy.deepcopy(good)
    i, lossy = _entry(doc, "lossy-0000")
    assert doc["base"]["search"]["accuracy"] - lossy["search"]["accuracy"] > 0.2
    lossy["certificate"] = _entry(doc, "query-0000")[1].pop("certificate")
    _refused(doc, cache, f"configs[{i}] (id 'lossy-0000'): certificate.certified_drop: 0.02 does not reproduce")


def _with_calibration(cache, source: str, rows: np.ndarray, provenance: dict | None = None) -> InMemoryCache:
    """``cache`` whose calibration split holds ``rows`` of ``source`` in that order, sample_index renumbered."""
    arrays = {s: {f: np.array(cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    arrays["calibration"] = {f: (a[..., rows] if f != fmt.SAMPLE_INDEX else 10 ** 6 + np.arange(rows.size))
                             for f, a in arrays[source].items()}
    meta = dataclasses.replace(cache.meta, splits={**cache.meta.splits, "calibration": int(rows.size)},
                               provenance={**cache.meta.provenance, **(provenance or {})})
    return InMemoryCache(meta, arrays)


OTHER_PART = {"dataset": {"parameters": {"split_parts": {"search": "train", "calibration": "extra",
                                                         "holdout": "test"}}}}


def test_calibration_holding_search_rows_shuffled_and_renumbered_is_refused(cal_cache):
    rows = np.random.default_rng(0).permutation(cal_cache.n_samples("search"))[:3000]
    cache = _with_calibration(cal_cache, "search", rows, OTHER_PART)
    with pytest.raises(SearchError, match="3000 of the 3000 calibration rows repeat rows of search by content"):
        check_calibration_split(cache)
    # a certificate computed on them anyway (the roles built by hand) is refused on verification
    fit = ExitProblem(cache)
    cal = fit.on_split("calibration")
    roles = Roles(fit, cal.take(np.random.default_rng(0).permutation(cal.n_samples)), "calibration", None, 0, True)
    answer = certify_drop(roles, 0.03)
    assert answer.certificate is not None
    doc = _export(fit, answer)
    _refused(doc, cache, "certificate.split: 3000 of the 3000 calibration rows repeat rows of search")


def test_calibration_holding_holdout_rows_is_flagged(cal_cache):
    cache = _with_calibration(cal_cache, "holdout", np.arange(2000)[::-1], OTHER_PART)
    warnings = check_calibration_split(cache)
    assert warnings == ["2000 of the 2000 calibration rows repeat rows of holdout by content (the same label and the "
                        "same top-k ids and probabilities at every exit): holdout figures are not an independent check "
                        "of what was certified on them"]
    fit = ExitProblem(cache)
    doc = _export(fit, certified_within_drop(fit, 4.0, seed=0))
    assert verify_export(doc, cache).warnings == tuple(warnings)


def test_a_few_repeated_rows_are_a_warning_a_material_share_refuses(cal_cache):
    n_cal = cal_cache.n_samples("calibration")
    few = np.concatenate([np.arange(3), np.arange(10, n_cal + 7)])   # 3 search rows among the calibration split's
    arrays = {s: {f: np.array(cal_cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cal_cache.splits()}
    for f in (fmt.LABELS, fmt.TOPK_IDS, fmt.TOPK_PROBS):
        arrays["calibration"][f][..., :3] = arrays["search"][f][..., few[:3]]
    cache = InMemoryCache(cal_cache.meta, arrays)
    (line,) = check_calibration_split(cache)
    assert line.startswith("3 of the 4000 calibration rows repeat rows of search") and "kept" in line
    for f in (fmt.LABELS, fmt.TOPK_IDS, fmt.TOPK_PROBS):
        arrays["calibration"][f][..., :40] = arrays["search"][f][..., :40]
    with pytest.raises(SearchError, match="40 of the 4000 calibration rows repeat rows of search"):
        check_calibration_split(InMemoryCache(cal_cache.meta, arrays))


def test_a_search_split_of_duplicated_rows_cannot_be_cut_for_calibration():
    cache = make_synthetic_cache(4000, 3, n_head_types=2, seed=1)
    arrays = {s: {f: np.array(cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    n = cache.n_samples("search")
    for f in (fmt.LABELS, fmt.TOPK_IDS, fmt.TOPK_PROBS):
        arrays["search"][f][..., n // 2:] = arrays["search"][f][..., :n - n // 2]
    with pytest.raises(SearchError, match="repeat rows of search .elsewhere in the split.* cut from it"):
        check_calibration_split(InMemoryCache(cache.meta, arrays))
    assert check_calibration_split(cache) == []


def test_row_hashes_follow_every_field_of_a_row_and_not_the_chunking():
    cache = make_synthetic_cache(3000, 3, n_head_types=2, seed=4)
    h = row_hashes(cache, "search")
    assert h.dtype == np.uint64 and np.unique(h).size == h.size
    from search.overlap import _known
    _known.pop(cache)
    assert np.array_equal(row_hashes(cache, "search", chunk_size=7), h)
    arrays = {s: {f: np.array(cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    arrays["search"][fmt.LABELS][0] += 1
    arrays["search"][fmt.TOPK_IDS][2, 1, 1] += 1
    arrays["search"][fmt.TOPK_PROBS][4, 0, 2] = np.nextafter(arrays["search"][fmt.TOPK_PROBS][4, 0, 2], np.float32(2))
    arrays["search"][fmt.SAMPLE_INDEX][3] += 10 ** 6        # not content: the same row
    edited = row_hashes(InMemoryCache(cache.meta, arrays), "search")
    assert list(np.flatnonzero(edited != h)) == [0, 1, 2]
    assert split_overlap(cache, "holdout", "search").repeated == 0


def test_search_pareto_refuses_to_certify_on_calibration_rows_that_repeat_search(cal_cache, tmp_path, capsys):
    from data_cache import save_cache
    from search.pareto import main

    rows = np.random.default_rng(1).permutation(cal_cache.n_samples("search"))[:3000]
    save_cache(tmp_path / "cache", _with_calibration(cal_cache, "search", rows, OTHER_PART))
    assert main([str(tmp_path / "cache"), "--methods", "dp", "--no-progress", "--max-drop", "3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("error: 3000 of the 3000 calibration rows repeat rows of search by content")
    save_cache(tmp_path / "flagged", _with_calibration(cal_cache, "holdout", np.arange(2000), OTHER_PART))
    assert main([str(tmp_path / "flagged"), "--methods", "dp", "--no-progress", "--max-drop", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: 2000 of the 2000 calibration rows repeat rows of holdout" in err


def test_a_holdout_repeating_the_calibration_rows_cut_from_search_is_flagged():
    cache = make_synthetic_cache(8000, 3, n_head_types=2, seed=6)
    arrays = {s: {f: np.array(cache._array(s, f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    for f in (fmt.LABELS, fmt.TOPK_IDS, fmt.TOPK_PROBS):
        arrays["holdout"][f] = arrays["search"][f][..., ::-1]
    cache = InMemoryCache(cache.meta, arrays)
    fit = ExitProblem(cache)
    answer = certified_within_drop(fit, 4.0, seed=0)
    (line,) = verify_export(_export(fit, answer), cache).warnings
    assert line.startswith(f"{answer.certificate.n_cal} of the {answer.certificate.n_cal} calibration (cut from "
                           "search) rows repeat rows of holdout by content")


def test_a_fallback_certificate_verifies_at_its_level_and_an_edited_level_is_refused():
    """A fallback walk records the level its answer passed at; verify re-runs the test at that level, an old
    certificate (no level) at delta."""
    cache = make_synthetic_cache(12_000, 3, n_head_types=2, seed=9)
    fit = ExitProblem(cache)
    roles = calibration_roles(fit, fraction=0.5, seed=3)
    answer = certify_drop(roles, 0.02, procedure="fallback")
    cert = answer.certificate.to_json()
    assert 0 < cert["level"] <= cert["delta"]
    doc = _export(fit, answer)
    assert verify_export(doc, cache).n_certificates == 1
    i, entry = next((i, e) for i, e in enumerate(doc["configs"]) if "certificate" in e)
    edited = copy.deepcopy(doc)
    edited["configs"][i]["certificate"]["level"] = 1e-9
    _refused(edited, cache, f"configs[{i}] (id {entry['id']!r}): certificate.certified_drop: 0.02 does not "
                            "reproduce")
