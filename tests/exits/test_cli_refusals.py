"""Command lines on models they cannot cut: one line naming the model and the reason, exit status 2;
``python -m exits.check`` on a model of one's own."""
from __future__ import annotations

import re

import pytest
import torch
from _fashion import fashion_files

from exits.check import main as check_main
from exits.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("extra, expected", [
    (["--model", "twins_svt_small"], "twins_svt_small: the generic plan cannot trace the forward between blocks"),
    (["--model", "resnet10t", "--points", "layer1,fc"], "module 'fc' of resnet10t is not a block boundary"),
    (["--model", "vit_tiny_patch16_224", "--input-size", "33"],
     "vit_tiny_patch16_224: step 'norm_pre' fails on an input of size (3, 33, 33)"),
])
def test_train_refuses_in_one_line(tmp_path, capsys, extra, expected):
    root = fashion_files(tmp_path / "fm", 10, 10)
    argv = ["--dataset", "fashion_mnist", "--data-root", str(root), "--train-backbone-epochs", "1",
            "--out", str(tmp_path / "c.pt"), "--quiet", *extra]
    assert train_main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: ") and expected in line
    assert not (tmp_path / "c.pt").exists()


def test_dump_refuses_an_input_size_the_model_refuses(tmp_path, capsys):
    import timm

    from data_cache.dump import main as dump_main

    weights = tmp_path / "w.pt"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), weights)
    root = fashion_files(tmp_path / "fm", 10, 10)
    assert dump_main(["--model", "vit_tiny_patch16_224", "--backbone-weights", str(weights), "--input-size", "33",
                      "--dataset", "fashion_mnist", "--data-root", str(root), "--out", str(tmp_path / "cache"),
                      "--quiet"]) == 2
    assert "fails on an input of size (3, 33, 33)" in _one_error_line(capsys)
    assert not (tmp_path / "cache").exists()


def test_check_reports_the_plan_positions_and_checks(capsys):
    assert check_main(["convnext_atto", "--input-size", "32", "--points", "stages"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^convnext_atto\S*: convnext plan, 4 exit positions at 32 px, attached in", out)
    assert "segments in order == model(x) bit for bit: ok" in out
    assert "dropping a row mid-way keeps the other rows: ok" in out and "segments sum to the whole: ok" in out
    assert check_main(["densenet121", "--input-size", "32", "--points", "features.denseblock1"]) == 0
    out = capsys.readouterr().out
    assert "generic plan, 1 exit positions" in out and "leaves: stream, batch@0, batch@0" in out


def test_check_counts_macs_for_the_head_trained_and_says_the_weights_are_random(capsys):
    """MACs for the head size the user will train (--num-classes, or the --dataset's), the model's own head
    only with a note; random-init weights said so, and no pretrained tag named for them."""
    assert check_main(["mobilenetv3_small_050", "--input-size", "32"]) == 0
    own = capsys.readouterr().out
    assert own.startswith("mobilenetv3_small_050: ") and ".lamb_in1k" not in own
    assert "with a 1000-class classifier" in own and "note: 1000 classes is the model's own head" in own
    assert "weights: random init" in own
    assert check_main(["mobilenetv3_small_050", "--input-size", "32", "--dataset", "fashion_mnist"]) == 0
    ten = capsys.readouterr().out
    assert "with a 10-class classifier" in ten and "note:" not in ten
    macs = [float(re.search(r"MACs: ([0-9.]+) G", text).group(1)) for text in (own, ten)]
    assert macs[1] < macs[0]
    assert check_main(["mobilenetv3_small_050", "--input-size", "32", "--num-classes", "10"]) == 0
    assert "with a 10-class classifier" in capsys.readouterr().out
    assert check_main(["mobilenetv3_small_050", "--dataset", "imagefolder"]) == 2
    assert _one_error_line(capsys) == "error: imagefolder: its classes come from its folders; pass --num-classes N"


def test_check_refuses_in_one_line(capsys):
    assert check_main(["twins_svt_small"]) == 2
    assert "cannot trace the forward between blocks" in _one_error_line(capsys)
    assert check_main(["resnet10t", "--points", "layer1.0.conv1"]) == 2
    assert "is not a block boundary" in _one_error_line(capsys)


@pytest.mark.parametrize("points", ["", ","])
def test_check_refuses_points_that_name_no_module(capsys, points):
    # regression: an empty --points attached no exit and printed every check "ok" with exit status 1
    with pytest.raises(SystemExit) as stop:
        check_main(["resnet10t", "--input-size", "32", "--points", points])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert not captured.out and captured.err.startswith("error: argument --points") and captured.err.count("\n") == 1
