"""exits.memory: freed memory kept in the process (glibc), so repeated large batches stop faulting their pages in;
malloc settings of the environment win; ExitRuntime holds it unless told not to."""

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

# Blocks of 48 MiB: above any mmap threshold glibc uses by default, so each is mapped on malloc, unmapped on free
# and faulted in again the next time.
_PATTERN = """
import json, resource, sys
import numpy as np
from exits import memory

def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [np.ones(6 << 20) for _ in range(2)]
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

before = [faults() for _ in range(4)]
policy = memory.hold_freed_memory()
after = [faults() for _ in range(4)]
print(json.dumps({"before": before, "policy": policy, "after": after}))
"""


def _run_pattern(malloc_env: dict[str, str]) -> dict:
    """The pattern in a fresh process (glibc's state is process-wide), its malloc settings ``malloc_env`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(malloc_env)
    out = subprocess.run([sys.executable, "-c", _PATTERN], capture_output=True, text=True, check=True, env=env,
                         timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_held_memory_stops_the_refaulting_of_freed_blocks():
    got = _run_pattern({})
    assert got["policy"] == {"policy": "held", "settings": memory.HELD}
    assert min(got["before"][1:]) > 500  # glibc's default: the blocks go back and come again every round
    assert max(got["after"][1:]) < 50  # held: the first round takes them, the others reuse them


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_TRIM_THRESHOLD_": "1048576"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}])
def test_malloc_settings_of_the_environment_are_left_alone(env):
    got = _run_pattern(env)
    assert got["policy"] == {"policy": "environment", "settings": env}
    assert min(got["after"][1:]) > 500  # neither keeps the heap from trimming, and the module added nothing


def test_the_runtime_holds_freed_memory_unless_told_not_to(monkeypatch):
    calls = []
    monkeypatch.setattr("exits.runtime.hold_freed_memory", lambda: calls.append(1) or {"policy": "held"})
    monkeypatch.setattr("exits.runtime.memory_policy", lambda: {"policy": "default"})
    model = tiny_model()
    assert ExitRuntime(model, None, hold_memory=False).memory == {"policy": "default"} and not calls
    assert ExitRuntime(model, None).memory == {"policy": "held"} and calls == [1]
