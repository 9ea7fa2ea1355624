"""The manifest schema: exact types, names, costs, files and links, checked on read (issue 13).

Each malformed manifest of the issue is refused by ``data_cache.validate`` and by ``search.pareto``
alike, exit status 2, in lines ``file: field: problem``; a stray link next to the cache changes nothing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from data_cache import CacheFormatError, save_cache
from data_cache import format as fmt
from data_cache.schema import MAX_CLASSES, name_problem, split_name_problem
from data_cache.validate import main as validate_main
from search.pareto import main as pareto_main

from ._helpers import edit_manifest, small_cache


@pytest.fixture
def cache_dir(tmp_path):
    save_cache(tmp_path / "c", small_cache())
    return tmp_path / "c"


def _unit(field, value):
    return lambda m: m["units"][0].update({field: value})


def _exit(i, field, value):
    return lambda m: m["exits"][i].update({field: value})


def _every_unit(value):
    def edit(m):
        for u in m["units"]:
            u["macs"] = value
    return edit


MANIFESTS = [
    ("n_classes a string", lambda m: m.update(n_classes="10"), "n_classes: must be an integer (got '10')"),
    ("n_classes a float", lambda m: m.update(n_classes=10.0), "n_classes: must be an integer (got 10.0)"),
    ("n_classes 10^9", lambda m: m.update(n_classes=10 ** 9), f"n_classes: must be in [1, {MAX_CLASSES}]"),
    ("k 2.7", lambda m: m.update(k=2.7), "k: must be an integer (got 2.7)"),
    ("k true", lambda m: m.update(k=True), "k: must be an integer (got True)"),
    ("position 1.9", _exit(1, "position", 1.9), "exits[1].position: must be an integer (got 1.9)"),
    ("position negative", _exit(0, "position", -1), "exits[0].position: must be in [0, inf]"),
    ("final a string", _exit(-1, "final", "yes"), "exits[7].final: must be true or false"),
    ("unit MACs a string", _unit("macs", "1000"), "units[0].macs: must be a finite number >= 0 (got '1000')"),
    ("latency a string", _unit("latency_s", "0.1"), "units[0].latency_s: must be a finite number >= 0 or null"),
    ("every unit costs 0", _every_unit(0), "exits[7].units: the final exit costs 0 MACs (the base cost)"),
    ("final exit needs no unit", _exit(-1, "units", []), "exits[7].units: the final exit costs 0 MACs (the base cost)"),
    ("final exit's units nested", _exit(-1, "units", [["a"]]), "exits[7].units: must be a list of unit names"),
    ("MACs of 1e308", _every_unit(1e308), "units: the MACs of all units sum to inf"),
    ("MACs overflow with the samples", _every_unit(1e306), "overflows when multiplied by 60 samples"),
    ("exit named ../../x", _exit(0, "name", "../../x"), "exits[0].name: '../../x': a plain name, not a path"),
    ("exit named /abs", _exit(0, "name", "/abs/x"), "exits[0].name: '/abs/x': a plain name"),
    ("exit name with a backslash", _exit(0, "name", "a\\b"), "exits[0].name: 'a\\\\b': no backslash"),
    ("exit name with a newline", _exit(0, "name", "a\nb"), "exits[0].name: 'a\\nb': no backslash or control"),
    ("head empty", _exit(0, "head", ""), "exits[0].head: must be a non-empty string"),
    ("unit named ..", _unit("name", ".."), "units[0].name: '..': a plain name"),
    ("unknown kind", _unit("kind", "layer"), "units[0].kind: must be one of ['segment', 'head', 'saver']"),
    ("units twice", lambda m: m["exits"][0]["units"].append(m["exits"][0]["units"][0]),
     "exits[0].units: names a unit twice"),
    ("file entry ../../../../etc/passwd",
     lambda m: m["splits"]["search"]["files"].update({"../../../../etc/passwd": {"sha256": "sha256:" + "0" * 64}}),
     "splits.search.files: '../../../../etc/passwd' is not a file of the format"),
    ("split named ..", lambda m: m["splits"].update({"..": m["splits"]["search"]}), "splits: '..' is not a split name"),
    ("n_samples a float", lambda m: m["splits"]["search"].update(n_samples=60.0),
     "splits.search.n_samples: must be an integer"),
    ("file shape a lie", lambda m: m["splits"]["search"]["files"][fmt.LABELS].update(shape=[61]),
     "splits.search.files.labels.npy.shape: (61,), expected (60,)"),
    ("file dtype a lie", lambda m: m["splits"]["search"]["files"][fmt.LABELS].update(dtype="<i4"),
     "splits.search.files.labels.npy.dtype: '<i4', expected '<i8'"),
    ("checksum not hex", lambda m: m["splits"]["search"]["files"][fmt.LABELS].update(sha256="sha256:xyz"),
     "splits.search.files.labels.npy.sha256: must be 'sha256:' and 64 hex digits"),
    ("provenance a list", lambda m: m.update(provenance=[1]), "provenance: must be an object"),
]


@pytest.mark.parametrize("edit, field", [m[1:] for m in MANIFESTS], ids=[m[0] for m in MANIFESTS])
def test_malformed_manifests_are_refused_by_validate_and_search(cache_dir, capsys, edit, field):
    edit_manifest(cache_dir, edit)
    assert validate_main([str(cache_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith(f"{cache_dir / fmt.MANIFEST}: ") for line in err), err
    assert any(field in line for line in err), err
    assert pareto_main([str(cache_dir), "--methods", "greedy", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert any(field in line for line in captured.err.splitlines())


def test_a_data_file_linked_outside_is_refused(cache_dir, tmp_path):
    outside = tmp_path / "elsewhere.npy"
    os.replace(cache_dir / "search" / fmt.LABELS, outside)
    os.symlink(outside, cache_dir / "search" / fmt.LABELS)
    with pytest.raises(CacheFormatError, match=r"search/labels.npy: a link to .*elsewhere.npy, outside the cache"):
        from data_cache import open_cache
        open_cache(cache_dir)


def test_a_link_inside_the_cache_is_followed(cache_dir):
    from data_cache import open_cache

    os.replace(cache_dir / "search" / fmt.LABELS, cache_dir / "labels_store.npy")
    os.symlink("../labels_store.npy", cache_dir / "search" / fmt.LABELS)
    assert open_cache(cache_dir).fingerprint == small_cache().fingerprint


def test_dangling_links_one_line_or_nothing(cache_dir, capsys):
    os.symlink(cache_dir / "nowhere.npy", cache_dir / "stray.npy")  # not part of the cache: changes nothing
    os.symlink(cache_dir / "nowhere", cache_dir / "search" / "stray")
    assert validate_main([str(cache_dir), "--quiet"]) == 0
    capsys.readouterr()
    (cache_dir / "holdout" / fmt.LABELS).unlink()
    os.symlink(cache_dir / "gone.npy", cache_dir / "holdout" / fmt.LABELS)
    assert validate_main([str(cache_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{cache_dir}/holdout/labels.npy: missing file (a link to {cache_dir}/gone.npy that does not exist)"]


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr': '<i8'"), "not a readable .npy file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\x00" * 8), "extra data"),
    (lambda p: np.save(p, np.asfortranarray(np.zeros((2, 60), np.int64))[0]), None),  # 1-D: C and F agree
    (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
], ids=["bad header", "truncated", "extra bytes", "1-D fortran flag", "a fifo"])
def test_file_headers_and_sizes(cache_dir, make, match):
    from data_cache import validate_cache

    make(cache_dir / "search" / fmt.LABELS)
    problems = validate_cache(cache_dir, skip_integrity_check=True)
    if match is None:
        assert all("labels.npy: sha256" in p or "fingerprint" in p for p in problems)
    else:
        assert len(problems) == 1 and match in problems[0] and "search/labels.npy" in problems[0], problems


def _with_shape(shape: str):
    """Rewrite a .npy header to claim ``shape`` (same header length, data unchanged)."""
    def make(p):
        raw = p.read_bytes()
        end = raw.index(b"\n") + 1
        header = f"{{'descr': '<i8', 'fortran_order': False, 'shape': {shape}, }}"
        p.write_bytes(raw[:10] + (header.ljust(end - 11) + "\n").encode() + raw[end:])
    return make


@pytest.mark.parametrize("shape, match", [
    ("(10000000000000000000000000000,)", "header needs 80000000000000000000000000128 (truncated)"),
    ("(4611686018427387904, 4)", "header needs 147573952589676413056 (truncated)"),
    ("(-1,)", "damaged header (shape (-1,))"),
], ids=["beyond int64", "product beyond int64", "negative"])
def test_absurd_header_shapes_are_one_line(cache_dir, shape, match):
    """Shapes no file can hold: one line naming the file (regression: an OverflowError traceback, a size
    that wrapped around, a negative dimension taken for a size)."""
    from data_cache import validate_cache

    _with_shape(shape)(cache_dir / "search" / fmt.LABELS)
    problems = validate_cache(cache_dir, skip_integrity_check=True)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{cache_dir}/search/labels.npy: not a readable .npy file (") and match in problems[0]


def test_fortran_order_is_refused(cache_dir):
    from data_cache import validate_cache

    ids = np.load(cache_dir / "search" / fmt.TOPK_IDS)
    np.save(cache_dir / "search" / fmt.TOPK_IDS, np.asfortranarray(ids))
    problems = validate_cache(cache_dir)
    assert problems == [f"{cache_dir}/search/topk_ids.npy: not a readable .npy file (stored in Fortran order; the "
                        "format stores C order)"]


@pytest.mark.parametrize("name, ok", [("stages.1.blocks.2/linear", True), ("blocks.0/mlp", True), ("x", True),
                                      ("", False), ("/x", False), ("a//b", False), ("a/./b", False), ("a/..", False),
                                      ("a\\b", False), ("a\tb", False), ("a\x7fb", False), (3, False)])
def test_name_rule(name, ok):
    assert (name_problem(name) is None) == ok


@pytest.mark.parametrize("name, ok", [("search", True), ("hold-out.2", True), ("_x", True), (".hidden", False),
                                      ("..", False), ("a/b", False), ("/abs", False), ("x" * 256, False), ("", False)])
def test_split_name_rule(name, ok):
    assert (split_name_problem(name) is None) == ok
