"""Shared fixtures of the exits tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """pytest -n 2 on 2 cores: a second intra-op thread per worker only spins; one is much faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
