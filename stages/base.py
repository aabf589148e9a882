"""The one stage shape.

A stage is built from its config and does no heavy work in ``__init__``; it
loads models in ``async start()``, transforms an async iterator of events into an
async iterator of events with ``process()``, and releases in ``async aclose()``.
"""
from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np

from pipeline import clock
from pipeline.events import AudioChunk, Sentence
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


class SentenceTTS(Stage[Sentence, AudioChunk]):
    """A TTS backend that synthesizes one sentence at a time on its worker thread
    (cancellation stops between sentences). Subclasses give ``synthesize`` and
    ``sample_rate``."""

    kind = "tts"
    sample_rate: int

    @abc.abstractmethod
    def synthesize(self, text: str) -> "np.ndarray":
        """Blocking: the whole text as mono float32 at ``sample_rate``."""

    async def warmup(self) -> None:
        await self.worker.call(self.synthesize, "Hello there.")

    async def process(self, events: AsyncIterator[Sentence]) -> AsyncIterator[AudioChunk]:
        async for sentence in events:
            audio = await self.worker.call(self.synthesize, sentence.text)
            if len(audio):
                yield AudioChunk(sentence.turn_id, clock.now(), samples=audio,
                                 sample_rate=self.sample_rate, sentence_index=sentence.index,
                                 text=sentence.text)
