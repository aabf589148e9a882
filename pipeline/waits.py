"""Waiting with a time limit without losing a cancellation.

``asyncio.wait_for`` in Python 3.11 returns the awaited result when the waiting task is
cancelled just as that result arrives: the cancellation is lost (fixed in 3.12, where
``wait_for`` is built on ``asyncio.timeout``). A loop that takes audio every 10 ms meets
that moment: a Ctrl-C then left the live session running (its live tests failed on it,
1 whole-file run in 3, 2026-11-30). ``asyncio.timeout`` counts cancellations and loses
none; an item the limit interrupts stays in the queue."""
from __future__ import annotations

import asyncio
from typing import Any


async def get_within(queue: asyncio.Queue, timeout_s: float) -> Any:
    """The queue's next item; TimeoutError when none came within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        return await queue.get()
