"""The valid inputs of the command-line fuzz suites, built once per test process (tests/fuzz/_world.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    import torch

    from tests.fuzz._world import build_world

    n = torch.get_num_threads()
    torch.set_num_threads(1)            # pytest -n 2 on 2 cores: a second intra-op thread only spins
    yield build_world(tmp_path_factory.mktemp("world"))
    torch.set_num_threads(n)
