"""Issue 20, every read guarded, at the command-line boundary: numbers parsed strictly, a .pgf plot, over-long file
names, a huge --input-size and --pretrained without a network: one ``error:`` line naming the culprit, status 2,
no traceback, nothing changed (the helpers of ``test_bad_inputs_cli.py``)."""
from __future__ import annotations

from pathlib import Path

import pytest

import exits._limits
from data_cache import save_cache
from data_cache.dump import main as dump_main
from data_cache.synthetic import make_synthetic_cache
from data_cache.validate import main as validate_main
from exits import model as exits_model
from exits.check import main as check_main
from exits.train import main as train_main
from search.pareto import main as pareto_main
from tests.cli.test_bad_inputs_cli import _refused
from tests.exits._fashion import fashion_files
from tests.exits.conftest import one_intra_op_thread  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")
LONG = "n" * 300


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reads")
    save_cache(root / "cache", make_synthetic_cache(300, 3, n_head_types=2, k=2, seed=0))
    fashion_files(root / "fm")
    import torch

    torch.save(exits_model.create_backbone("resnet10t").state_dict(), root / "weights.pt")
    return root


STRICT_NUMBERS = [
    (["--max-drop", "1_0"], "argument --max-drop"),            # read as 10 before
    (["--budget", "0_5"], "argument --budget"),
    (["--evaluations", " 1"], "argument --evaluations: must be an integer, got ' 1'"),
    (["--evaluations", "1 "], "argument --evaluations"),
    (["--seed", "\u0661"], "argument --seed"),                  # an Arabic-Indic digit one: int() takes it
    (["--chunk-size", "1e3"], "argument --chunk-size"),
    (["--memory-limit", "nan"], "argument --memory-limit"),
    (["--memory-limit", "inf"], "argument --memory-limit"),
    (["--plot", "{tmp}/front.pgf"], "unknown file type '.pgf'"),       # needed LaTeX: a traceback after the search
    (["--export", "{tmp}/" + LONG + ".json"], "a file name of 305 bytes"),
    (["--plot", "{tmp}/" + "p" * 250 + ".png"], "16 are needed for a temporary name"),
]


@pytest.mark.parametrize("extra, culprit", STRICT_NUMBERS, ids=[" ".join(e)[:40] for e, _ in STRICT_NUMBERS])
def test_pareto_refuses_in_one_line(env, extra, culprit):
    argv = [str(env / "cache"), "--methods", "dp", "--no-progress", *(a.format(tmp=env) for a in extra)]
    _refused(pareto_main, argv, culprit, env)


def test_an_over_long_cache_name_is_one_line(env, capsys):
    _refused(pareto_main, [str(env / LONG), "--methods", "dp"], "cannot read (File name too long)", env)
    status = validate_main([str(env / LONG)])                    # its problems are `path: problem` lines
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].endswith(": cannot read (File name too long)")


def test_a_huge_input_size_is_refused_before_any_allocation(env, monkeypatch):
    train = ["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(env / "fm"),
             "--train-backbone-epochs", "1", "--out", str(env / "c.pt")]
    _refused(check_main, ["resnet10t", "--input-size", "1000000"], "input size 1000000 x 1000000", env)
    _refused(train_main, train + ["--input-size", "1000000"], "input size 1000000 x 1000000", env)
    _refused(dump_main, ["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(env / "fm"),
                         "--backbone-weights", str(env / "weights.pt"), "--input-size", "1000000",
                         "--out", str(env / "newcache")], "input size 1000000", env)
    monkeypatch.setattr(exits._limits, "available_memory", lambda: 10**9)     # 1 GB free: 20000 px does not fit
    line = _refused(check_main, ["resnet10t", "--input-size", "20000"], "input size 20000 x 20000", env)
    assert "more than the 1.0 GB of memory available" in line


def test_pretrained_without_a_network_is_one_line(env, monkeypatch):
    import timm
    from huggingface_hub.errors import LocalEntryNotFoundError

    real = timm.create_model

    def offline(name, **kwargs):
        if kwargs.get("pretrained"):
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache. Check your connection")
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    line = _refused(check_main, ["resnet10t", "--pretrained"], "resnet10t: pretrained weights could not be fetched",
                    env)
    assert "LocalEntryNotFoundError" in line
    assert check_main(["resnet10t", "--input-size", "32"]) == 0               # without --pretrained: unchanged
