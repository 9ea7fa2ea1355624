"""Signals that end a command.

SIGTERM ends a command like an exception (SystemExit 143), so ``finally`` blocks and context managers remove
temporary files and stop workers on the way out. Python may swallow that exception when the signal lands in
a garbage-collector callback, so the request is also remembered: every search loop checks it
(:func:`raise_if_terminating`, via ``Budget.exhausted``), and a process still alive ``STOP_SECONDS`` after
the signal ends at once. A short section that must not be cut half-way (a storage transaction, publishing a
set of files) holds SIGINT and SIGTERM until it ends (:func:`interrupts_deferred`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["exit_on_sigterm", "interrupts_deferred", "raise_if_terminating", "STOP_SECONDS"]

STOP_SECONDS = 30.0  # a command told to stop that has not ended by then is ended without cleanup
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_terminating: list[int] = []  # the signal that asked this process to stop, once one has


def _stop_now() -> None:
    print(
        f"error: still running {STOP_SECONDS:g} s after SIGTERM; stopped without cleanup",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signal.SIGTERM)


def exit_on_sigterm(signum, frame) -> None:
    """A SIGTERM handler: SystemExit(143), remembered, with a last-resort stop ``STOP_SECONDS`` later."""
    if not _terminating:
        _terminating.append(signum)
        timer = threading.Timer(STOP_SECONDS, _stop_now)
        timer.daemon = True
        timer.start()
    raise SystemExit(128 + signum)


def raise_if_terminating() -> None:
    """SystemExit(143) when SIGTERM arrived and its exception was swallowed on the way (a long loop's check)."""
    if _terminating:
        raise SystemExit(128 + _terminating[0])


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run the block whole: SIGINT or SIGTERM arriving inside it is acted on (its handler called) when it ends.

    An exception raised by a signal half-way through a storage call can leave a trial told but not
    counted, or a database locked for the cleanup that follows. Outside the main thread (where Python
    runs no signal handler) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {}
    for signum in _SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):  # SIG_DFL, SIG_IGN and handlers set outside Python are left alone
            signal.signal(signum, lambda s, f: pending.append(s))
            previous[int(signum)] = handler
    try:
        yield
    finally:
        for number, held in previous.items():
            signal.signal(number, held)
        if pending:
            previous[pending[0]](pending[0], None)
