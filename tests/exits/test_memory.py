"""exits.memory: freed memory kept in the process (glibc), so repeated large batches stop faulting their pages in;
the environment's thresholds win; ExitRuntime holds it unless told not to."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
from _runtime_fixtures import tiny_model

from exits import memory
from exits.runtime import ExitRuntime

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# Four 16 MiB blocks freed together leave more free heap than glibc's adaptive trim threshold (twice the largest
# block freed), so by default each round hands them back and faults them in again.
_PATTERN = """
import json, resource, sys
import numpy as np
from exits import memory

def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(2 << 20) for _ in range(4)]
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

before = [faults() for _ in range(4)]
policy = memory.hold_freed_memory()
after = [faults() for _ in range(4)]
print(json.dumps({"before": before, "policy": policy, "after": after}))
"""


def _run_pattern(malloc_env: dict[str, str]) -> dict:
    """The pattern in a fresh process (glibc's state is process-wide), its MALLOC_ variables ``malloc_env`` only."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **malloc_env}
    out = subprocess.run([sys.executable, "-c", _PATTERN], capture_output=True, text=True, check=True, env=env,
                         timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_held_memory_stops_the_refaulting_of_freed_blocks():
    got = _run_pattern({})
    assert got["policy"] == {"policy": "held", "mmap_threshold": memory.MMAP_THRESHOLD,
                             "trim_threshold": memory.TRIM_THRESHOLD}
    assert min(got["before"][1:]) > 500          # glibc's default: the blocks go back and come again every round
    assert max(got["after"][1:]) < 50            # held: the first round takes them, the others reuse them


@glibc
def test_thresholds_set_in_the_environment_are_left_alone():
    got = _run_pattern({"MALLOC_TRIM_THRESHOLD_": "1048576"})
    assert got["policy"] == {"policy": "environment", "mmap_threshold": None, "trim_threshold": "1048576"}


def test_the_runtime_holds_freed_memory_unless_told_not_to(monkeypatch):
    calls = []
    monkeypatch.setattr("exits.runtime.hold_freed_memory", lambda: calls.append(1) or {"policy": "held"})
    monkeypatch.setattr("exits.runtime.memory_policy", lambda: {"policy": "default"})
    model = tiny_model()
    assert ExitRuntime(model, None, hold_memory=False).memory == {"policy": "default"} and not calls
    assert ExitRuntime(model, None).memory == {"policy": "held"} and calls == [1]
