"""data_cache.importers.dyce: DyCE / TinySaver records -> cache, costs equal to their accounting."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from data_cache import CacheError, CacheExistsError, CacheInputError, open_cache, validate_cache
from data_cache.importers import get_importer, list_importers, register_importer
from data_cache.importers.dyce import dyce_meta, import_dyce, read_macs_info

from ._helpers import dyce_arrays, macs_dict, write_json, write_records

P, T = 4, 2


@pytest.fixture
def files(tmp_path):
    """Paths of a consistent DyCE set: P=4 positions, T=2 head types, k=3, 10 classes."""
    s = write_records(tmp_path / "search.npz", dyce_arrays(P, T, 40, seed=1))
    h = write_records(tmp_path / "holdout.npz", dyce_arrays(P, T, 30, seed=2))
    m = write_json(tmp_path / "macs.json", macs_dict(P, T))
    return {"search": s, "holdout": h, "macs_info": m}


def _import(tmp_path, files, **kw):
    return import_dyce(tmp_path / "out", **dict(files, **kw))


def _cache_cost(cache, enabled: list[int], leave: int) -> float:
    """Cost under exit-semantics: every unit the enabled exits up to ``leave`` need, once."""
    units = {u.name: u.macs for u in cache.units}
    needed = set()
    for e in sorted(set(enabled) | {leave}):
        if e <= leave:
            needed.update(cache.exits[e].units)
    return sum(units[u] for u in needed)


def _dyce_cost(macs: dict, enabled: list[tuple[int, int]], leave_pos: int) -> float:
    """Their accounting: backbone.macs[p] (+ shared[p]) plus every enabled head at positions <= p."""
    cum = np.array(macs["backbone"]["macs"], float)
    if "shared" in macs:
        cum += np.array(macs["shared"]["macs"], float)
    return cum[leave_pos] + sum(macs["head"][t]["macs"][p] for p, t in enabled if p <= leave_pos)


def test_registry():
    assert "dyce" in list_importers() and list_importers("dy*") == ["dyce"] and list_importers("x*") == []
    assert get_importer("dyce") is import_dyce
    with pytest.raises(CacheInputError, match=r"unknown importer 'tfrecords'; known: \['dyce'\]"):
        get_importer("tfrecords")
    with pytest.raises(ValueError, match="already registered"):
        register_importer("dyce")(lambda out: None)


def test_rows_become_exits_in_order(tmp_path, files):
    cache = _import(tmp_path, files)
    assert validate_cache(tmp_path / "out") == []
    names = [e.name for e in cache.exits]
    assert names == ["pos0/mlp0x100", "pos0/mlp1x200", "pos1/mlp0x100", "pos1/mlp1x200",
                     "pos2/mlp0x100", "pos2/mlp1x200", "pos3/final"]
    assert [e.position for e in cache.exits] == [0, 0, 1, 1, 2, 2, 3]
    assert [e.head for e in cache.exits] == ["mlp0x100", "mlp1x200"] * 3 + ["final"]
    assert cache.exits[-1].final and cache.k == 3 and cache.n_classes == 10
    for split in ("search", "holdout"):
        with np.load(files[split]) as z:
            np.testing.assert_array_equal(cache.labels(split), z["label"][:, 0])
            np.testing.assert_array_equal(cache.topk_ids(split), np.transpose(z["preds"], (0, 2, 1)))
            np.testing.assert_array_equal(cache.topk_probs(split), np.transpose(z["confs"], (0, 2, 1)))
        np.testing.assert_array_equal(cache.sample_index(split), np.arange(cache.n_samples(split)))
    prov = cache.manifest["provenance"]
    assert prov["model"]["name"] == "tinynet" and prov["layout"] == "dyce"
    assert prov["source"]["search"]["sample_index"] == "row order 0..N-1"
    assert prov["source"]["macs_info"]["sha256"].startswith("sha256:")


@pytest.mark.parametrize("shared", [False, True])
def test_costs_equal_dyce_accounting(tmp_path, files, shared):
    macs = macs_dict(P, T, shared=shared)
    write_json(files["macs_info"], macs)
    cache = _import(tmp_path, files)
    kinds = {u.name: u.kind for u in cache.units}
    assert sorted(set(kinds.values())) == ["head", "segment"]
    for choice in itertools.product(range(T + 1), repeat=P - 1):  # per position: no exit or head type t
        enabled = [(p, t - 1) for p, t in enumerate(choice) if t]
        rows = [p * T + t for p, t in enabled]
        for (p, _), row in zip(enabled, rows, strict=True):
            assert _cache_cost(cache, rows, row) == pytest.approx(_dyce_cost(macs, enabled, p))
        final = len(cache.exits) - 1
        assert _cache_cost(cache, rows, final) == pytest.approx(_dyce_cost(macs, enabled, P - 1))
    assert _cache_cost(cache, [], len(cache.exits) - 1) == macs["backbone"]["macs"][-1] + (3 * P if shared else 0)


def test_tinysaver_pair(tmp_path):
    s = write_records(tmp_path / "s.npz", dyce_arrays(2, 1, 25, seed=3))
    h = write_records(tmp_path / "h.npz", dyce_arrays(2, 1, 20, seed=4))
    macs = {"head": [{"name": "resnet18", "macs": [1800, 0]}],
            "backbone": {"name": "resnet152", "macs": [0, 11500], "ori_macs": 11500}}
    m = write_json(tmp_path / "m.json", macs)
    cache = import_dyce(tmp_path / "out", search=s, holdout=h, macs_info=m)
    assert [(u.name, u.kind, u.macs) for u in cache.units] == [("saver", "saver", 1800.0), ("base", "segment", 11500.0)]
    saver, final = cache.exits
    assert (saver.name, saver.position, saver.head, saver.units) == ("pos0/resnet18", 0, "resnet18", ("saver",))
    assert (final.name, final.units, final.final) == ("pos1/final", ("base",), True)
    assert cache.manifest["provenance"]["layout"] == "tinysaver"
    assert _cache_cost(cache, [0], 0) == _dyce_cost(macs, [(0, 0)], 0) == 1800
    assert _cache_cost(cache, [0], 1) == _dyce_cost(macs, [(0, 0)], 1) == 13300
    assert _cache_cost(cache, [], 1) == _dyce_cost(macs, [], 1) == 11500


def test_layout_choice(tmp_path):
    pair = read_macs_info(write_json(tmp_path / "m.json", {"head": [{"name": "s", "macs": [5, 0]}],
                                                           "backbone": {"name": "b", "macs": [0, 50]}}))
    meta = dyce_meta(pair, n_classes=10, k=3, splits={"search": 1, "holdout": 1}, layout="dyce")
    assert [u.name for u in meta.units] == ["segment0", "segment1", "pos0/s"]
    deep = read_macs_info(write_json(tmp_path / "d.json", macs_dict(P, T)))
    with pytest.raises(CacheInputError, match="a TinySaver pair needs P=2 positions, T=1 head"):
        dyce_meta(deep, n_classes=10, k=3, splits={"search": 1, "holdout": 1}, layout="tinysaver")
    with pytest.raises(CacheInputError, match="layout: must be one of"):
        dyce_meta(deep, n_classes=10, k=3, splits={"search": 1, "holdout": 1}, layout="grid")


def test_meta_info_needs_no_pickle(tmp_path, files, monkeypatch):
    arrays = dyce_arrays(P, T, 40, seed=1)
    arrays["meta_info"] = np.array({"model": "x"}, dtype=object)
    write_records(files["search"], arrays)
    real_load = np.load

    def no_pickle(*args, **kwargs):
        assert not kwargs.get("allow_pickle"), "the importer must never unpickle"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", no_pickle)
    cache = _import(tmp_path, files)
    assert cache.manifest["provenance"]["source"]["search"]["meta_info"] == "present, not read (pickled)"
    assert cache.manifest["provenance"]["source"]["holdout"]["meta_info"] == "absent"


def test_sample_index_from_records(tmp_path, files):
    arrays = dyce_arrays(P, T, 40, seed=1)
    arrays["sample_index"] = np.arange(1000, 1040)[::-1].copy()
    write_records(files["search"], arrays)
    cache = _import(tmp_path, files)
    np.testing.assert_array_equal(cache.sample_index("search"), np.arange(1000, 1040)[::-1])
    assert cache.manifest["provenance"]["source"]["search"]["sample_index"] == "from the record file"


def test_n_classes_given_or_inferred(tmp_path, files):
    assert _import(tmp_path, files, n_classes=1000).n_classes == 1000
    assert _import(tmp_path, files, overwrite=True).manifest["provenance"]["n_classes"].startswith("inferred")


def test_existing_cache_is_kept_unless_overwrite(tmp_path, files):
    first = _import(tmp_path, files)
    with pytest.raises(CacheExistsError):
        _import(tmp_path, files)
    assert open_cache(tmp_path / "out").fingerprint == first.fingerprint
    assert _import(tmp_path, files, overwrite=True).fingerprint == first.fingerprint


def _records(**changes):
    def edit(files):
        arrays = dyce_arrays(P, T, 40, seed=1)
        for key, fn in changes.items():
            arrays[key] = fn(arrays[key]) if callable(fn) else fn
        write_records(files["search"], {k: v for k, v in arrays.items() if v is not None})
    return edit


def _macs(fn):
    def edit(files):
        d = macs_dict(P, T)
        fn(d)
        write_json(files["macs_info"], d)
    return edit


def _set(a, index, value):
    a = a.copy()
    a[index] = value
    return a


# (name, edit of the files, substrings of the one problem line; "{search}" etc. stand for the paths)
BAD = [
    ("R: rows", _records(preds=lambda a: a[:-2], confs=lambda a: a[:-2]),
     ["{search}: R: preds has R=5 rows", "P=4 positions and T=2 head types, so (P-1)*T+1 = 7 rows",
      "the records fit P=3 positions"]),
    ("T: head types", _macs(lambda d: d["head"].extend({"name": f"conv{i}", "macs": [1, 1, 1, 0]} for i in (1, 2))),
     ["{search}: R: preds has R=7 rows", "T=4 head types", "R-1 is not a multiple of T=4"]),
    ("N: label", _records(label=lambda a: a[:-1]), ["{search}: N: label has N=39 samples, preds has N=40"]),
    ("N: confs", _records(confs=lambda a: a[:, :-1]), ["{search}: R/N: preds has (R, N) = (7, 40), confs has (7, 39)"]),
    ("k: preds vs confs", _records(confs=lambda a: a[:, :, :2]), ["{search}: k: preds has k=3, confs has k=2"]),
    ("k: across splits", _records(preds=lambda a: a[:, :, :2], confs=lambda a: a[:, :, :2]),
     ["{holdout}: k: preds has k=3", "{search} has k=2"]),
    ("P: head macs", _macs(lambda d: d["head"][1]["macs"].pop()),
     ["{macs_info}: P: head[1] (mlp1x200).macs has 3 entries, backbone.macs has 4"]),
    ("P: shared macs", _macs(lambda d: d.update(shared={"macs": [1, 2]})),
     ["{macs_info}: P: shared.macs has 2 entries, backbone.macs has 4"]),
    ("NaN", _records(confs=lambda a: _set(a, (3, 5, 0), np.nan)),
     ["{search}: confs: NaN or inf values at row 3 (pos1/mlp1x200)"]),
    ("unsorted", _records(confs=lambda a: _set(a, (6, 2), a[6, 2, ::-1])),
     ["{search}: confs: not sorted descending along k", "row 6 (pos3/final)"]),
    ("prob above 1", _records(confs=lambda a: _set(a, (0, 0, 0), 1.7)),
     ["{search}: confs: outside [0, 1]", "row 0 (pos0/mlp0x100)"]),
    ("negative class id", _records(preds=lambda a: _set(a, (1, 0, 0), -1)),
     ["{search}: preds: class ids outside [0, 10)", "row 1"]),
    ("negative label", _records(label=lambda a: _set(a, (0, 0), -1)), ["{search}: label: outside [0, 10)"]),
    ("label shape", _records(label=lambda a: np.hstack([a, a])), ["{search}: label: shape (40, 2), expected (N, 1)"]),
    ("confs dtype", _records(confs=lambda a: (a * 100).astype(np.int32)),
     ["{search}: confs: dtype int32, expected float32"]),
    ("preds as objects", _records(preds=lambda a: a.astype(object)),
     ["{search}: preds: stored as Python objects; expected a numeric array"]),
    ("preds ndim", _records(preds=lambda a: a[0]), ["{search}: preds: shape (40, 3), expected (R, N, k)"]),
    ("missing key", _records(preds=None), ["{search}: preds: missing (the file holds ['confs', 'label'])"]),
    ("duplicate sample_index", _records(sample_index=np.zeros(40, int)),
     ["{search}: sample_index: values must be unique"]),
    ("missing file", lambda f: f["holdout"].unlink(), ["{holdout}: no such file"]),
    ("not an npz", lambda f: f["holdout"].write_text("hello"), ["{holdout}: not a NumPy .npz file"]),
    ("bad JSON", lambda f: f["macs_info"].write_text("{'head': }"), ["{macs_info}: not valid JSON"]),
    ("missing macs file", lambda f: f["macs_info"].unlink(), ["{macs_info}: no such file"]),
    ("duplicate head names", _macs(lambda d: d["head"][1].update(name="mlp0x100")),
     ["{macs_info}: head: names must be unique"]),
    ("not cumulative", _macs(lambda d: d["backbone"].update(macs=[100, 300, 200, 400])),
     ["{macs_info}: backbone.macs: must be cumulative", "position 2 has 200 < 300 at position 1"]),
    ("no backbone", _macs(lambda d: d.pop("backbone")), ["{macs_info}: backbone: missing"]),
    ("negative head macs", _macs(lambda d: d["head"][0].update(macs=[1, -2, 3, 0])),
     ["{macs_info}: head[0] (mlp0x100).macs: every entry must be a finite number >= 0"]),
    ("no heads", _macs(lambda d: d.update(head=[])), ["{macs_info}: head: must be a non-empty list"]),
]


@pytest.mark.parametrize("edit, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_inconsistencies_are_refused_naming_the_culprit(tmp_path, files, edit, expected):
    edit(files)
    with pytest.raises(CacheInputError) as info:
        _import(tmp_path, files)
    both_files = any("T=4" in part for part in expected)  # then holdout.npz disagrees as well
    assert len(info.value.problems) == 1 + both_files, info.value.problems
    line = info.value.problems[0]
    for part in expected:
        assert part.format(**{k: str(v) for k, v in files.items()}) in line, line
    assert not (tmp_path / "out").exists()


def test_every_problem_is_reported(tmp_path, files):
    files["search"].unlink()
    files["holdout"].write_text("x")
    with pytest.raises(CacheError) as info:
        _import(tmp_path, files)
    assert len(info.value.problems) == 2


def test_n_classes_smaller_than_k(tmp_path, files):
    with pytest.raises(CacheInputError, match="n_classes: 2 is smaller than k=3"):
        _import(tmp_path, files, n_classes=2)


def test_label_above_given_n_classes(tmp_path, files):
    with np.load(files["search"]) as z:
        top = int(max(z["label"].max(), z["preds"].max()))
    with pytest.raises(CacheInputError, match=r"outside \[0, 5\)"):
        _import(tmp_path, files, n_classes=min(top, 5))


def test_manifest_is_json_with_plain_numbers(tmp_path, files):
    _import(tmp_path, files)
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert all(isinstance(u["macs"], float) for u in m["units"])


@pytest.mark.parametrize("chunk", [1, 100, 1 << 22])  # one row at a time, a few rows, everything
def test_value_problems_name_the_rows_whatever_the_chunking(tmp_path, files, monkeypatch, chunk):
    import data_cache.importers.dyce as impl

    monkeypatch.setattr(impl, "_CHUNK_ELEMENTS", chunk)
    _records(confs=lambda a: _set(_set(a, (1, 0, 0), np.inf), (5, 3, 1), np.nan))(files)
    with pytest.raises(CacheInputError) as info:
        _import(tmp_path, files)
    assert info.value.problems == [f"{files['search']}: confs: NaN or inf values at rows 1 (pos0/mlp1x200), "
                                   "5 (pos2/mlp1x200)"]
