"""Shared fixtures of the bundle tests: one torch thread per test process; the runtime fixtures of tests/exits."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exits"))  # _runtime_fixtures


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """pytest -n 2 on 2 cores: a second intra-op thread per worker only spins; one is much faster."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
