"""data_cache.outputs: the output policy's helpers called directly (the command lines are in tests/cli)."""
from __future__ import annotations

import signal

from data_cache.outputs import cli_entry


def test_cli_entry_gives_back_the_callers_sigterm_handler():
    """A command run in-process (a test, the pipeline) leaves SIGTERM as it found it (regression: the
    handler that turns SIGTERM into SystemExit stayed installed in the caller)."""
    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        seen = []
        assert cli_entry(lambda: seen.append(signal.getsignal(signal.SIGTERM)) or 3) == 3
        assert seen[0] is not mine                      # the command ran with its own handler
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
