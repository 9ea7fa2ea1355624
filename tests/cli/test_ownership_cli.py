"""Issue 20, items 1 and 2, through the real command lines: nothing the tool did not write is deleted or replaced,
and two runs never both succeed on one output.

Each refusal ends in exit status 2, one ``error:`` line naming the culprit, no traceback, and every file of the
watched folder unchanged (bytes and modification times). ``docs/bad-inputs.md`` lists the cases.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from data_cache import open_cache, save_cache
from data_cache.convert import main as convert_main
from data_cache.synthetic import make_synthetic_cache
from exits.export_bundle import main as export_bundle_main
from exits.train import main as train_main
from exits.validate import main as validate_main
from exits.validate_bundle import main as validate_bundle_main
from search.pareto import main as pareto_main
from tests.data_cache._helpers import dyce_arrays, macs_dict, write_json, write_records


def _run(main: Callable, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    return status, out.getvalue(), err.getvalue()


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir() or p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


def _refused(main: Callable, argv: list[str], culprit: str, watch: Path, prefix: str = "error: ") -> None:
    before = _snapshot(watch)
    status, _, err = _run(main, argv)
    lines = err.strip().splitlines()
    assert status == 2, (status, err)
    assert len(lines) == 1 and lines[0].startswith(prefix) and culprit in lines[0], err
    assert _snapshot(watch) == before, "a refused command deleted, created or changed a file"


@pytest.fixture
def env(tmp_path):
    """A cache, a second cache, a user's project folder holding a ``manifest.json``, and dummy model inputs."""
    save_cache(tmp_path / "cache", make_synthetic_cache(200, 3, n_head_types=2, k=2, seed=0))
    save_cache(tmp_path / "other", make_synthetic_cache(200, 3, n_head_types=2, k=2, seed=1))
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "manifest.json").write_text('{"name": "my web app", "version": 3}\n')
    (project / "src" / "main.py").write_text("print('years of work')\n")
    (tmp_path / "ckpt.pt").write_bytes(b"not read: the output is refused first")
    (tmp_path / "front.json").write_text('{"format": "exitconfig/1", "configs": []}\n')
    return tmp_path


def _export(env: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(env / "ckpt.pt"), "--config", str(env / "front.json"), "--out", str(out),
            "--overwrite", *extra]


# -- the deletions: exits.export_bundle --out DIR --overwrite ---------------------------------------

def test_export_bundle_never_deletes_the_cache_it_reads(env):
    _refused(export_bundle_main, _export(env, env / "cache", "--cache", str(env / "cache")),
             "is the --cache folder this command reads", env)
    open_cache(env / "cache")


def test_export_bundle_never_deletes_another_cache(env):
    _refused(export_bundle_main, _export(env, env / "other", "--cache", str(env / "cache")),
             "is not a exitbundle/1 manifest (format 'exitcache/1')", env)
    open_cache(env / "other")


def test_export_bundle_never_deletes_a_project_holding_a_manifest_json(env):
    _refused(export_bundle_main, _export(env, env / "project", "--cache", str(env / "cache")),
             "is not a exitbundle/1 manifest (format None)", env)


def test_export_bundle_never_replaces_a_folder_holding_its_inputs(env):
    _refused(export_bundle_main, _export(env, env, "--cache", str(env / "cache")), "holds --cache", env)


def test_export_bundle_keeps_a_bundle_holding_a_file_it_does_not_list(env):
    bundle = env / "bundle"
    (bundle / "graphs").mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"format": "exitbundle/1", "graphs": [{"file": "graphs/a.onnx"}]}))
    (bundle / "graphs" / "a.onnx").write_bytes(b"onnx")
    (bundle / "notes.txt").write_text("mine\n")
    _refused(export_bundle_main, _export(env, bundle, "--cache", str(env / "cache")), "holds notes.txt", env)


# -- the manifest replacement: search.pareto --export CACHE/manifest.json --overwrite ---------------

def _pareto(env: Path, *extra: str) -> list[str]:
    return [str(env / "cache"), "--methods", "dp", "--no-progress", *extra]


def test_pareto_never_replaces_the_manifest_of_the_cache_it_reads(env):
    _refused(pareto_main, _pareto(env, "--export", str(env / "cache" / "manifest.json"), "--overwrite"),
             "lies inside CACHE", env)
    open_cache(env / "cache")


def test_pareto_never_replaces_the_manifest_of_another_cache(env):
    _refused(pareto_main, _pareto(env, "--export", str(env / "other" / "manifest.json"), "--overwrite"),
             "is the manifest of a folder the tool wrote (exitcache/1)", env)


@pytest.mark.parametrize("option", ["--export", "--export-choice"])
def test_pareto_never_replaces_a_json_file_it_did_not_write(env, option):
    target = env / "project" / "manifest.json"
    _refused(pareto_main, _pareto(env, option, str(target), "--overwrite", "--max-drop", "1"),
             "exists and is not a exitconfig/1 file written by this tool", env)


def test_pareto_plot_never_lies_inside_the_cache(env):
    _refused(pareto_main, _pareto(env, "--plot", str(env / "cache" / "front.png")), "lies inside CACHE", env)


# -- a file created at the target while the search runs ---------------------------------------------

@pytest.fixture
def appears(monkeypatch):
    """Make ``build_export`` (which runs after the search, before publishing) create ``target`` first."""
    import search.result as result

    made = {}

    def during_the_run(target: Path, text: str):
        original = result.build_export

        def build(*args, **kwargs):
            target.write_text(text)
            made["mtime"] = target.stat().st_mtime_ns
            return original(*args, **kwargs)
        monkeypatch.setattr(result, "build_export", build)
    return during_the_run


def test_a_file_created_during_the_search_is_not_replaced(env, appears):
    target = env / "front_new.json"
    appears(target, "someone else's\n")
    status, _, err = _run(pareto_main, _pareto(env, "--export", str(target)))
    assert status == 2 and err.strip().splitlines() == [
        f"error: --export {target}: a file appeared there while this command ran (another run?); it is not "
        "replaced; pass --overwrite to replace it"]
    assert target.read_text() == "someone else's\n"
    assert not [p for p in env.iterdir() if "exitsearch" in p.name]   # no work folder left


def test_overwrite_checks_the_owner_again_when_publishing(env, appears):
    target = env / "front_new.json"
    appears(target, '{"name": "not an export"}\n')
    status, _, err = _run(pareto_main, _pareto(env, "--export", str(target), "--overwrite"))
    assert status == 2 and "exists and is not a exitconfig/1 file written by this tool" in err
    assert target.read_text() == '{"name": "not an export"}\n'


def test_overwrite_replaces_an_export_that_appeared_and_says_so(env, appears):
    target = env / "front_new.json"
    appears(target, '{"format": "exitconfig/1", "configs": []}\n')
    status, _, err = _run(pareto_main, _pareto(env, "--export", str(target), "--overwrite"))
    assert status == 0, err
    assert err.strip().splitlines() == [f"warning: --export {target}: replacing the file that appeared there while "
                                        "this command ran (--overwrite)"]
    assert json.loads(target.read_text())["configs"]


# -- the race: two runs exporting to one new file -----------------------------------------------------

def test_two_runs_exporting_to_one_new_file_one_succeeds(env):
    target = env / "raced.json"
    cmd = [sys.executable, "-m", "search.pareto", *_pareto(env, "--export", str(target))]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
            for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in runs)
    assert [status for status, _ in results] == [0, 2], results
    lines = results[1][1].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --export {target}: ") and "Traceback" not in results[1][1]
    assert json.loads(target.read_text())["format"] == "exitconfig/1"
    assert not [p for p in env.iterdir() if "exitsearch" in p.name]


# -- the other commands that write ------------------------------------------------------------------

def test_validate_report_never_lies_inside_the_cache_or_replaces_a_foreign_json(env):
    base = ["--config", str(env / "front.json"), "--checkpoint", str(env / "ckpt.pt"), "--cache", str(env / "cache")]
    _refused(validate_main, base + ["--report", str(env / "cache" / "report.json")], "lies inside --cache", env)
    _refused(validate_main, base + ["--report", str(env / "project" / "manifest.json"), "--overwrite"],
             "exists and is not a exitvalidation/1 file written by this tool", env)
    _refused(validate_main, base + ["--report", str(env / "r.json"), "--plot", str(env / "project" / "src" / "main.py"),
                                    "--overwrite"], "unknown file type '.py'", env)


def test_validate_bundle_report_never_replaces_a_foreign_json(env):
    (env / "b").mkdir()
    _refused(validate_bundle_main, ["--bundle", str(env / "b"), "--cache", str(env / "cache"), "--report",
                                    str(env / "project" / "manifest.json"), "--overwrite"],
             "exists and is not a bundlevalidation/1 file written by this tool", env)


@pytest.mark.parametrize("target, culprit", [
    ("cache/manifest.json", "is the manifest of a folder the tool wrote (exitcache/1)"),
    ("project/src/main.py", "exists and is not a exitheads/1 checkpoint written by this tool"),
])
def test_train_never_replaces_what_is_not_a_checkpoint(env, target, culprit):
    _refused(train_main, ["--model", "resnet18", "--dataset", "fashion_mnist", "--out", str(env / target),
                          "--overwrite"], culprit, env)


def _convert(env: Path, out: Path) -> list[str]:
    s = write_records(env / "s.npz", dyce_arrays(3, 2, 30, seed=1))
    h = write_records(env / "h.npz", dyce_arrays(3, 2, 20, seed=2))
    m = write_json(env / "m.json", macs_dict(3, 2))
    return ["dyce", "--search", str(s), "--holdout", str(h), "--macs-info", str(m), "--out", str(out), "--overwrite",
            "--quiet"]


def test_convert_never_replaces_a_folder_whose_manifest_is_not_a_cache(env):
    bundle = env / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"format": "exitbundle/1", "splits": {
        "search": {"files": {"labels.npy": {}}}}}))
    (bundle / "search").mkdir()
    (bundle / "search" / "labels.npy").write_bytes(b"the user's")
    argv = _convert(env, bundle)
    _refused(convert_main, argv, "format: 'exitbundle/1': not a cache manifest (exitcache/1)", env, prefix="")


def test_convert_never_writes_a_cache_over_its_inputs(env):
    argv = _convert(env, env)
    _refused(convert_main, argv, "holds --search", env, prefix="")
