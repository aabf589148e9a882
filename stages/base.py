"""The one stage shape.

A stage is built from its config and does no heavy work in ``__init__``; it
loads models in ``async start()``, transforms an async iterator of events into an
async iterator of events with ``process()``, and releases in ``async aclose()``.
"""
from __future__ import annotations

import abc
import time
from typing import Any, AsyncIterator, ClassVar, Generic, TypeVar

from pipeline.worker import Worker

In = TypeVar("In")
Out = TypeVar("Out")


class Stage(abc.ABC, Generic[In, Out]):
    kind: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config
        self.worker = Worker(self.kind)
        self.load_s: float | None = None

    async def start(self) -> None:
        t0 = time.perf_counter()
        await self.worker.call(self._load)
        self.load_s = time.perf_counter() - t0

    @abc.abstractmethod
    def _load(self) -> None:
        """Blocking model load, run on the stage's worker thread."""

    async def warmup(self) -> None:
        """Run one tiny request so the first real turn is as fast as later ones."""

    @abc.abstractmethod
    def process(self, events: AsyncIterator[In]) -> AsyncIterator[Out]:
        ...

    async def aclose(self) -> None:
        self.worker.shutdown()

    def describe(self) -> str:
        return type(self).__name__
