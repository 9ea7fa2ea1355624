"""Shared fixtures of the contract tests: the runtime and bundle fixtures of tests/exits and tests/bundle."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TESTS / "exits"))  # _runtime_fixtures
sys.path.insert(0, str(_TESTS / "bundle"))  # _bundles

_HAS_TORCH = importlib.util.find_spec("torch") is not None
# Modules that import torch: left out where it is not installed (the numpy-side run, `make test-min`).
collect_ignore = [] if _HAS_TORCH else ["test_energy.py", "test_parity.py"]


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """One torch thread per test process (two cores shared: a second thread only spins)."""
    if not _HAS_TORCH:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
