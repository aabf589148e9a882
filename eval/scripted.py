"""A scripted user: corpus clips spoken one after the other in real time, each
after the assistant has finished its reply and a natural pause, as a microphone
would deliver them. It records where each clip's speech really ends on the
session time line, measured from the clip's own audio."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import numpy as np

from eval.corpus import Clip
from pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from pipeline.clock import Clock
from pipeline.events import AudioFrame


@dataclass
class UserTurn:
    clip: Clip
    offset: float  # session time the clip starts
    speech_end: float  # session time of its last voiced sample


class ScriptedUser:
    def __init__(self, clips: list[tuple[Clip, np.ndarray, float]], clock: Clock,
                 assistant_done: Callable[[], bool], seed: int = 0,
                 pause_s: tuple[float, float] = (0.4, 1.0), lead_s: float = 1.0,
                 settle_s: float = 0.6, max_wait_s: float = 20.0,
                 on_turn: Callable[[int], None] = lambda i: None):
        """``clips``: (clip, 16 kHz audio, seconds to its last voiced sample)."""
        self.clips = clips
        self.clock = clock
        self.assistant_done = assistant_done
        self.rng = random.Random(seed)
        self.pause_s, self.lead_s, self.settle_s, self.max_wait_s = (pause_s, lead_s, settle_s,
                                                                     max_wait_s)
        self.on_turn = on_turn
        self.turns: list[UserTurn] = []
        self._sent: list[np.ndarray] = []
        self._n = 0  # samples sent

    @property
    def media_time(self) -> float:
        return self._n / PIPELINE_RATE

    def audio(self) -> np.ndarray:
        return np.concatenate(self._sent) if self._sent else np.zeros(0, np.float32)

    async def _frame(self, samples: np.ndarray) -> AudioFrame:
        self._n += len(samples)
        self._sent.append(samples)
        await self.clock.sleep_until(self.media_time)
        return AudioFrame(-1, self.media_time, samples=samples, sample_rate=PIPELINE_RATE)

    async def _silence(self, seconds: float) -> AsyncIterator[AudioFrame]:
        for _ in range(int(round(seconds * PIPELINE_RATE / FRAME_SAMPLES))):
            yield await self._frame(np.zeros(FRAME_SAMPLES, np.float32))

    async def frames(self) -> AsyncIterator[AudioFrame]:
        async for f in self._silence(self.lead_s):
            yield f
        for i, (clip, audio, end_s) in enumerate(self.clips):
            n = int(np.ceil(len(audio) / FRAME_SAMPLES)) * FRAME_SAMPLES
            padded = np.pad(audio, (0, n - len(audio)))
            self.turns.append(UserTurn(clip, self.media_time, self.media_time + end_s))
            for start in range(0, n, FRAME_SAMPLES):
                yield await self._frame(padded[start:start + FRAME_SAMPLES])
            # wait for the reply to be over, then a natural pause
            async for f in self._silence(self.settle_s):
                yield f
            waited = 0.0
            while not self.assistant_done() and waited < self.max_wait_s:
                yield await self._frame(np.zeros(FRAME_SAMPLES, np.float32))
                waited += FRAME_SAMPLES / PIPELINE_RATE
            async for f in self._silence(self.rng.uniform(*self.pause_s)):
                yield f
            self.on_turn(i)
