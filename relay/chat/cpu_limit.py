"""A CPU-time limit for checks that run client-chosen regular expressions on the event loop.

A JSON Schema's `pattern` (or `patternProperties`) is a regular expression the client picks, and
the string it is matched against is an answer the client can ask the model for: `^(a+)+$` against
forty a's and a `!` backtracks for minutes, with every other request waiting on the event loop.
Python's regex engine checks for signals while it matches, so a CPU-time timer (SIGVTALRM, which
nothing else in relay uses) can stop it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class CpuLimitExceeded(Exception):
    """The check used more CPU time than it was given."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise CpuLimitExceeded


@contextmanager
def cpu_limit(seconds: float) -> Iterator[None]:
    """Raise CpuLimitExceeded in the block once the process has spent `seconds` of CPU time in it.

    Signals reach only the main thread, where relay's event loop runs; elsewhere (and on Windows,
    which has no CPU-time timers) the block runs without a limit. A timer that fires as the block
    ends still raises: callers catch around it.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _stop)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)
