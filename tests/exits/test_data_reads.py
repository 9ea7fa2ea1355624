"""Issue 20, every read guarded: damaged dataset files, class folders and labels give one line naming the culprit,
in the reader and through ``python -m exits.train`` (status 2, no traceback, no checkpoint written)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exits.data import DataError, error_line, load_splits, read_idx, write_idx
from exits.train import main as train_main
from tests.exits._fashion import fashion_files

CFG = dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0,
           interpolation="bilinear", crop_mode="center")


def _image_tree(root: Path, classes=("ant", "bee"), n: int = 3) -> Path:
    for part in ("train", "val"):
        for cls in classes:
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b""), "not an IDX file"),                               # empty file
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "cannot read"),                  # truncated gzip stream
    (lambda p: p.write_bytes(b"\x1f\x8b" + b"garbage" * 10), "cannot read"),        # corrupt gzip
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00")), "truncated IDX file"),  # header cut
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\xff\xff\xff\xff")), "negative dimension"),
])
def test_damaged_idx_file_is_one_line_naming_it(tmp_path, damage, reason):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", np.zeros((4, 5, 5), np.uint8))
    damage(path)
    with pytest.raises(DataError, match=reason) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b""),                                  # empty
    lambda p: p.write_bytes(p.read_bytes()[:300]),                  # truncated
    lambda p: p.write_bytes(b"this is not an image at all" * 4),  # not an image
])
def test_damaged_image_is_one_line_naming_it(tmp_path, damage):
    root = _image_tree(tmp_path / "tree")
    bad = root / "val" / "ant" / "0.png"
    damage(bad)
    s = load_splits("imagefolder", root, data_config=CFG, search_fraction=0.5)
    with pytest.raises(DataError, match="not a readable image") as info:
        s.holdout[0]
    assert str(bad) in str(info.value)


def test_image_folder_without_two_classes_is_refused(tmp_path):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    (empty / "train" / "a.png").write_bytes(b"")                     # images but no class folders
    with pytest.raises(DataError, match="no class folders"):
        load_splits("imagefolder", empty, data_config=CFG)
    one = _image_tree(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="1 class folder .*at least two classes"):
        load_splits("imagefolder", one, data_config=CFG)
    bare = tmp_path / "bare"
    for part in ("train", "val"):
        for cls in ("a", "b"):
            (bare / part / cls).mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_splits("imagefolder", bare, data_config=CFG)


def test_labels_beyond_the_class_count_are_refused(tmp_path):
    root = fashion_files(tmp_path / "fm")
    write_idx(root / "train-labels-idx1-ubyte.gz", np.r_[np.arange(39) % 10, 12])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 12 is out of range"):
        load_splits("fashion_mnist", root, data_config=CFG)


def test_error_line_of_a_dataloader_worker_error():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\n"
                        "exits._sources.DataError: /d/a.png: not a readable image (x)\n")
    assert error_line(wrapped) == "/d/a.png: not a readable image (x)"
    assert error_line(DataError("plain")) == "plain"


# -- through the command line --------------------------------------------------------------------

def _train(tmp_path: Path, capsys, *args: str) -> tuple[int, list[str]]:
    out = tmp_path / "ckpt.pt"
    status = train_main(["--model", "resnet10t", "--points", "stages", "--input-size", "32", "--batch-size", "4",
                         "--train-backbone-epochs", "1", "--epochs", "1", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert not out.exists(), "a refused training wrote a checkpoint"
    return status, err


@pytest.mark.parametrize("workers", ["0", "1"])     # 1: the error crosses a DataLoader worker process
def test_train_refuses_a_corrupt_image_in_one_line(tmp_path, capsys, workers):
    root = _image_tree(tmp_path / "tree")
    for p in (root / "train").rglob("*.png"):
        p.write_bytes(p.read_bytes()[:300])
    status, err = _train(tmp_path, capsys, "--dataset", "imagefolder", "--data-root", str(root),
                         "--num-workers", workers)
    assert status == 2 and len(err) == 1 and "not a readable image" in err[0] and str(root / "train") in err[0]


@pytest.mark.parametrize("case, culprit", [
    ("one class", "at least two classes"),
    ("no class folders", "no class folders"),
    ("--num-classes 5", "--num-classes is 5"),
])
def test_train_refuses_bad_classes_before_training(tmp_path, capsys, case, culprit):
    if case == "one class":
        args = ["--dataset", "imagefolder", "--data-root", str(_image_tree(tmp_path / "t", classes=("x",)))]
    elif case == "no class folders":
        (tmp_path / "t" / "train").mkdir(parents=True)
        (tmp_path / "t" / "val").mkdir()
        args = ["--dataset", "imagefolder", "--data-root", str(tmp_path / "t")]
    else:
        args = ["--dataset", "fashion_mnist", "--data-root", str(fashion_files(tmp_path / "fm")), "--num-classes", "5"]
    status, err = _train(tmp_path, capsys, *args)
    assert status == 2 and len(err) == 1 and culprit in err[0], err
