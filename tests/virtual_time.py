"""An asyncio event loop on virtual time, for exact orchestration tests.

When nothing is ready to run, the loop jumps its clock to the next timer instead of
sleeping, so a scripted 0.1 s ASR takes exactly 0.1 s of loop time and no real
time. While a worker thread is busy the loop waits for it for real, without moving
its clock: thread work is instantaneous in virtual time, and results do not depend
on how loaded the machine is.
"""
from __future__ import annotations

import asyncio
import selectors
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


class _Selector(selectors.BaseSelector):
    def __init__(self, loop: "VirtualTimeLoop"):
        self._loop = loop
        self._inner = selectors.DefaultSelector()

    def register(self, fileobj, events, data=None):
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._inner.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._inner.modify(fileobj, events, data)

    def get_map(self):
        return self._inner.get_map()

    def close(self):
        self._inner.close()

    def select(self, timeout=None):
        if self._loop.threads_busy:  # a worker thread's result is due: wait for it
            return self._inner.select(timeout if timeout is None else min(timeout, 0.05))
        events = self._inner.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only I/O can wake us
            return self._inner.select(None)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        self.threads_busy = 0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def run_in_executor(self, executor, func, *args):
        fut = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1

        def done(_):
            self.threads_busy -= 1
        fut.add_done_callback(done)
        return fut


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
