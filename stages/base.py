"""The stage shapes.

A stage is built from its config and does no heavy work in ``__init__``; it
loads models in ``async start()`` and releases in ``async aclose()``. Each kind
has one narrow call the orchestrator uses:

- VAD: ``process(frames)``, an async stream of audio frames in, speech events out;
- ASR: ``await recognize(ended)``, one utterance in, one :class:`Transcript` out;
- LLM: ``generate(request)``, one prompt in, an async stream of :class:`TextDelta` out;
- TTS: ``await speak(sentence)``, one chunk of text in, its :class:`AudioChunk` out
  (``speak_pieces``: the same audio, possibly in pieces, the first as soon as it can be).

``process()`` turns a stream of inputs into a stream of outputs with that call,
for tools that chain stages by hand (``pipeline check``, tests).
"""
from __future__ import annotations

import abc
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, AsyncIterator, ClassVar, Generic, Iterator, Optional,
                    TypeVar)

if TYPE_CHECKING:
    import numpy as np

from pipeline import clock
from pipeline.events import AudioChunk, LLMRequest, Sentence, SpeechEnded, TextDelta, Transcript
from pipeline.worker import Worker

In = TypeVar("In")
Out = TypeVar("Out")


class Stage(abc.ABC, Generic[In, Out]):
    kind: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config
        self.worker = Worker(self.kind)
        self.load_s: float | None = None

    # its load times work on this machine (the ASR's thread counts): it loads alone, after
    # the others, so that their loading does not weigh on the timing
    loads_alone = False

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


class ASRStage(Stage[SpeechEnded, Transcript]):
    kind = "asr"

    @abc.abstractmethod
    async def recognize(self, ended: SpeechEnded) -> Transcript:
        """The utterance's transcript (empty text: no words)."""

    async def process(self, events: AsyncIterator[SpeechEnded]) -> AsyncIterator[Transcript]:
        async for ended in events:
            yield await self.recognize(ended)


class LLMStage(Stage[LLMRequest, TextDelta]):
    kind = "llm"

    @abc.abstractmethod
    def generate(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        """The reply to ``request``, piece by piece as it is written."""

    @abc.abstractmethod
    def count_tokens(self, messages) -> int:
        """Tokens of these messages as the model sees them (prompt truncation)."""

    async def process(self, events: AsyncIterator[LLMRequest]) -> AsyncIterator[TextDelta]:
        async for request in events:
            async with aclosing(self.generate(request)) as deltas:
                async for delta in deltas:
                    yield delta


@dataclass(frozen=True)
class Piece:
    """Some of a chunk of text's audio; ``last``: no more follows."""
    samples: "np.ndarray"
    last: bool


class SentenceTTS(Stage[Sentence, AudioChunk]):
    """A TTS backend that synthesizes one chunk of text at a time on its worker
    thread (cancellation stops between chunks). Subclasses give ``synthesize`` and
    ``sample_rate``."""

    kind = "tts"
    sample_rate: int

    @abc.abstractmethod
    def synthesize(self, text: str) -> "np.ndarray":
        """Blocking: the whole text as mono float32 at ``sample_rate``."""

    async def warmup(self) -> None:
        await self.worker.call(self.synthesize, "Hello there.")

    async def speak(self, sentence: Sentence) -> Optional[AudioChunk]:
        """The sentence's audio, or None if it has none (punctuation only)."""
        audio = await self.worker.call(self.synthesize, sentence.text)
        if not len(audio):
            return None
        return AudioChunk(sentence.turn_id, clock.now(), samples=audio,
                          sample_rate=self.sample_rate, sentence_index=sentence.index,
                          text=sentence.text)

    def pieces(self, text: str, first: bool) -> Iterator[Piece]:
        """Blocking, piece by piece: the text's audio. ``first``: the reply's first
        chunk, whose first audio a backend that can decode in pieces gives early
        (Piper); by default one piece, the whole."""
        yield Piece(self.synthesize(text), last=True)

    async def speak_pieces(self, sentence: Sentence) -> AsyncIterator[AudioChunk]:
        """The sentence's audio as one chunk or several (:meth:`pieces`, each computed on
        the worker thread when asked for); none if it has none."""
        pieces = self.pieces(sentence.text, first=sentence.index == 0)
        continues = False
        while True:
            # a cancel here lets the thread finish its piece; the generator is then dropped
            piece = await self.worker.call(next, pieces, None)
            if piece is None:
                return
            if len(piece.samples):
                yield AudioChunk(sentence.turn_id, clock.now(), samples=piece.samples,
                                 sample_rate=self.sample_rate, sentence_index=sentence.index,
                                 text="" if continues else sentence.text,
                                 more=not piece.last, continues=continues)
                continues = True
            if piece.last:
                return

    async def process(self, events: AsyncIterator[Sentence]) -> AsyncIterator[AudioChunk]:
        async for sentence in events:
            chunk = await self.speak(sentence)
            if chunk is not None:
                yield chunk
