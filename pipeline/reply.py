"""The reply chain: LLM tokens -> sentence splitter -> TTS, each stage running
ahead of the next.

With ``pipeline.run_ahead`` on, the LLM (with the splitter) and the TTS each run in
a task of their own and hand their output over through a small bounded queue, as
Pipecat's processors do: the LLM writes sentence k+1 while sentence k is being
synthesized, and the TTS synthesizes sentence k+1 while sentence k plays (or while
a speculative turn waits for its endpoint). Off, the chain is pull-only: each stage
works only when the next one asks.

Cancelling the consumer cancels every task of the chain and waits for them; an
error in any stage reaches the consumer, named after its stage.
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing, contextmanager
from typing import Any, AsyncIterator, Callable, Iterator, Optional, TypeVar

import numpy as np

from . import clock, edges
from .audio_cache import AudioCache
from .errors import CascadeError, StageError
from .events import AudioChunk, LLMRequest, Sentence, TextDelta
from .splitter import SentenceSplitter, split_stream

T = TypeVar("T")
_END = object()


@contextmanager
def naming(stage: str, doing: str = "") -> Iterator[None]:
    """A backend failure inside becomes a StageError naming the stage (and what it was
    doing); cancellation and errors that already name their culprit pass through."""
    try:
        yield
    except (asyncio.CancelledError, CascadeError):
        raise
    except Exception as err:
        raise StageError(stage, f"{doing}{type(err).__name__}: {err}") from err


async def guard(stage: str, events: AsyncIterator[T],
                on_first: Callable[[T], None] = lambda item: None) -> AsyncIterator[T]:
    """Name the stage in any failure, and report the first item."""
    first = True
    with naming(stage):
        async with aclosing(events) as it:
            async for item in it:
                if first:
                    on_first(item)
                    first = False
                yield item


async def run_ahead(source: AsyncIterator[T], maxsize: int, name: str) -> AsyncIterator[T]:
    """Drive ``source`` in a task of its own, up to ``maxsize`` items ahead of the
    consumer. Its error, if any, is raised here; closing this stream cancels it."""
    queue: asyncio.Queue = asyncio.Queue(maxsize)

    async def pump() -> None:
        try:
            async with aclosing(source) as it:
                async for item in it:
                    await queue.put((item, None))
            await queue.put((_END, None))
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # handed to the consumer, raised there
            await queue.put((_END, err))

    task = asyncio.create_task(pump(), name=name)
    try:
        while True:
            item, err = await queue.get()
            if item is _END:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        task.cancel()
        await asyncio.wait([task])


async def whole_reply(deltas: AsyncIterator[TextDelta]) -> AsyncIterator[Sentence]:
    """Naive hand-off: the whole LLM reply as one chunk."""
    parts, turn_id = [], None
    async for d in deltas:
        parts.append(d.text)
        turn_id = d.turn_id
    text = "".join(parts).strip()
    if text:
        yield Sentence(turn_id, clock.now(), text=text, index=0)


async def _speak_all(tts, sentences: AsyncIterator[Sentence],
                     spoken: Optional[asyncio.Event] = None,
                     settings: Any = None,
                     cache: Optional[AudioCache] = None) -> AsyncIterator[AudioChunk]:
    """``spoken`` is set once the first sentence is synthesized (audio or none; all its
    pieces, where the TTS gives it in pieces); with ``settings.trim_tts_silence`` each
    chunk's edges are trimmed (:mod:`pipeline.edges`); with ``cache``, a short chunk
    synthesized before is replayed from it."""
    async with aclosing(sentences) as it:
        async for sentence in it:
            kept = cache is not None and cache.keeps(sentence.text)
            async with aclosing(_cached_pieces(tts, sentence, cache) if kept
                                else _pieces(tts, sentence)) as pieces:
                async for chunk in pieces:
                    if spoken is not None and not chunk.more:
                        spoken.set()
                    yield (edges.trim(chunk, settings, sentence.text) if settings is not None
                           else chunk)
            if spoken is not None:
                spoken.set()


async def _pieces(tts, sentence: Sentence) -> AsyncIterator[AudioChunk]:
    """The sentence's audio: in pieces where the TTS can (``speak_pieces``)."""
    if hasattr(tts, "speak_pieces"):
        async with aclosing(tts.speak_pieces(sentence)) as pieces:
            async for chunk in pieces:
                yield chunk
        return
    chunk = await tts.speak(sentence)
    if chunk is not None:
        yield chunk


async def _cached_pieces(tts, sentence: Sentence, cache: AudioCache
                         ) -> AsyncIterator[AudioChunk]:
    """The audio of a sentence short enough for ``cache``: from it if its exact text was
    synthesized before (one chunk, at once); else from the TTS, kept in ``cache`` once
    its last piece is made (a chunk cut before its end is not kept)."""
    audio = cache.get(sentence.text)
    if audio is not None:
        yield AudioChunk(sentence.turn_id, clock.now(), samples=audio,
                         sample_rate=tts.sample_rate, sentence_index=sentence.index,
                         text=sentence.text, cached=True)
        return
    made: list[np.ndarray] = []
    async with aclosing(_pieces(tts, sentence)) as pieces:
        async for chunk in pieces:
            made.append(chunk.samples)
            if not chunk.more:  # kept before it is handed on: the consumer may stop there
                cache.put(sentence.text, np.concatenate(made))
            yield chunk


async def _pause_for_first_audio(deltas: AsyncIterator[TextDelta], sent: asyncio.Event,
                                 spoken: asyncio.Event) -> AsyncIterator[TextDelta]:
    """The tokens of ``deltas``; once the first chunk is ``sent`` to the TTS, the next
    token is not asked for until that chunk is ``spoken``. The LLM's worker thread
    computes a token only when asked, so the TTS has the CPU to itself meanwhile."""
    async with aclosing(deltas) as it:
        async for delta in it:
            yield delta
            if sent.is_set() and not spoken.is_set():
                await spoken.wait()


class ReplyChain:
    def __init__(self, llm, tts, settings):
        """``settings``: the ``pipeline:`` section (stream_tts, first_clause, run_ahead...)."""
        self.llm, self.tts, self.settings = llm, tts, settings
        # one per session (the server's sessions share the TTS, not this cache)
        self.cache = (AudioCache(settings.audio_cache_chunks, settings.audio_cache_max_words)
                      if settings.audio_cache_chunks else None)

    def splitter(self) -> SentenceSplitter:
        s = self.settings
        return SentenceSplitter(s.first_clause, s.min_clause_words,
                                s.max_first_words if s.first_clause else None,
                                s.clause_words, s.max_next_words if s.first_clause else None)

    def audio(self, request: LLMRequest, mark: Callable[[str, float], None]
              ) -> AsyncIterator[AudioChunk]:
        """The reply's audio, chunk by chunk; ``mark(phase, t)`` stamps the first token,
        the first sentence and the first audio."""
        deltas = guard("llm", self.llm.generate(request),
                       lambda d: mark("llm_first_token", d.t))
        s = self.settings
        sent = spoken = None
        if s.first_audio_priority and s.stream_tts:
            sent, spoken = asyncio.Event(), asyncio.Event()
            deltas = _pause_for_first_audio(deltas, sent, spoken)
        chunks = split_stream(deltas, self.splitter()) if s.stream_tts else whole_reply(deltas)
        first_out = getattr(self.llm, "first_chunk_sent", lambda: None)  # its thread budget

        def first_sentence(chunk: Sentence) -> None:
            mark("first_sentence", chunk.t)
            first_out()
            if sent is not None:
                sent.set()
        sentences = guard("splitter", chunks, first_sentence)
        if s.run_ahead:
            sentences = run_ahead(sentences, s.sentences_ahead, f"llm-{request.turn_id}")
        audio = guard("tts", _speak_all(self.tts, sentences, spoken,
                                        s if s.trim_tts_silence else None, self.cache),
                      lambda c: mark("tts_first_audio", c.t))
        if s.run_ahead:
            audio = run_ahead(audio, s.chunks_ahead, f"tts-{request.turn_id}")
        return audio
