"""python -m data_cache.convert: summary on success, one line per problem and exit 2 on bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from data_cache import CacheInputError, open_cache
from data_cache.convert import main

from ._helpers import dyce_arrays, macs_dict, write_json, write_records


@pytest.fixture
def argv(tmp_path):
    s = write_records(tmp_path / "s.npz", dyce_arrays(3, 2, 30, seed=1))
    h = write_records(tmp_path / "h.npz", dyce_arrays(3, 2, 20, seed=2))
    m = write_json(tmp_path / "m.json", macs_dict(3, 2))
    return ["dyce", "--search", str(s), "--holdout", str(h), "--macs-info", str(m), "--out", str(tmp_path / "out")]


def test_success_prints_a_summary(argv, capsys, tmp_path):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pos0/mlp0x100" in out and "pos2/final" in out and "search acc" in out
    assert out.strip().endswith(f"{tmp_path / 'out'}: imported (dyce)")
    cache = open_cache(tmp_path / "out")
    assert cache.manifest["provenance"]["command"].startswith("python -m data_cache.convert dyce --search")


def test_quiet_and_overwrite(argv, capsys):
    assert main(argv + ["--quiet"]) == 0
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a complete cache" in err and "--overwrite" in err
    assert main(argv + ["--quiet", "--overwrite", "--n-classes", "12"]) == 0
    assert capsys.readouterr().out == ""


def _bad_shapes(argv):
    arrays = dyce_arrays(4, 2, 30, seed=1)  # P=4 records against a P=3 macs file
    write_records(argv[2], arrays)
    write_records(argv[4], arrays)


@pytest.mark.parametrize("edit, lines", [
    (lambda a: a.__setitem__(2, a[2] + ".missing"), ["s.npz.missing: no such file"]),
    (lambda a: open(a[6], "w").write("{bad json"), ["m.json: not valid JSON"]),
    (_bad_shapes, ["s.npz: R: preds has R=7 rows", "h.npz: R: preds has R=7 rows"]),
], ids=["missing file", "bad json", "two files disagree"])
def test_errors_are_one_line_each_and_exit_2(argv, capsys, edit, lines):
    edit(argv)
    assert main(argv) == 2
    captured = capsys.readouterr()
    got = captured.err.strip().splitlines()
    assert len(got) == len(lines) and captured.out == "" and "Traceback" not in captured.err
    for line, part in zip(got, lines, strict=True):
        assert part in line


def test_layout_refused(argv, capsys):
    assert main(argv + ["--layout", "tinysaver"]) == 2
    assert "a TinySaver pair needs P=2" in capsys.readouterr().err


def test_debug_reraises(argv):
    argv[2] += ".missing"
    with pytest.raises(CacheInputError, match="no such file"):
        main(argv + ["--debug"])


def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["dyce", "--search", "x.npz"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["tfrecords"])
    assert "invalid choice" in capsys.readouterr().err


def test_as_module(argv, tmp_path):
    argv[2] += ".missing"
    r = subprocess.run([sys.executable, "-m", "data_cache.convert"] + argv, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"{tmp_path / 's.npz.missing'}: no such file"
    assert not (tmp_path / "out").exists()


def _damage(kind):
    def edit(path):
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            path.write_bytes(bytes(data[: len(data) // 2]))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "garbage":
            path.write_bytes(bytes(range(256)) * 4)
        elif kind == "crc":
            middle = len(data) // 3
            data[middle:middle + 40] = bytes(40)
            path.write_bytes(bytes(data))
        elif kind == "text member":
            import zipfile
            with zipfile.ZipFile(path, "w") as z:
                for key in ("label", "preds", "confs"):
                    z.writestr(f"{key}.npy", "hello")
    return edit


@pytest.mark.parametrize("kind, part", [("truncated", "not a NumPy .npz file (File is not a zip file)"),
                                        ("empty", "not a NumPy .npz file"),
                                        ("garbage", "not a NumPy .npz file"),
                                        ("crc", "damaged or truncated (BadZipFile: Bad CRC-32"),
                                        ("text member", "label: not a .npy array inside the .npz")])
def test_damaged_record_files_are_one_line(argv, capsys, kind, part):
    from pathlib import Path

    _damage(kind)(Path(argv[2]))
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and lines and all(line.startswith(argv[2]) for line in lines)
    assert part in lines[0], lines


def test_same_records_for_search_and_holdout_warn_in_one_line(argv, capsys, tmp_path):
    import shutil

    same = list(argv)
    same[4] = same[2]
    assert main(same + ["--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "the same records as the search split" in err[0]
    copy = tmp_path / "copy.npz"
    shutil.copy(argv[2], copy)
    again = list(argv)
    again[4] = str(copy)
    assert main(again + ["--quiet", "--overwrite"]) == 0
    assert "the same records" in capsys.readouterr().err


def test_same_records_warn_from_the_library(argv):
    from data_cache import CacheWarning
    from data_cache.importers import get_importer

    with pytest.warns(CacheWarning, match="the same records"):
        get_importer("dyce")(argv[-1], search=argv[2], holdout=argv[2], macs_info=argv[6])
