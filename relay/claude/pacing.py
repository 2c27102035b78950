"""Upstream reads gathered while answers stream fast.

claude.ai flushes every event on its own, so a relay that keeps up wakes for every few events and
spends most of its CPU waking (the event loop's poll, a network read and a client write per
wake-up, and on a virtual machine the cost of being woken at all). Measured on two cores with 40
streams: with a core to itself the relay woke for every 14 events and spent 2.5 times the CPU per
event it spent when it shared a core with the upstream and found about 60 waiting. So while data
keeps arriving, the loop handles its upstream reads at most once per interval and rests in
between: everything that arrived meanwhile is read, decoded and written to clients in one pass.
"""

from __future__ import annotations

import asyncio
import time

# A stream's first pieces never make the loop rest (only a long, fast answer is worth gathering):
# a lone stream's first frame, and a short answer whole, go out as soon as they arrive.
UNPACED_PIECES = 32


class ReadPacer:
    """One per upstream client, told of every piece of a long upstream body (curl's write callback).

    When data keeps coming sooner than `interval` after the loop last rested (two rounds of reads
    in a row), the loop sleeps for the rest of the interval, once per round, after the frames the
    round woke went out. Nothing is held when data comes slower than the interval (claude.ai's
    usual pace for a few streams), and a loop busy for longer than the interval never rests: no
    client waits more than `interval` for a frame. `interval` 0 turns it off.
    """

    __slots__ = ("_armed", "_interval", "_quick", "_rested")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._armed = False
        self._quick = False  # the last round came within the interval too
        self._rested = 0.0  # when the last rest ended (time.monotonic)

    def note(self) -> None:
        """Data arrived: rest once the frames it wakes have gone out (they are scheduled first)."""
        if not self._armed and self._interval > 0:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._rest)

    def _rest(self) -> None:
        self._armed = False
        rest = self._interval - (time.monotonic() - self._rested)
        if rest > 0 and self._quick:
            # Blocking on purpose: the loop stays off the CPU while upstream data accumulates.
            time.sleep(rest)
        self._quick = rest > 0
        self._rested = time.monotonic()
