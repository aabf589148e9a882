"""Typed events that flow through the pipeline.

Every event carries the ``turn_id`` it belongs to and ``t``, a time in seconds on
the session clock (see :mod:`pipeline.clock`). Events are frozen: a stage never
mutates what it received.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, TypeVar

import numpy as np

E = TypeVar("E")


async def stream_of(*events: E) -> AsyncIterator[E]:
    """These events as the async stream a stage's ``process`` takes."""
    for event in events:
        yield event


@dataclass(frozen=True)
class Event:
    turn_id: int
    t: float


@dataclass(frozen=True)
class AudioFrame(Event):
    """A frame of mono float32 input audio at the pipeline rate; ``t`` is the media
    time of its last sample (when it has fully arrived)."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int = 16000
    assistant_speaking: bool = False  # captured while the reply was playing
    likely_echo: bool = False  # dominated by the assistant's own voice (echo canceller's verdict)


@dataclass(frozen=True)
class SpeechStarted(Event):
    """Speech confirmed (it lasted ``vad.min_speech_ms``); ``speech_start`` is the
    media time of its first voiced sample."""

    speech_start: float


@dataclass(frozen=True)
class SpeechPaused(Event):
    """Silence began after speech: a candidate end of turn, not yet confirmed.
    Carries the audio so far so that work can start speculatively."""

    speech_end: float
    audio: np.ndarray = field(repr=False)
    # heard by the speaker's own level only (vad.early_pause_drop): speculation may start,
    # but the silence that ends the turn counts from the SpeechPaused that confirms it
    provisional: bool = False


@dataclass(frozen=True)
class SpeechProgress(Event):
    """Speech goes on: the utterance so far, every ``pipeline.listen_ahead_ms`` of it
    (partial transcripts prefill the LLM while the user is still speaking)."""

    audio: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SpeechResumed(Event):
    """Speech came back after a :class:`SpeechPaused`: the candidate is void."""


@dataclass(frozen=True)
class SpeechEnded(Event):
    """The VAD closed the utterance: its silence lasted long enough (the endpoint, unless
    the end-of-turn verdict committed the turn sooner), or the input ended inside it.
    ``speech_end`` is the media time of the last voiced sample; ``audio`` is the whole
    utterance with its padding."""

    speech_end: float
    audio: np.ndarray = field(repr=False)
    forced: bool = False  # cut at vad.max_utterance_s rather than by silence
    # closed where its words stopped, the VAD still hearing speech (pipeline.words_stall_s)
    stalled: bool = False


@dataclass(frozen=True)
class Transcript(Event):
    text: str
    language: str = "en"


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str
    interrupted: bool = False


@dataclass(frozen=True)
class LLMRequest(Event):
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True)
class TextDelta(Event):
    text: str


@dataclass(frozen=True)
class Sentence(Event):
    """A chunk of the reply ready for synthesis: a whole sentence, or (first chunk
    only, when enabled) a clause."""

    text: str
    index: int


@dataclass(frozen=True)
class AudioChunk(Event):
    """Mono float32 reply audio. ``sentence_index`` ties it to its text. A chunk of
    text may come as several pieces of audio (a TTS that decodes in pieces): the first
    carries the text and ``more``; the others ``continues``, with no text."""

    samples: np.ndarray = field(repr=False)
    sample_rate: int
    sentence_index: int
    text: str = ""
    more: bool = False  # more audio of this text follows, in the next chunk
    continues: bool = False  # the audio of the previous chunk's text goes on
    cached: bool = False  # replayed from the audio cache (pipeline.audio_cache_chunks)
