"""data_cache.validate: one line per problem, naming the file and the field; the command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from data_cache import format as fmt
from data_cache import save_cache, validate_cache
from data_cache.validate import main

from ._helpers import edit_manifest, rewrite, small_cache


@pytest.fixture
def cache_dir(tmp_path):
    save_cache(tmp_path / "c", small_cache())
    return tmp_path / "c"


def _load(path, split, fname):
    return np.array(np.load(path / split / fname))


def _set(split, fname, fn, *, rehash=True):
    def corrupt(path):
        a = _load(path, split, fname)
        rewrite(path, split, fname, fn(a), rehash=rehash)
    return corrupt


def _nan(a):
    a[2, 0, 5] = np.nan
    return a


def _inf(a):
    a[2, 0, 5] = np.inf
    return a


def _above_one(a):
    a[0, :, 7] = [1.5, 0, 0, 0, 0]
    return a


def _negative(a):
    a[0, 4, 7] = -0.1
    return a


def _unsorted(a):
    a[3, :, 9] = a[3, ::-1, 9]
    return a


def _label(a):
    a[4] = 10
    return a


def _ids(a):
    a[5, 1, 0] = -3
    return a


def _dup_index(a):
    a[1] = a[0]
    return a


def _unlink(split, fname):
    return lambda path: (path / split / fname).unlink()


def _not_npy(path):
    (path / "search" / fmt.LABELS).write_bytes(b"not an array")


# (name, corruption, substrings every reported line must contain -- exactly one line expected)
CASES = [
    ("wrong shape", _set("search", fmt.LABELS, lambda a: a[:-1]),
     ["search/labels.npy", "shape: (59,), expected (60,)"]),
    ("wrong dtype", _set("holdout", fmt.TOPK_IDS, lambda a: a.astype(np.int64)),
     ["holdout/topk_ids.npy", "dtype: int64, expected int32"]),
    ("NaN", _set("search", fmt.TOPK_PROBS, _nan), ["search/topk_probs.npy", "probabilities: NaN or inf", "at exit"]),
    ("inf", _set("search", fmt.TOPK_PROBS, _inf), ["search/topk_probs.npy", "probabilities: NaN or inf"]),
    ("probability above 1", _set("search", fmt.TOPK_PROBS, _above_one),
     ["search/topk_probs.npy", "probabilities: outside [0, 1]"]),
    ("negative probability", _set("holdout", fmt.TOPK_PROBS, _negative),
     ["holdout/topk_probs.npy", "probabilities: outside [0, 1]"]),
    ("unsorted top-k", _set("search", fmt.TOPK_PROBS, _unsorted),
     ["search/topk_probs.npy", "order: top-k not sorted descending", "re-import"]),
    ("label out of range", _set("holdout", fmt.LABELS, _label), ["holdout/labels.npy", "labels: outside [0, 10)"]),
    ("class id out of range", _set("search", fmt.TOPK_IDS, _ids),
     ["search/topk_ids.npy", "class ids: outside [0, 10)"]),
    ("duplicate sample index", _set("search", fmt.SAMPLE_INDEX, _dup_index),
     ["search/sample_index.npy", "sample_index: values must be unique"]),
    ("missing file", _unlink("holdout", fmt.TOPK_PROBS), ["holdout/topk_probs.npy", "missing file"]),
    ("not a .npy file", _not_npy, ["search/labels.npy", "not a readable .npy file"]),
    ("checksum mismatch", _set("search", fmt.TOPK_PROBS, lambda a: a * 0.5, rehash=False),
     ["search/topk_probs.npy", "sha256: checksum mismatch"]),
    ("unknown format version", lambda p: edit_manifest(p, lambda m: m.update(format="exitcache/2")),
     ["manifest.json", "format: unknown format version 'exitcache/2'"]),
    ("fingerprint", lambda p: edit_manifest(p, lambda m: m["units"][0].update(macs=1.0), refingerprint=False),
     ["manifest.json", "fingerprint: does not match"]),
    ("missing checksum", lambda p: edit_manifest(p, lambda m: m["splits"]["search"]["files"][fmt.LABELS].pop("sha256")),
     ["manifest.json", "splits.search.files: no checksum for labels.npy"]),
    ("required split", lambda p: edit_manifest(p, lambda m: m["splits"].pop("holdout")),
     ["manifest.json", "splits: required split 'holdout' is missing"]),
    ("no final exit", lambda p: edit_manifest(p, lambda m: m["exits"][-1].update(final=False)),
     ["manifest.json", "exits: exactly one exit, the last, must be marked final"]),
    ("unknown unit", lambda p: edit_manifest(p, lambda m: m["exits"][0]["units"].append("ghost")),
     ["manifest.json", "needs unknown units ['ghost']"]),
    ("negative macs", lambda p: edit_manifest(p, lambda m: m["units"][0].update(macs=-1)),
     ["manifest.json", "units[0].macs: must be a finite number >= 0 (got -1)"]),
    ("malformed manifest", lambda p: edit_manifest(p, lambda m: m.pop("units")),
     ["manifest.json", "units: must be a non-empty list of unit objects (missing)"]),
]


def test_valid_cache_has_no_problems(cache_dir):
    assert validate_cache(cache_dir) == []


@pytest.mark.parametrize("corrupt, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_one_line_naming_file_and_field(cache_dir, corrupt, expected):
    corrupt(cache_dir)
    problems = validate_cache(cache_dir)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0]
    assert "\n" not in problems[0]


def test_several_problems_give_several_lines(cache_dir):
    for name in ("NaN", "label out of range", "missing file", "checksum mismatch"):  # 2 lines on one file
        dict((c[0], c[1]) for c in CASES)[name](cache_dir)
    problems = validate_cache(cache_dir)
    assert len(problems) == 4, problems
    assert len(set(problems)) == 4


def test_integrity_and_checksum_switches(cache_dir):
    _set("search", fmt.TOPK_PROBS, _nan, rehash=False)(cache_dir)
    assert len(validate_cache(cache_dir)) == 2
    assert validate_cache(cache_dir, skip_integrity_check=True) == []
    assert validate_cache(cache_dir, checksums=False) == [
        f"{cache_dir}/search/topk_probs.npy: probabilities: NaN or inf values at exit {small_cache().exits[2].name}"]


def test_one_thread_and_many_threads_agree(cache_dir):
    for name in ("NaN", "label out of range", "class id out of range", "duplicate sample index"):
        dict((c[0], c[1]) for c in CASES)[name](cache_dir)
    one = validate_cache(cache_dir, workers=1)
    assert len(one) == 4 and validate_cache(cache_dir, workers=4) == one


def test_not_a_folder_and_half_written(tmp_path):
    assert validate_cache(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: not a folder"]
    assert "missing file (is this a cache folder?)" in validate_cache(tmp_path)[0]
    (tmp_path / fmt.PARTS_DIR).mkdir()
    assert "half-written" in validate_cache(tmp_path)[0]


def test_an_unreadable_manifest_is_not_called_bad_json(tmp_path):
    """A manifest.json that cannot be read (here a folder) says so, alike in validate_cache and open_cache
    (regression: "not valid JSON ([Errno 21] Is a directory ...)")."""
    from data_cache import CacheFormatError, open_cache

    (tmp_path / fmt.MANIFEST).mkdir()
    line = f"{tmp_path / fmt.MANIFEST}: cannot read (Is a directory)"
    assert validate_cache(tmp_path) == [line]
    with pytest.raises(CacheFormatError) as exc:
        open_cache(tmp_path)
    assert exc.value.problems == [line]


def test_cli_valid(cache_dir, capsys):
    assert main([str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "fingerprint: sha256:" in out and "holdout acc" in out
    assert main([str(cache_dir), "--quiet", "--no-checksums"]) == 0
    assert capsys.readouterr().out.strip() == f"{cache_dir}: valid"
    assert main([str(cache_dir), "--quiet", "--skip-integrity-check"]) == 0
    assert capsys.readouterr().out.strip() == f"{cache_dir}: valid"


def test_cli_invalid_prints_one_line_per_problem(cache_dir, capsys):
    dict((c[0], c[1]) for c in CASES)["NaN"](cache_dir)
    dict((c[0], c[1]) for c in CASES)["missing file"](cache_dir)
    assert main([str(cache_dir)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in captured.err and captured.out == ""


def test_cli_as_module_exits_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "data_cache.validate", str(tmp_path / "nothing")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"{tmp_path / 'nothing'}: not a folder"


@pytest.mark.parametrize("chunk", [1, 700, 1 << 24])  # one exit at a time, a few exits, everything
def test_value_problems_name_the_exits_whatever_the_chunking(cache_dir, monkeypatch, chunk):
    import data_cache.integrity as impl

    monkeypatch.setattr(impl, "CHUNK_BYTES", chunk)
    probs = _load(cache_dir, "search", fmt.TOPK_PROBS)
    probs[2, 0, 5] = probs[5, 1, 0] = np.nan
    rewrite(cache_dir, "search", fmt.TOPK_PROBS, probs)
    ids = _load(cache_dir, "holdout", fmt.TOPK_IDS)
    ids[7, 0, 59] = 10
    rewrite(cache_dir, "holdout", fmt.TOPK_IDS, ids)
    problems = validate_cache(cache_dir)
    names = small_cache().exits
    assert problems == [f"{cache_dir}/search/topk_probs.npy: probabilities: NaN or inf values "
                        f"at exits {names[2].name}, {names[5].name}",
                        f"{cache_dir}/holdout/topk_ids.npy: class ids: outside [0, 10) at exit {names[7].name}"]


@pytest.mark.parametrize("chunk", [2, 64, 1 << 24])  # a piece of a row, rows, everything
def test_logits_scanned_in_pieces_of_an_exit(tmp_path, monkeypatch, chunk):
    import data_cache.integrity as impl
    from data_cache import InMemoryCache

    monkeypatch.setattr(impl, "CHUNK_BYTES", chunk)
    mem = small_cache()
    arrays = {s: {f: mem._array(s, f) for f in fmt.SPLIT_FILES} for s in mem.splits()}
    for s in arrays:
        arrays[s][fmt.LOGITS] = np.zeros((mem.meta.n_exits, mem.n_samples(s), mem.n_classes))
    save_cache(tmp_path / "c", InMemoryCache(mem.meta, arrays))
    logits = _load(tmp_path / "c", "holdout", fmt.LOGITS)
    logits[3, 59, 9] = np.inf
    logits[6, 0, 0] = np.nan
    rewrite(tmp_path / "c", "holdout", fmt.LOGITS, logits)
    assert validate_cache(tmp_path / "c") == [
        f"{tmp_path / 'c'}/holdout/logits.npy: logits: NaN or inf values at exits {mem.exits[3].name}, "
        f"{mem.exits[6].name}"]


def test_identical_splits_are_warned_about_as_search_pareto_words_it(tmp_path, capsys):
    """The same predictions as search and holdout: valid, and the warning line says what docs/bad-inputs.md
    says (regression: it left out that holdout figures are not independent of search)."""
    import dataclasses

    from data_cache.memory import InMemoryCache

    cache = small_cache()
    arrays = {s: {f: np.array(cache._array("search", f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    save_cache(tmp_path / "same", InMemoryCache(dataclasses.replace(cache.meta), arrays))
    assert main([str(tmp_path / "same"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {tmp_path / 'same'}: splits 'search' and 'holdout' of the cache hold the same "
                   "predictions (identical files); figures on 'holdout' are not independent of 'search'"]
