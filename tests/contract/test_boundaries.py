"""Import boundaries: the numpy side and the bundle load no torch; the contract loads nothing of the project;
the bundle loads nothing of the project but the contract. Each in a fresh interpreter."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("search", "data_cache", "exits", "bundle", "contract")
TORCH_SIDE = ("torch", "torchvision", "timm", "onnx", "onnxscript")


def loaded_after(imports: str) -> list[str]:
    """Top-level names of the modules loaded by ``imports`` in a fresh interpreter."""
    code = f"import sys\n{imports}\nimport json\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("imports", [
    "import bundle, contract, search, data_cache",
    "import data_cache.dump, data_cache.cli, search.pareto, contract.costs, bundle.router",
])
def test_the_numpy_side_and_the_bundle_load_no_torch(imports):
    loaded = loaded_after(imports)
    assert {"search", "data_cache", "bundle", "contract"} <= set(loaded)
    assert not set(loaded) & set(TORCH_SIDE) and "exits" not in loaded


def test_the_contract_loads_nothing_of_the_project():
    loaded = loaded_after("import contract, contract.costs")
    assert [m for m in loaded if m in PROJECT] == ["contract"]
    assert not {"scipy", "optuna", "pymoo", "matplotlib", *TORCH_SIDE} & set(loaded)


def test_the_bundle_loads_the_contract_and_nothing_else_of_the_project():
    loaded = loaded_after("import bundle, bundle.router")
    assert sorted(m for m in loaded if m in PROJECT) == ["bundle", "contract"]
