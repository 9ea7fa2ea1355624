"""``exitsearch``: the dispatcher runs each subcommand's own ``main`` in-process, lazily."""
from __future__ import annotations

import importlib
import importlib.util

import pytest

from data_cache import cli, save_cache
from data_cache.cli import COMMANDS, main
from data_cache.synthetic import make_synthetic_cache

# The torch-side subcommands' modules import torch (absent in the numpy-side run, `make test-min`).
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")


@needs_torch
def test_every_subcommand_names_a_module_with_a_main():
    for name, (module, _) in COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, name
    assert set(COMMANDS) >= {"search", "train", "dump", "validate", "export-bundle", "validate-bundle", "check",
                             "validate-cache"}


def test_search_is_python_m_search_pareto(capsys):
    from search.pareto import main as pareto_main

    assert pareto_main(["--methods", "list"]) == 0
    direct = capsys.readouterr().out
    assert main(["search", "--methods", "list"]) == 0
    assert capsys.readouterr().out == direct and direct


def test_validate_cache_runs_on_a_cache(tmp_path, capsys):
    save_cache(tmp_path / "c", make_synthetic_cache(200, 2, seed=1))
    assert main(["validate-cache", str(tmp_path / "c")]) == 0
    assert "search" in capsys.readouterr().out
    assert main(["validate-cache", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.endswith("missing: not a folder\n")


@needs_torch
def test_dump_help_goes_through_the_torch_side(capsys):
    with pytest.raises(SystemExit) as info:
        main(["dump", "--help"])
    assert info.value.code == 0 and "python -m data_cache.dump" in capsys.readouterr().out


def test_usage_and_unknown_commands(capsys):
    assert main(["--help"]) == 0 and "validate-bundle" in capsys.readouterr().out
    assert main([]) == 2 and capsys.readouterr().err.startswith("usage: exitsearch COMMAND")
    assert main(["serach"]) == 2
    assert capsys.readouterr().err == f"error: unknown command 'serach'; choose one of {list(COMMANDS)}\n"


@pytest.mark.parametrize("missing, extra", [("torch", "torch"), ("onnxruntime", "bundle")])
def test_a_side_not_installed_is_one_line_naming_the_extra(monkeypatch, capsys, missing, extra):
    def absent(name, package=None):
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(importlib, "import_module", absent)
    assert main(["train", "--help"]) == 2
    assert capsys.readouterr().err == (f"error: exitsearch train needs {missing}, which is not installed: "
                                       f"pip install 'exitsearch[{extra}]'\n")
    from data_cache.dump import main as dump_main

    assert dump_main(["--help"]) == 2
    assert f"python -m data_cache.dump needs {missing}" in capsys.readouterr().err


def test_setup_cfg_declares_the_command_and_the_extras_it_names():
    import configparser
    import re
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].split() == ["exitsearch", "=", "data_cache.cli:main"]
    extras = {k: set(re.findall(r"^([A-Za-z0-9_.-]+)", v, re.M)) for k, v in cfg["options.extras_require"].items()}
    for package, extra in cli._EXTRA.items():
        assert package in extras[extra], (package, extra)
    assert extras["bundle"] == {"onnxruntime"}       # a deployment target: numpy + onnxruntime, nothing else
    assert set(re.findall(r"^([A-Za-z0-9_.-]+)", cfg["options"]["install_requires"], re.M)) == {"numpy"}
