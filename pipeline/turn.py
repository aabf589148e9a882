"""One turn: the user's utterance and the reply to it.

A :class:`Turn` owns its task (ASR -> LLM -> TTS -> sink), the gate a speculative
turn waits at before it may play, what it handed to the sink, and its one status
transition. Whatever ends it (a finished reply, a barge-in, an error, the end of
the session), the turn moves once from ``pending`` to its final status, and the
derived fields (``interrupted``, the reply text) follow from that.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Literal, Optional

from .events import AudioChunk, SpeechEnded, SpeechPaused
from .sinks import PlayedText
from .timeline import TurnTimeline

Status = Literal["pending", "answered", "interrupted", "no_speech", "error", "reopened",
                 "backchannel", "echo"]
# a turn whose words did not take the turn (the user went on, a backchannel, the
# assistant's own echo, no words: none at all, or none beyond what the reply resumed
# after it already answers): logged, but kept out of the history, and not an answer
NOT_TAKEN: tuple[Status, ...] = ("reopened", "backchannel", "echo", "no_speech")


@dataclass(frozen=True)
class Queued:
    """A chunk of the reply as handed to the sink: its text and where it plays."""

    text: str
    start: float
    seconds: float
    chunk: Optional[AudioChunk] = field(default=None, repr=False, compare=False)

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclass(eq=False)
class Turn:
    turn_id: int
    ended: SpeechEnded  # the audio its ASR got (at a pause, if speculative)
    speculative: bool
    started_at: float  # when its ASR got the audio
    timeline: TurnTimeline = field(init=False)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # open: it may play
    task: Optional[asyncio.Task] = None
    user_text: str = ""
    language: Optional[str] = None
    queued: list[Queued] = field(default_factory=list)
    generated: bool = False  # the whole reply was handed to the sink
    played: Optional[PlayedText] = None  # set when playback was cut
    status: Status = "pending"
    error: Optional[str] = None
    barge_in_stop_ms: Optional[float] = None
    early: bool = False  # committed by an early (adaptive) endpoint
    closed: bool = False  # the VAD closed its utterance: the user cannot go on with it
    commit_at: Optional[float] = None  # adaptive: commits itself once the silence reaches it
    verdict: Optional[Any] = None  # the end-of-turn verdict (pipeline.endpoint.Verdict)
    reply_at: Optional[float] = None  # deferred: its reply starts once the silence reaches it
    go: asyncio.Event = field(default_factory=asyncio.Event)  # set: the reply may start
    reply_started: Optional[float] = None  # when its LLM request went out
    echo: bool = False  # its words were the held reply's own (pipeline.ignore_own_words)
    first_audio_cached: Optional[bool] = None  # its first chunk came from the audio cache
    # started at a provisional pause (vad.early_pause_drop): its silence is not counted
    # until the end of speech is confirmed; the verdict's silence waits in commit_after
    soft: bool = False
    confirmed_by: Optional[SpeechPaused] = None  # the pause that confirmed its end
    commit_after: Optional[float] = None

    def __post_init__(self) -> None:
        self.timeline = TurnTimeline(self.turn_id)

    @property
    def provisional(self) -> bool:
        """Started at a provisional pause whose end of speech is not confirmed yet."""
        return self.soft and self.confirmed_by is None

    @property
    def silence_start(self) -> float:
        """Where the silence that ends the turn is counted from."""
        return (self.ended if self.confirmed_by is None else self.confirmed_by).speech_end

    # ---- the task ---------------------------------------------------------------
    def launch(self, body: Callable[["Turn"], Coroutine[Any, Any, None]]) -> None:
        self.task = asyncio.create_task(self._guarded(body), name=f"turn-{self.turn_id}")

    async def _guarded(self, body: Callable[["Turn"], Coroutine[Any, Any, None]]) -> None:
        """Nothing a turn raises is lost: anything but cancellation becomes its error."""
        try:
            await body(self)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - recorded on the turn, never swallowed
            self.fail(f"{type(err).__name__}: {err}")

    @property
    def computing(self) -> bool:
        return self.task is not None and not self.task.done()

    async def cancel(self) -> bool:
        """Stop the turn's work and wait until it has stopped; True if it was running."""
        if not self.computing:
            return False
        self.task.cancel()
        await asyncio.wait([self.task])
        return True

    # ---- what it produced -------------------------------------------------------------
    def add(self, chunk: AudioChunk, start: float) -> bool:
        """A chunk was handed to the sink; True if it is the first."""
        self.queued.append(Queued(chunk.text, start, len(chunk.samples) / chunk.sample_rate,
                                  chunk))
        return len(self.queued) == 1

    @property
    def reply_text(self) -> str:
        """What the user heard (all of it unless playback was cut)."""
        if self.played is not None:
            return self.played.text
        return " ".join(q.text for q in self.queued if q.text).strip()

    def unheard(self, cut: float) -> list[AudioChunk]:
        """After playback was stopped at ``cut``: forget the chunks not heard whole, and
        return them, to be played again (a resumed reply restarts the chunk it was cut in,
        from its first piece where it came in pieces)."""
        first = next((i for i, q in enumerate(self.queued) if q.end > cut + 1e-3),
                     len(self.queued))
        while (0 < first < len(self.queued) and self.queued[first].chunk is not None
               and self.queued[first].chunk.continues):
            first -= 1
        heard = self.queued[:first]
        rest = [q.chunk for q in self.queued[first:] if q.chunk is not None]
        self.queued = heard
        self.played = None
        return rest

    def sentence_gaps_ms(self) -> list[float]:
        """Silence between consecutive chunks of the reply as placed on the output."""
        return [max(0.0, (b.start - a.end) * 1000) for a, b in zip(self.queued, self.queued[1:])]

    # ---- its one status transition --------------------------------------------------
    def finish(self, status: Status, error: Optional[str] = None) -> None:
        """The first final status wins; later calls do nothing."""
        if self.status == "pending" and status != "pending":
            self.status = status
            self.error = error

    def fail(self, error: str) -> None:
        self.finish("error", error)

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    def settle(self, cut_while_computing: bool) -> None:
        """Decide a status still pending when the turn is recorded."""
        if self.status != "pending":
            return
        cut = cut_while_computing or not self.generated or (
            self.played is not None and not self.played.complete)
        self.finish("interrupted" if cut else "answered")
