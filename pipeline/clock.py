"""The session clock: seconds since the session started.

Real-time sessions follow the monotonic clock. A fast (``--fast``) file session
skips idle waits: when the input feeder would sleep while no turn is being
processed, the clock jumps ahead instead, so silences cost nothing while every
turn's processing is still timed for real.

The current clock is held in a context variable, so stages stamp their events
with :func:`now` without knowing which clock the session uses.
"""
from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Callable


class Clock:
    def __init__(self, fast: bool = False, source: Callable[[], float] = time.monotonic):
        """``source``: seconds on a monotonic clock (an event loop's virtual time in tests)."""
        self.fast = fast
        self._source = source
        self._t0 = source()
        self._skipped = 0.0

    def now(self) -> float:
        return self._source() - self._t0 + self._skipped

    async def sleep_until(self, t: float, skippable: bool = False) -> None:
        delay = t - self.now()
        if delay <= 0:
            await asyncio.sleep(0)
        elif self.fast and skippable:
            self._skipped += delay
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(delay)


_current: ContextVar[Clock] = ContextVar("cascade_clock", default=Clock())


def use(clock: Clock) -> None:
    _current.set(clock)


def current() -> Clock:
    return _current.get()


def now() -> float:
    return _current.get().now()
