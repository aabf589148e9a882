"""A dedicated thread per stage for blocking model calls.

One thread per stage serializes calls into a model that is not thread-safe, and
keeps the event loop free. Iterators are pulled one item per hop, so asyncio
cancellation stops a stage between chunks; an abandoned iterator is closed on
the same thread, after any call still running there.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Worker:
    def __init__(self, name: str):
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cascade-{name}")

    async def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def iterate(self, make_iter: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        it = await self.call(make_iter)
        try:
            while True:
                item = await self.call(next, it, _DONE)
                if item is _DONE:
                    return
                yield item  # type: ignore[misc]
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                self._pool.submit(close)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
