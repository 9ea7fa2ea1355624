"""Fuzz suite over the command lines: mutated argument vectors for every command, run in-process.

Each case starts from a valid argument vector of one command (its inputs in ``tests/fuzz/_world.py``, its
outputs in the case's own fresh folder), applies one or two mutations drawn from the registry of kinds in
``tests/fuzz/_argv.py`` (38 kinds: the vector's shape, numbers, paths read, paths written, names), and runs
``main(argv)``. The property: exit status 0 or 2, no traceback on stderr, and no file of the inputs created,
changed or removed (names, sizes and SHA-256 of everything under the world's folder before and after); a case
whose only mutation is of a kind that cannot be right (``MUST_REFUSE``: a missing input, an output that is an
input, an unknown option, ...) ends in status 2, saying why. Documents (``exitconfig/1``,
``exitbundle/1``) are mutated in ``test_document_fuzz.py``; together the two registries hold 48 kinds.

Default profile: derandomized (the same examples every run); ``EXITSEARCH_FUZZ=long``: ten times the
examples, new ones each run.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_cache.convert import main as convert_main
from data_cache.dump import main as dump_main
from data_cache.validate import main as cache_validate_main
from exits.check import main as check_main
from exits.export_bundle import main as export_bundle_main
from exits.profile import main as profile_main
from exits.train import main as train_main
from exits.validate import main as validate_main
from exits.validate_bundle import main as validate_bundle_main
from search.pareto import main as pareto_main
from tests.fuzz._argv import ARGV_KINDS, MUST_REFUSE, Case, Command, flatten, items_of, kinds_for
from tests.fuzz._fuzz import fuzz_settings, run_main, snapshot


def _profile_base(world, out: Path) -> list[str]:
    """``exits.profile`` stores its table inside the cache it profiles: the case gets its own copy."""
    cache = out.parent / "cache"
    shutil.copytree(world.cache, cache)
    return ["--checkpoint", str(world.ckpt), "--cache", str(cache), "--name", "cpu-fuzz", "--device", "cpu",
            "--threads", "1", "--batch-size", "2", "--rounds", "1", "--min-time", "0.001", "--quiet"]


COMMANDS = {c.name: c for c in [
    Command("search.pareto", pareto_main,
            lambda w, o: [str(w.syn), "--methods", "dp", "--no-progress", "--export", str(o / "f.json")],
            numbers=("--max-drop", "--budget", "--risk", "--calibration-fraction", "--evaluations", "--time-limit",
                     "--seed", "--pop-size", "--subsample", "--subsample-above", "--chunk-size", "--memory-limit"),
            work=("--evaluations", "--time-limit", "--pop-size"),
            inputs=("#pos",), outputs={"--export": "file", "--export-choice": "file", "--plot": "file"},
            words=("--methods", "--objective", "--score", "--bound", "--encoding", "--sampler"),
            flags=("--uncertified", "--show-uncertified", "--overwrite", "--standalone", "--skip-integrity-check")),
    Command("data_cache.validate", cache_validate_main, lambda w, o: [str(w.syn), "--quiet"],
            inputs=("#pos",), flags=("--skip-integrity-check", "--no-checksums")),
    Command("data_cache.convert", convert_main,
            lambda w, o: ["dyce", "--search", str(w.dyce / "s.npz"), "--holdout", str(w.dyce / "h.npz"),
                          "--macs-info", str(w.dyce / "m.json"), "--out", str(o / "c"), "--quiet"],
            numbers=("--n-classes",), inputs=("--search", "--holdout", "--macs-info"), outputs={"--out": "folder"},
            words=("#pos", "--layout"), flags=("--overwrite",)),
    Command("data_cache.dump", dump_main,
            lambda w, o: ["--model", "resnet10t", "--checkpoint", str(w.ckpt), "--dataset", "fashion_mnist",
                          "--data-root", str(w.fm), "--out", str(o / "d"), "--k", "2", "--max-samples", "8",
                          "--device", "cpu", "--quiet"],
            numbers=("--k", "--batch-size", "--latency", "--search-fraction", "--seed", "--calibration-size",
                     "--max-samples", "--input-size"),
            work=("--latency",), inputs=("--checkpoint", "--data-root"), outputs={"--out": "folder"},
            words=("--model", "--dataset", "--device"), flags=("--logits", "--resume", "--overwrite")),
    Command("exits.check", check_main, lambda w, o: ["resnet10t", "--input-size", "16", "--num-classes", "10"],
            numbers=("--input-size", "--num-classes", "--threads"), work=("--threads",),
            words=("#pos", "--points")),
    Command("exits.train", train_main,
            lambda w, o: ["--model", "resnet10t", "--dataset", "fashion_mnist", "--data-root", str(w.fm),
                          "--out", str(o / "t.pt"), "--epochs", "1", "--train-backbone-epochs", "1",
                          "--input-size", "16", "--max-samples", "16", "--batch-size", "8", "--device", "cpu",
                          "--quiet"],
            numbers=("--epochs", "--train-backbone-epochs", "--batch-size", "--lr", "--backbone-lr",
                     "--weight-decay", "--warmup-epochs", "--distill", "--temperature", "--search-fraction",
                     "--calibration-size", "--max-samples", "--seed", "--input-size", "--crop-pct", "--num-classes"),
            work=("--epochs", "--train-backbone-epochs", "--warmup-epochs"),
            inputs=("--data-root",), outputs={"--out": "file"},
            words=("--model", "--dataset", "--points", "--heads", "--device"),
            flags=("--overwrite", "--resume", "--no-amp")),
    Command("exits.validate", validate_main,
            lambda w, o: ["--config", str(w.front), "--checkpoint", str(w.ckpt), "--dataset", "fashion_mnist",
                          "--data-root", str(w.fm), "--cache", str(w.cache), "--no-timing", "--quiet",
                          "--device", "cpu", "--report", str(o / "r.json")],
            numbers=("--batch-size", "--timing-samples", "--latency-samples", "--rounds", "--tolerance",
                     "--threads", "--max-configs"),
            work=("--timing-samples", "--latency-samples", "--rounds", "--threads"),
            inputs=("--config", "--checkpoint", "--data-root", "--cache"),
            outputs={"--report": "file", "--plot": "file"},
            words=("--split", "--id", "--dataset", "--model", "--device"),
            flags=("--all", "--overwrite", "--no-latency", "--channels-last", "--skip-integrity-check")),
    Command("exits.export_bundle", export_bundle_main,
            lambda w, o: ["--checkpoint", str(w.ckpt), "--config", str(w.front), "--cache", str(w.cache),
                          "--out", str(o / "b"), "--exporter", "torchscript", "--quiet"],
            numbers=("--opset", "--rtol", "--atol"), inputs=("--checkpoint", "--config", "--cache"),
            outputs={"--out": "folder"}, words=("--id", "--model", "--exporter"), flags=("--no-base", "--overwrite")),
    Command("exits.validate_bundle", validate_bundle_main,
            lambda w, o: ["--bundle", str(w.bundle), "--cache", str(w.cache), "--data-root", str(w.fm),
                          "--no-timing", "--quiet", "--report", str(o / "vb.json")],
            numbers=("--threads", "--batch-size", "--timing-samples", "--latency-samples", "--rounds", "--tolerance"),
            work=("--threads", "--timing-samples", "--latency-samples", "--rounds"),
            inputs=("--bundle", "--cache", "--data-root"), outputs={"--report": "file"},
            words=("--split", "--id", "--dataset"), flags=("--overwrite", "--no-latency")),
    Command("exits.profile", profile_main, _profile_base,
            numbers=("--threads", "--batch-size", "--rounds", "--min-time", "--seed"),
            work=("--threads", "--batch-size", "--rounds", "--min-time"), inputs=("--checkpoint", "--cache"),
            words=("--name", "--device", "--runtime", "--score"), flags=("--overwrite", "--skip-integrity-check")),
]}

EXAMPLES = {"search.pareto": 30, "data_cache.validate": 25, "data_cache.convert": 30, "data_cache.dump": 20,
            "exits.check": 15, "exits.train": 15, "exits.validate": 20, "exits.export_bundle": 15,
            "exits.validate_bundle": 20, "exits.profile": 10}


COLLECT = os.environ.get("EXITSEARCH_FUZZ_COLLECT")


def _collect(command: Command, kinds: list[str], argv: list[str], result, changed: bool) -> None:
    """Exploration (``EXITSEARCH_FUZZ_COLLECT=FILE``): every failing case appended to FILE, none raised."""
    single = len(kinds) == 1 and kinds[0] in MUST_REFUSE and result.status == 0
    if result.status in (0, 2) and "Traceback" not in result.err and not changed and not single:
        return
    last = (result.err.strip().splitlines() or [""])[-1]
    with open(COLLECT, "a") as f:
        f.write(json.dumps({"command": command.name, "kinds": kinds, "argv": argv, "status": result.status,
                            "changed": changed, "last": last[:300]}) + "\n")


def check_case(command: Command, world, data) -> None:
    """One mutated command line: status 0 or 2, no traceback, nothing outside its own folder touched."""
    import torch

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="fuzzcli") as tmp:
        place = Path(tmp)
        case = Case(command, world, place, data.draw)
        items = items_of(command.base(world, place / "out"))
        (place / "out").mkdir()
        drawn = data.draw(st.lists(st.sampled_from(kinds_for(command)), min_size=1, max_size=2), label="kinds")
        kinds = []
        for name in drawn:
            mutated = ARGV_KINDS[name].apply(items, case)
            if mutated is not None:
                items, kinds = mutated, kinds + [name]
        argv = flatten(items)
        before = snapshot([world.root])
        result = run_main(command.main, argv)
        after = snapshot([world.root])
        torch.set_num_threads(threads)
        shutil.rmtree(place, ignore_errors=True)
    if COLLECT:
        _collect(command, kinds, argv, result, before != after)
        return
    assert result.status in (0, 2), (result.status, argv, result.err[-2000:])
    assert "Traceback" not in result.err, (argv, result.err[-2000:])
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, (argv, changed[:5])
    if len(kinds) == 1 and kinds[0] in MUST_REFUSE:
        assert result.status == 2, (kinds, argv, result.out[-500:])
    if result.status == 2:
        assert result.err.strip(), (argv, "status 2 without a word")


def _fuzz_test(name: str):
    command = COMMANDS[name]

    @fuzz_settings(EXAMPLES[name])
    @given(data=st.data())
    def test(world, data):
        check_case(command, world, data)
    test.__name__ = f"test_fuzz_{name.replace('.', '_')}"
    test.__doc__ = f"``{name}`` under mutated argument vectors ({EXAMPLES[name]} examples by default)."
    return test


test_fuzz_search_pareto = _fuzz_test("search.pareto")
test_fuzz_data_cache_validate = _fuzz_test("data_cache.validate")
test_fuzz_data_cache_convert = _fuzz_test("data_cache.convert")
test_fuzz_data_cache_dump = _fuzz_test("data_cache.dump")
test_fuzz_exits_check = _fuzz_test("exits.check")
test_fuzz_exits_train = _fuzz_test("exits.train")
test_fuzz_exits_validate = _fuzz_test("exits.validate")
test_fuzz_exits_export_bundle = _fuzz_test("exits.export_bundle")
test_fuzz_exits_validate_bundle = _fuzz_test("exits.validate_bundle")
test_fuzz_exits_profile = _fuzz_test("exits.profile")


def test_every_command_is_fuzzed():
    assert set(EXAMPLES) == set(COMMANDS)
    assert {c.main.__module__ for c in COMMANDS.values()} == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_nul_byte_in_an_argument_is_one_line(world, name, tmp_path):
    """Found by the fuzzer: a NUL byte in a path ended in ``ValueError: embedded null byte`` (convert, dump)."""
    argv = COMMANDS[name].base(world, tmp_path) + ["--data-root" if name == "data_cache.dump" else "--x", "a\0b"]
    result = run_main(COMMANDS[name].main, argv)
    assert result.status == 2 and result.err == "error: argument 'a'...: holds a NUL byte\n", result.err


@pytest.mark.parametrize("name, option", [("data_cache.dump", "--out"), ("exits.train", "--out"),
                                          ("exits.validate", "--report"), ("exits.validate_bundle", "--report")])
def test_an_output_inside_the_data_root_is_refused(world, name, option, tmp_path):
    """Found by the fuzzer: ``data_cache.dump --out DATA_ROOT/x`` wrote a cache into the dataset folder it read."""
    target = world.fm / ("x" if option == "--out" and name == "data_cache.dump" else "x.json")
    argv = COMMANDS[name].base(world, tmp_path) + [option, str(target)]
    before = snapshot([world.root])
    result = run_main(COMMANDS[name].main, argv)
    assert result.status == 2 and f"lies inside --data-root {world.fm}" in result.err, result.err
    assert snapshot([world.root]) == before


@pytest.mark.parametrize("name", ["data_cache.dump", "exits.train", "exits.validate", "exits.validate_bundle"])
def test_a_data_root_name_too_long_is_one_line(world, name, tmp_path):
    """Found by the fuzzer: ``--data-root`` with a 300-character name ended in ``OSError: File name too long``."""
    argv = COMMANDS[name].base(world, tmp_path) + ["--data-root", str(tmp_path / ("n" * 300))]
    result = run_main(COMMANDS[name].main, argv)
    assert result.status == 2 and "cannot read the data root (File name too long)" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_checkpoint_name_too_long_is_one_line(world, tmp_path):
    """Found by the fuzzer: ``exits.export_bundle --checkpoint`` with a 300-character name: an OSError traceback."""
    argv = COMMANDS["exits.export_bundle"].base(world, tmp_path) + ["--checkpoint", str(tmp_path / ("n" * 300))]
    result = run_main(export_bundle_main, argv)
    assert result.status == 2 and result.err.endswith("cannot read the checkpoint (File name too long)\n"), result.err


@pytest.mark.parametrize("name, option", [("exits.validate", "--batch-size"), ("exits.validate_bundle", "--batch-size"),
                                          ("data_cache.dump", "--k"), ("search.pareto", "--chunk-size")])
def test_an_integer_beyond_the_machine_is_one_line(world, name, option, tmp_path):
    """Found by the fuzzer: ``exits.validate --batch-size 99999999999999999999999``: a ValueError from islice."""
    result = run_main(COMMANDS[name].main, COMMANDS[name].base(world, tmp_path) + [option, "9" * 23])
    assert result.status == 2 and f"argument {option}: must be" in result.err, result.err
    assert f"no larger than {sys.maxsize}, got {'9' * 23}" in result.err


def test_a_bundle_name_too_long_is_one_line(world, tmp_path):
    """Found by the fuzzer: ``exits.validate_bundle --bundle`` with a 300-character name: an OSError traceback."""
    argv = COMMANDS["exits.validate_bundle"].base(world, tmp_path) + ["--bundle", str(tmp_path / ("n" * 300))]
    result = run_main(validate_bundle_main, argv)
    assert result.status == 2, result.err
    assert result.err.endswith("cannot read the bundle folder (File name too long)\n"), result.err
