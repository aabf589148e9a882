"""Audio sinks: where reply audio goes.

A sink places each AudioChunk on the session's time line and says when its first
sample reaches the output (that is the turn's ``playback_start``). On barge-in,
``stop()`` drops what has not been heard yet and says which text was played.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import clock
from .audio import resample
from .events import AudioChunk


@dataclass
class Placed:
    turn_id: int
    sentence_index: int
    text: str
    start: float
    samples: np.ndarray

    def end(self, rate: int) -> float:
        return self.start + len(self.samples) / rate


@dataclass(frozen=True)
class PlayedText:
    text: str  # the text whose audio started playing
    complete: bool  # False if cut by a barge-in
    stopped_at: Optional[float] = None  # when the last of it left the speaker


class AudioSink(abc.ABC):
    rate: int

    @abc.abstractmethod
    async def play(self, chunk: AudioChunk) -> float:
        """Queue a chunk; return the session time its first sample is output."""

    @abc.abstractmethod
    def busy_until(self) -> float:
        """Session time at which everything queued will have been played."""

    @abc.abstractmethod
    async def stop(self, turn_id: int) -> PlayedText:
        """Barge-in: drop this turn's audio not yet played, now. Returns the text
        actually played."""

    async def aclose(self) -> None:
        pass


def played_text(placed: list[Placed], turn_id: int, cut: float, rate: int) -> PlayedText:
    """The text of ``turn_id``'s sentences whose audio started before ``cut``."""
    mine = [p for p in placed if p.turn_id == turn_id]
    heard: dict[int, str] = {}
    for p in mine:
        if p.start < cut:
            heard.setdefault(p.sentence_index, p.text)
    complete = all(p.end(rate) <= cut for p in mine)
    return PlayedText(" ".join(heard[i] for i in sorted(heard)).strip(), complete,
                      stopped_at=cut)


def heard_only(placed: list[Placed], turn_id: int, cut: float, rate: int) -> list[Placed]:
    """``placed`` once ``turn_id``'s playback stopped at ``cut``: its chunks as they were
    heard (cut where they stopped, those not started gone), other turns' as they are.
    They stay so that a reply resumed after a false interruption and stopped again is
    reported from its start (``played_text``), not from the resume."""
    kept = []
    for p in placed:
        if p.turn_id == turn_id and p.end(rate) > cut:
            n = max(0, int(round((cut - p.start) * rate)))
            if n == 0:
                continue
            p = dataclasses.replace(p, samples=p.samples[:n])
        kept.append(p)
    return kept


class FileSink(AudioSink):
    """A virtual speaker for file mode: audio is laid on the session time line as a
    listener would have heard it (file mode's ConversationWriter writes it out)."""

    def __init__(self, rate: int, keep_s: Optional[float] = None):
        """``keep_s``: forget audio that finished playing longer ago than this (a long
        session that needs no WAV at the end); None keeps everything."""
        self.rate = rate
        self.keep_s = keep_s
        self.placed: list[Placed] = []
        self._end = 0.0

    async def play(self, chunk: AudioChunk) -> float:
        samples = resample(chunk.samples, chunk.sample_rate, self.rate)
        now = clock.now()
        if self.keep_s is not None:
            self.placed = [p for p in self.placed if p.end(self.rate) > now - self.keep_s]
        start = max(now, self._end)
        self.placed.append(Placed(chunk.turn_id, chunk.sentence_index, chunk.text, start, samples))
        self._end = start + len(samples) / self.rate
        return start

    def busy_until(self) -> float:
        return self._end

    async def stop(self, turn_id: int) -> PlayedText:
        cut = clock.now()
        result = played_text(self.placed, turn_id, cut, self.rate)
        self.placed = heard_only(self.placed, turn_id, cut, self.rate)
        self._end = max([p.end(self.rate) for p in self.placed], default=cut)
        return result
