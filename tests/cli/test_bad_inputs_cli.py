"""Issue 13, the command-line boundary: every bad input through the real command line, in-process.

Each bad input must end in exit status 2 with one line on stderr (``error: ...``) that names the culprit, no
traceback, and no output file created or changed; a suspicious but legal input in one ``warning: ...`` line
and the right result. The data-side bad inputs (caches, manifests, exports, DyCE records) are in
``tests/fuzz/test_bad_inputs.py``; ``docs/bad-inputs.md`` counts both.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from data_cache import format as fmt
from data_cache import save_cache
from data_cache.cli_types import PLOT_SUFFIXES
from data_cache.convert import main as convert_main
from data_cache.dump import main as dump_main
from data_cache.memory import InMemoryCache
from data_cache.outputs import OutputError, atomic_outputs
from data_cache.synthetic import make_synthetic_cache
from exits.check import main as check_main
from exits.checkpoints import save_checkpoint
from exits.data import load_splits
from exits.dump import dump_cache, dump_provenance
from exits.export_bundle import main as export_bundle_main
from exits.pipeline import main as pipeline_main
from exits.train import main as train_main
from exits.validate import main as validate_main
from exits.validate_bundle import main as validate_bundle_main
from search.pareto import main as pareto_main
from tests.exits._fashion import fashion_files
from tests.exits._runtime_fixtures import make_export, tiny_model
from tests.exits.conftest import one_intra_op_thread  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


# -- running a command and what it left ------------------------------------------------------------

def _run(main: Callable, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:                  # argparse refuses a bad option value this way
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir() or p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


def _refused(main: Callable, argv: list[str], culprit: str, watch: Path) -> str:
    """Exit status 2, one ``error:`` line naming ``culprit``, no traceback, nothing under ``watch`` changed."""
    before = _snapshot(watch)
    status, _, err = _run(main, argv)
    lines = err.strip().splitlines()
    assert status == 2, (status, err)
    prefix = "" if main is convert_main else "error: "   # convert prints its problems as `file: field: problem`
    assert len(lines) == 1 and lines[0].startswith(prefix) and culprit in lines[0], err
    assert "Traceback" not in err
    assert _snapshot(watch) == before, "a refused command created or changed a file"
    return lines[0]


# -- search.pareto ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def search_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pareto")
    save_cache(root / "cache", make_synthetic_cache(300, 3, n_head_types=2, k=2, seed=0))
    (root / "out").mkdir()
    (root / "out" / "folder.json").mkdir()
    (root / "out" / "old.json").write_text('{"mine": true}\n')
    (root / "out" / "afile").write_text("a file, not a folder\n")
    return root


def _pareto(env: Path, *extra: str) -> list[str]:
    return [str(env / "cache"), "--methods", "dp", "--no-progress", *extra]


PARETO_REFUSALS = [  # (extra arguments with {out} for the output folder, the culprit named)
    (["--export", "{out}/folder.json"], "is a folder"),
    (["--export-choice", "{out}/folder.json", "--max-drop", "1"], "is a folder"),
    (["--plot", "{out}/front.xyz"], "unknown file type '.xyz'"),
    (["--export", "{out}/new.json", "--plot", "{out}/front.xyz"], "unknown file type '.xyz'"),
    (["--export", "/dev/full"], "/dev/full: exists and is not a regular file"),
    (["--export", "{out}/afile/x.json"], "is a file, not a folder"),
    (["--export", "{out}/missing/x.json"], "does not exist; create it first"),
    (["--export", "{out}/old.json"], "file exists; pass --overwrite"),
    (["--export-choice", "{out}/old.json", "--max-drop", "1"], "file exists; pass --overwrite"),
    (["--export", "{out}/new.json", "--export-choice", "{out}/new2.json"], "--export-choice needs --max-drop"),
    (["--export", "{out}/same.json", "--export-choice", "{out}/same.json", "--max-drop", "1"],
     "is also the --export file"),
    (["--export", "{out}/x.txt"], "unknown file type '.txt'"),
    (["--max-drop", "-3"], "argument --max-drop: must be a number of points >= 0 (0.5 = half a point of top-1 "
                           "accuracy); got -3.0"),
    (["--max-drop", "101"], "argument --max-drop: 101 points is above 20"),
    (["--max-drop", "50"], "argument --max-drop: 50 points is above 20"),
    (["--max-drop", "0.005"], "argument --max-drop: 0.005 looks like a fraction; drops are in points of top-1 "
                              "accuracy (0.5 = half a point): pass 0.5"),
    (["--max-drop", "nan"], "argument --max-drop"),
    (["--budget", "0"], "argument --budget: must be a finite number > 0, got 0"),
    (["--budget", "inf"], "argument --budget"),
    (["--max-drop", "1", "--risk", "0.6"], "argument --risk: must be a risk level in (0, 0.5], got 0.6"),
    (["--max-drop", "1", "--risk", "nan"], "argument --risk"),
    (["--max-drop", "1", "--calibration-fraction", "1"], "argument --calibration-fraction"),
    (["--seed", "-1"], "argument --seed: must be a random seed"),
    (["--evaluations", "0"], "argument --evaluations: must be a positive integer, got 0"),
    (["--time-limit", "-1"], "argument --time-limit"),
    (["--workers", "0"], "argument --workers"),
    (["--pop-size", "1"], "argument --pop-size"),
    (["--chunk-size", "x"], "argument --chunk-size: must be an integer, got 'x'"),
]


@pytest.mark.parametrize("extra, culprit", PARETO_REFUSALS, ids=[" ".join(e) for e, _ in PARETO_REFUSALS])
def test_pareto_refuses_before_any_search(search_env, extra, culprit):
    argv = _pareto(search_env, *(a.format(out=search_env / "out") for a in extra))
    _refused(pareto_main, argv, culprit, search_env)


def test_pareto_unwritable_folder_is_refused_before_the_search(search_env, monkeypatch):
    import data_cache.outputs as outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)  # root may write anywhere: pretend
    _refused(pareto_main, _pareto(search_env, "--export", str(search_env / "out" / "n.json")), "is not writable",
             search_env)


def test_pareto_overwrite_replaces_and_says_so(search_env, tmp_path):
    target = tmp_path / "front.json"
    target.write_text('{"format": "exitconfig/1", "configs": []}\n')  # only an export of the tool is replaced
    status, _, err = _run(pareto_main, _pareto(search_env, "--export", str(target), "--overwrite"))
    assert status == 0
    assert err.strip().splitlines() == [f"warning: --export {target}: replacing the existing file (--overwrite)"]
    assert json.loads(target.read_text())["format"] == "exitconfig/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.json"]     # no temporary file left


def test_pareto_writes_every_output_or_none(search_env, tmp_path, monkeypatch):
    """A failure writing the plot (after the exports were written) leaves no export behind."""
    import search.pareto as pareto

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pareto, "_plots", broken)
    argv = _pareto(search_env, "--export", str(tmp_path / "f.json"), "--max-drop", "1", "--uncertified",
                   "--export-choice", str(tmp_path / "c.json"), "--plot", str(tmp_path / "f.png"))
    status, _, err = _run(pareto_main, argv)
    assert status == 2 and err.strip().splitlines()[-1].endswith("could not write (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_pareto_warns_when_search_and_holdout_are_the_same_data(tmp_path):
    cache = make_synthetic_cache(200, 3, n_head_types=2, k=2, seed=1)
    arrays = {s: {f: np.array(cache._array("search", f)) for f in fmt.SPLIT_FILES} for s in cache.splits()}
    save_cache(tmp_path / "same", InMemoryCache(dataclasses.replace(cache.meta), arrays))
    status, out, err = _run(pareto_main, [str(tmp_path / "same"), "--methods", "dp", "--no-progress"])
    lines = err.strip().splitlines()
    assert status == 0 and len(lines) == 1
    assert lines[0].startswith("warning: splits 'search' and 'holdout' of the cache hold the same predictions")
    assert "HV search" in out


def test_plot_formats_are_what_matplotlib_writes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = {f".{s}" for s in FigureCanvasAgg(Figure()).get_supported_filetypes()}
    assert set(PLOT_SUFFIXES) <= written


def test_atomic_outputs_replace_nothing_unless_all_were_written(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old\n")
    with pytest.raises(OutputError, match="could not write"):
        with atomic_outputs([("--a", first), ("--b", second)]) as (ta, tb):
            ta.write_text("new\n")
            raise OSError(28, "No space left on device")
    assert first.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# -- the torch side: exits.validate, exits.train, data_cache.dump ---------------------------------

@pytest.fixture(scope="module")
def model_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    root = fashion_files(tmp / "fm", 40, 20)
    model = tiny_model()
    data = {"dataset": "fashion_mnist", "search_fraction": 0.3, "seed": 0}
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, include_backbone=True, data=data)
    save_checkpoint(tmp / "unfinished.pt", model, include_backbone=True, data=data,
                    train_state={"phase": "heads", "heads": {"epoch": 1}}, finished=False)
    splits = load_splits("fashion_mnist", root, data_config=model.data_config, search_fraction=0.3, seed=0)
    prov = dump_provenance(model, data_config=model.data_config, dataset="fashion_mnist",
                           split_parameters=splits.parameters, seed=0)
    cache = dump_cache(model, splits.cache_splits(), tmp / "cache", k=2, batch_size=16,
                       split_definitions=splits.definitions, provenance=prov)
    (tmp / "front.json").write_text(json.dumps(make_export(cache)))
    (tmp / "out").mkdir()
    (tmp / "out" / "old.json").write_text("{}\n")
    (tmp / "out" / "folder.json").mkdir()
    (tmp / "out" / "notacache").mkdir()
    (tmp / "out" / "notacache" / "mine.txt").write_text("keep me\n")
    return tmp, root, ckpt


def _validate(env, *extra: str) -> list[str]:
    tmp, root, ckpt = env
    args = ["--config", str(tmp / "front.json"), "--checkpoint", str(ckpt), "--dataset", "fashion_mnist",
            "--data-root", str(root), "--cache", str(tmp / "cache"), "--no-timing", "--quiet"]
    extra = [a.format(out=tmp / "out", tmp=tmp) for a in extra]
    return args + extra + ([] if "--report" in extra else ["--report", str(tmp / "out" / "r.json")])


NO_CUDA = "" if torch.cuda.is_available() else "cuda"
VALIDATE_REFUSALS = [
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--threads", "-1"], "argument --threads: must be a number of threads >= 1, got -1"),
    (["--num-workers", "-1"], "argument --num-workers: must be a non-negative integer, got -1"),
    (["--rounds", "0"], "argument --rounds: must be a positive integer, got 0"),
    (["--tolerance", "nan"], "argument --tolerance: must be a finite number >= 0, got 'nan'"),
    (["--timing-samples", "0"], "argument --timing-samples"),
    (["--latency-samples", "-5"], "argument --latency-samples"),
    (["--max-configs", "0"], "argument --max-configs"),
    (["--device", "bogus"], "argument --device: 'bogus' is not a device"),
    (["--device", "cuda:7"], "argument --device: 'cuda:7'"),
    (["--device", "cpu:3"], "argument --device: 'cpu:3'"),
    (["--report", "{out}/folder.json"], "--report {out}/folder.json: is a folder"),
    (["--report", "{out}/old.json"], "file exists; pass --overwrite"),
    (["--report", "{out}/missing/r.json"], "does not exist; create it first"),
    (["--report", "/dev/full"], "/dev/full: exists and is not a regular file"),
    (["--report", "{tmp}/front.json", "--overwrite"], "is the --config file this command reads"),
    (["--plot", "{out}/r.xyz"], "unknown file type '.xyz'"),
    (["--checkpoint", "{tmp}/unfinished.pt"], "training did not finish (last saved after heads epoch 1)"),
]
if NO_CUDA:
    VALIDATE_REFUSALS.append((["--device", "cuda"], "argument --device: 'cuda': no CUDA device on this machine"))


@pytest.mark.parametrize("extra, culprit", VALIDATE_REFUSALS, ids=[" ".join(e) for e, _ in VALIDATE_REFUSALS])
def test_validate_refuses_before_any_configuration_runs(model_env, extra, culprit):
    culprit = culprit.format(out=model_env[0] / "out")
    _refused(validate_main, _validate(model_env, *extra), culprit, model_env[0])


def test_validate_on_search_warns_and_runs(model_env):
    report = model_env[0] / "out" / "search.json"
    status, out, err = _run(validate_main, _validate(model_env, "--split", "search", "--report", str(report)))
    lines = err.strip().splitlines()
    assert status == 0 and len(lines) == 1 and lines[0].startswith("warning: --split search")
    assert json.loads(report.read_text())["split"] == "search"
    report.unlink()


def _train(env, *extra: str) -> list[str]:
    tmp, root, _ = env
    extra = [a.format(out=tmp / "out", tmp=tmp) for a in extra]
    args = ["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(root), "--quiet",
            "--train-backbone-epochs", "1", "--input-size", "16", "--max-samples", "20"]
    return args + extra + ([] if "--out" in extra else ["--out", str(tmp / "out" / "new.pt")])


TRAIN_REFUSALS = [
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
    (["--lr", "0"], "argument --lr"),
    (["--backbone-lr", "-1"], "argument --backbone-lr"),
    (["--distill", "2"], "argument --distill: must be a number in [0, 1], got 2"),
    (["--temperature", "0"], "argument --temperature"),
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
    (["--train-backbone-epochs", "-1"], "argument --train-backbone-epochs"),
    (["--batch-size", "0"], "argument --batch-size"),
    (["--weight-decay", "inf"], "argument --weight-decay"),
    (["--warmup-epochs", "-1"], "argument --warmup-epochs"),
    (["--search-fraction", "1.5"], "argument --search-fraction: must be a fraction in (0, 1), got 1.5"),
    (["--calibration-size", "-1"], "argument --calibration-size"),
    (["--crop-pct", "0"], "argument --crop-pct"),
    (["--num-classes", "1"], "argument --num-classes"),
    (["--seed", "-1"], "argument --seed"),
    (["--device", "bogus"], "argument --device: 'bogus' is not a device"),
    (["--out", "{out}/old.json"], "file exists; pass --overwrite"),
    (["--out", "{out}/folder.json"], "is a folder"),
    (["--out", "{out}/missing/c.pt"], "does not exist; create it first"),
    (["--out", "{out}/nothing.pt", "--resume"], "no checkpoint to resume"),
    (["--out", "{out}/old.json", "--resume", "--overwrite"], "pass one of them"),
]


@pytest.mark.parametrize("extra, culprit", TRAIN_REFUSALS, ids=[" ".join(e) for e, _ in TRAIN_REFUSALS])
def test_train_refuses_before_anything_trains(model_env, extra, culprit):
    _refused(train_main, _train(model_env, *extra), culprit, model_env[0])


def test_dump_refuses_an_unfinished_checkpoint(model_env):
    tmp, root, _ = model_env
    _refused(dump_main, ["--model", "resnet10t", "--checkpoint", str(tmp / "unfinished.pt"), "--dataset",
                         "fashion_mnist", "--data-root", str(root), "--out", str(tmp / "out" / "c"), "--quiet"],
             "training did not finish", tmp)


def _dump(env, *extra: str) -> list[str]:
    tmp, root, ckpt = env
    extra = [a.format(out=tmp / "out", tmp=tmp) for a in extra]
    args = ["--model", "resnet10t", "--checkpoint", str(ckpt), "--dataset", "fashion_mnist", "--data-root",
            str(root), "--quiet"]
    return args + extra + ([] if "--out" in extra else ["--out", str(tmp / "out" / "newcache")])


DUMP_REFUSALS = [
    (["--k", "0"], "argument --k: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch-size"),
    (["--num-workers", "-1"], "argument --num-workers"),
    (["--latency", "0"], "argument --latency"),
    (["--search-fraction", "0"], "argument --search-fraction"),
    (["--max-samples", "0"], "argument --max-samples"),
    (["--device", "bogus"], "argument --device: 'bogus' is not a device"),
    (["--out", "{out}/old.json"], "exists and is not a folder"),
    (["--out", "{out}/missing/cache"], "does not exist; create it first"),
    (["--out", "{out}/notacache", "--overwrite"], "holds files but no cache written by this tool"),
    (["--out", "{tmp}/cache"], "already holds a complete cache"),
    (["--out", "{tmp}/cache", "--resume", "--overwrite"], "pass one of them"),
]


@pytest.mark.parametrize("extra, culprit", DUMP_REFUSALS, ids=[" ".join(e) for e, _ in DUMP_REFUSALS])
def test_dump_refuses_before_any_work(model_env, extra, culprit):
    _refused(dump_main, _dump(model_env, *extra), culprit, model_env[0])


def test_dump_a_failed_write_is_one_line(model_env, monkeypatch):
    """A full disk under the dump: one line naming the file, not an OSError traceback (regression)."""
    import errno

    import exits.dump

    shard = model_env[0] / "out" / "newcache" / ".parts" / "search" / "0000000000_0000000016.npz"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(shard))
    monkeypatch.setattr(exits.dump, "dump_cache", full_disk)
    line = _refused(dump_main, _dump(model_env), "No space left on device", model_env[0])
    assert line == f"error: {shard}: No space left on device"


# -- the other command lines ------------------------------------------------------------------------

OTHER_REFUSALS = [  # (command, arguments with {tmp}, culprit)
    (convert_main, ["dyce", "--search", "s.npz", "--holdout", "h.npz", "--macs-info", "m.json", "--out",
                    "{tmp}/c", "--n-classes", "0"], "argument --n-classes"),
    (convert_main, ["dyce", "--search", "s.npz", "--holdout", "h.npz", "--macs-info", "m.json", "--out",
                    "{tmp}/missing/c"], "does not exist; create it first"),
    (convert_main, ["dyce", "--search", "s.npz", "--holdout", "h.npz", "--macs-info", "m.json", "--out",
                    "{tmp}/notacache", "--overwrite"], "holds files but no cache written by this tool"),
    (pipeline_main, ["--out", "{tmp}/afile"], "exists and is not a folder"),
    (pipeline_main, ["--threads", "0"], "argument --threads"),
    (pipeline_main, ["--max-drop", "-1"], "argument --max-drop"),
    (pipeline_main, ["--backbone-epochs", "0"], "argument --backbone-epochs"),
    (pipeline_main, ["--out", "{tmp}/p", "--update-bundled", "--bundled", "{tmp}/notacache"],
     "holds files but no manifest.json"),
    (export_bundle_main, ["--checkpoint", "c.pt", "--config", "f.json", "--out", "{tmp}/b", "--opset", "0"],
     "argument --opset"),
    (export_bundle_main, ["--checkpoint", "c.pt", "--config", "f.json", "--out", "{tmp}/b", "--rtol", "nan"],
     "argument --rtol"),
    (export_bundle_main, ["--checkpoint", "c.pt", "--config", "f.json", "--out", "{tmp}/b", "--atol", "-1"],
     "argument --atol"),
    (validate_bundle_main, ["--bundle", "b", "--report", "{tmp}/r.json", "--threads", "0"], "argument --threads"),
    (validate_bundle_main, ["--bundle", "b", "--report", "{tmp}/r.json", "--tolerance", "nan"],
     "argument --tolerance"),
    (validate_bundle_main, ["--bundle", "b", "--report", "{tmp}/r.json", "--rounds", "0"], "argument --rounds"),
    (check_main, ["resnet10t", "--input-size", "0"], "argument --input-size"),
    (check_main, ["resnet10t", "--threads", "0"], "argument --threads"),
]


@pytest.mark.parametrize("main, argv, culprit", OTHER_REFUSALS,
                         ids=[f"{m.__module__} {' '.join(a[-2:])}" for m, a, _ in OTHER_REFUSALS])
def test_other_commands_refuse_in_one_line(tmp_path, main, argv, culprit):
    (tmp_path / "afile").write_text("a file\n")
    (tmp_path / "notacache").mkdir()
    (tmp_path / "notacache" / "mine.txt").write_text("keep me\n")
    _refused(main, [a.format(tmp=tmp_path) for a in argv], culprit, tmp_path)


def test_no_output_module_imports_torch_for_help():
    """The shared argument types and output checks stay torch-free (``--help`` of search.pareto stays fast)."""
    import subprocess
    import sys

    code = "import sys, data_cache.cli_types, data_cache.outputs; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert run.stdout.strip() == "False", run.stderr


def test_a_killed_training_run_leaves_no_checkpoint_that_looks_trained(model_env, monkeypatch):
    """Killed after the backbone epoch, before the heads trained: the checkpoint there only resumes."""
    import exits.train as train
    from exits.checkpoints import CheckpointError, model_from_checkpoint, read_checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_heads", killed)
    out = model_env[0] / "out" / "killed.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(train_main, _train(model_env, "--out", str(out)))
    ckpt = read_checkpoint(out)
    assert ckpt["finished"] is False
    with pytest.raises(CheckpointError, match="training did not finish .last saved after backbone epoch 1."):
        model_from_checkpoint(ckpt)
    assert model_from_checkpoint(ckpt, allow_unfinished=True).model_name == "resnet10t"   # what --resume reads
    out.unlink()
