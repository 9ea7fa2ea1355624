"""--overwrite removes only what the tool's own manifest lists inside the output folder (issue 13).

Regression tests of the data-loss reports: a split named with an absolute path or ``..`` in an old
manifest, a file entry pointing outside, a folder holding someone else's files.
"""
from __future__ import annotations

import json
import os

import pytest

from data_cache import CacheExistsError, create_cache, open_cache, save_cache
from data_cache import format as fmt
from data_cache.convert import main as convert_main

from ._helpers import (
    dyce_arrays,
    edit_manifest,
    macs_dict,
    rows_of,
    small_cache,
    write_json,
    write_records,
)


def _tree(root):
    """Every file and link under ``root`` with its bytes (or link target): to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            out[p] = ("link", os.readlink(p)) if os.path.islink(p) else open(p, "rb").read()
    return out


@pytest.fixture
def convert_argv(tmp_path):
    s = write_records(tmp_path / "s.npz", dyce_arrays(3, 2, 30, seed=1))
    h = write_records(tmp_path / "h.npz", dyce_arrays(3, 2, 20, seed=2))
    m = write_json(tmp_path / "m.json", macs_dict(3, 2))
    return ["dyce", "--search", str(s), "--holdout", str(h), "--macs-info", str(m), "--overwrite", "--quiet"]


@pytest.fixture
def victim(tmp_path):
    """A folder of the user's outside the cache, with a file in it."""
    d = tmp_path / "victim"
    d.mkdir()
    (d / "thesis.tex").write_text("three years of work")
    return d


def _old_cache_naming(path, split_name):
    """A cache at ``path`` whose manifest names one more split, ``split_name``, with checksums made to match."""
    save_cache(path, small_cache())

    def add(m):
        m["splits"][split_name] = json.loads(json.dumps(m["splits"]["search"]))
    edit_manifest(path, add)


@pytest.mark.parametrize("name", ["abs", "..", "../victim", "search/../.."])
def test_convert_overwrite_never_deletes_a_split_named_outside(tmp_path, convert_argv, victim, capsys, name):
    out = tmp_path / "cache"
    _old_cache_naming(out, str(victim) if name == "abs" else name)
    before, parent_before = _tree(out), sorted(os.listdir(tmp_path))
    assert convert_main(convert_argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "manifest.json" in err[0] and "splits" in err[0] and "Traceback" not in "".join(err)
    assert (victim / "thesis.tex").read_text() == "three years of work"
    assert _tree(out) == before and sorted(os.listdir(tmp_path)) == parent_before


def test_file_entry_outside_the_folder_is_refused_and_kept(tmp_path, victim):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    rel = os.path.relpath(victim / "thesis.tex", out / "search")
    edit_manifest(out, lambda m: m["splits"]["search"]["files"].update({rel: {"sha256": "sha256:" + "0" * 64}}))
    before = _tree(out)
    with pytest.raises(CacheExistsError, match=r"manifest.json: splits.search.files"):
        save_cache(out, small_cache(seed=2), overwrite=True)
    assert (victim / "thesis.tex").read_text() == "three years of work"
    assert _tree(out) == before


def test_overwrite_of_a_folder_holding_no_cache_is_refused(tmp_path, convert_argv, capsys):
    out = tmp_path / "cache"
    out.mkdir()
    (out / "labels.npy").write_text("the user's own file")
    (out / "search").mkdir()
    (out / "search" / "labels.npy").write_text("another one")
    before = _tree(out)
    assert convert_main(convert_argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files but no cache" in err[0] and str(out) in err[0]
    assert _tree(out) == before
    with pytest.raises(CacheExistsError, match="holds files but no cache"):
        save_cache(out, small_cache(), overwrite=True)
    assert _tree(out) == before


def test_overwrite_keeps_files_the_cache_does_not_list(tmp_path):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    (out / "README.txt").write_text("notes")
    (out / "search" / "notes.txt").write_text("more notes")
    (out / "old_split").mkdir()
    (out / "old_split" / "labels.npy").write_text("not ours")
    replaced = save_cache(out, small_cache(seed=2), overwrite=True)
    assert replaced.fingerprint == small_cache(seed=2).fingerprint
    assert (out / "README.txt").read_text() == "notes"
    assert (out / "search" / "notes.txt").read_text() == "more notes"
    assert (out / "old_split" / "labels.npy").read_text() == "not ours"


def test_overwrite_removes_what_the_old_manifest_lists(tmp_path):
    out = tmp_path / "cache"
    old = small_cache()
    arrays = {s: {f: old._array(s, f) for f in fmt.SPLIT_FILES} for s in ("search", "holdout")}
    arrays["extra"] = arrays["holdout"]
    import dataclasses

    from data_cache import InMemoryCache
    meta = dataclasses.replace(old.meta, splits=dict(old.meta.splits, extra=old.meta.splits["holdout"]))
    save_cache(out, InMemoryCache(meta, arrays))
    save_cache(out, small_cache(seed=2), overwrite=True)
    assert not (out / "extra").exists()  # ours, listed, emptied: removed
    assert sorted(p.name for p in out.iterdir()) == ["holdout", fmt.MANIFEST, "search"]


def test_new_split_would_replace_a_file_nobody_listed(tmp_path):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    old = small_cache()
    arrays = {s: {f: old._array(s, f) for f in fmt.SPLIT_FILES} for s in ("search", "holdout")}
    arrays["calib"] = arrays["holdout"]
    import dataclasses

    from data_cache import InMemoryCache
    meta = dataclasses.replace(old.meta, splits=dict(old.meta.splits, calib=old.meta.splits["holdout"]))
    (out / "calib").mkdir()
    (out / "calib" / fmt.LABELS).write_text("the user's")
    before = _tree(out)
    with pytest.raises(CacheExistsError, match=r"calib/labels.npy.*not part of the cache"):
        save_cache(out, InMemoryCache(meta, arrays), overwrite=True)
    assert _tree(out) == before


def test_a_linked_data_file_is_unlinked_not_followed(tmp_path, victim):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    target = victim / "labels.npy"
    os.replace(out / "search" / fmt.LABELS, target)
    os.symlink(target, out / "search" / fmt.LABELS)
    save_cache(out, small_cache(seed=2), overwrite=True)
    assert target.exists() and (victim / "thesis.tex").exists()
    assert not (out / "search" / fmt.LABELS).is_symlink()
    assert open_cache(out).fingerprint == small_cache(seed=2).fingerprint


def test_overwrite_of_a_half_written_cache_keeps_other_files(tmp_path):
    out = tmp_path / "cache"
    mem = small_cache()
    w = create_cache(out, mem.meta)
    w.write("search", 0, **rows_of(mem, "search", 0, 10))
    (out / "notes.txt").write_text("mine")
    (out / fmt.PARTS_DIR / "keep.txt").write_text("also mine")
    w = create_cache(out, mem.meta, overwrite=True)
    assert not w.done_rows("search").any()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / fmt.PARTS_DIR / "keep.txt").read_text() == "also mine"


def test_an_unreadable_old_manifest_is_refused_untouched(tmp_path):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    (out / fmt.MANIFEST).write_text("{not json")
    before = _tree(out)
    with pytest.raises(CacheExistsError, match="manifest.json"):
        save_cache(out, small_cache(seed=2), overwrite=True)
    assert _tree(out) == before


def test_a_cache_is_not_saved_over_itself(tmp_path):
    out = tmp_path / "cache"
    save_cache(out, small_cache())
    before = _tree(out)
    with pytest.raises(CacheExistsError, match="is the cache being saved"):
        save_cache(out, open_cache(out), overwrite=True)
    assert _tree(out) == before
