"""A scripted user: corpus clips spoken one after the other in real time, each
after the assistant has finished its reply and a natural pause, as a microphone
would deliver them. It records where each clip's speech really ends on the
session time line, measured from the clip's own audio."""
from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional

import numpy as np

from eval.corpus import Clip
from eval.cpu_quota import CpuQuota
from pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE
from pipeline.clock import Clock
from pipeline.config import CascadeConfig
from pipeline.console import Console
from pipeline.events import AudioFrame
from pipeline.session import Session
from pipeline.sinks import FileSink
from pipeline.turn import NOT_TAKEN


@dataclass
class UserTurn:
    clip: Clip
    offset: float  # session time the clip starts
    speech_end: float  # session time of its last voiced sample


class ScriptedUser:
    def __init__(self, clips: list[tuple[Clip, np.ndarray, float]], clock: Clock,
                 assistant_done: Callable[[], bool], seed: int = 0,
                 pause_s: tuple[float, float] = (0.4, 1.0), lead_s: float = 1.0,
                 settle_s: float = 0.6, max_wait_s: float = 20.0, tail_s: float = 1.5,
                 on_turn: Callable[[int], None] = lambda i: None):
        """``clips``: (clip, 16 kHz audio, seconds to its last voiced sample)."""
        self.clips = clips
        self.clock = clock
        self.assistant_done = assistant_done
        self.rng = random.Random(seed)
        self.pause_s, self.lead_s, self.settle_s, self.max_wait_s = (pause_s, lead_s, settle_s,
                                                                     max_wait_s)
        self.tail_s = tail_s
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
            async for f in self._until_done():
                yield f
            async for f in self._silence(self.rng.uniform(*self.pause_s)):
                yield f
            self.on_turn(i)
        # the end of the conversation: silence past the longest end-of-turn wait, then
        # the last reply, so that a last utterance reopened at its end is answered too
        async for f in self._silence(self.tail_s):
            yield f
        async for f in self._until_done():
            yield f

    async def _until_done(self) -> AsyncIterator[AudioFrame]:
        """Silence until the assistant has finished (at most ``max_wait_s``)."""
        waited = 0.0
        while not self.assistant_done() and waited < self.max_wait_s:
            yield await self._frame(np.zeros(FRAME_SAMPLES, np.float32))
            waited += FRAME_SAMPLES / PIPELINE_RATE


def match_turns(user_turns: list[UserTurn], records: list[dict[str, Any]],
                end: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Pair each scripted user turn with the pipeline turn that answered its end."""
    matched, premature, missed = [], 0, 0
    for i, ut in enumerate(user_turns):
        nxt = user_turns[i + 1].offset if i + 1 < len(user_turns) else end
        mine = [r for r in records if r.get("user_speech_end") is not None
                and ut.offset <= r["user_speech_end"] < nxt]
        # a reply that played (a reopened turn's reply was cut when the user went on, and a
        # backchannel's or an echo's record is not an answer)
        answered = [r for r in mine if r.get("playback_start") is not None
                    and r.get("status") not in NOT_TAKEN]
        final = [r for r in answered if r["user_speech_end"] >= ut.speech_end - 0.5]
        premature += len([r for r in mine if r["user_speech_end"] < ut.speech_end - 0.5])
        if not final:
            missed += 1
            continue
        rec = dict(final[-1])
        rec.update(speech_end=ut.speech_end, clip=ut.clip.id, user_turn=i + 1)
        matched.append(rec)
    return matched, {"premature_endpoints": premature, "missed_turns": missed}


async def run_conversation(config: CascadeConfig, clips, seed: int, progress=None,
                           llm_cpu: Optional[float] = None) -> dict[str, Any]:
    session = Session(config, lambda stages: FileSink(rate=stages.tts.sample_rate),
                      console=Console(quiet=True))
    with contextlib.ExitStack() as stack:
        if llm_cpu is not None:  # the LLM's thread, and the threads it starts, slowed down
            quota = stack.enter_context(CpuQuota(llm_cpu, "cascade-llm"))
            quota.add_thread(await session.stages.llm.worker.call(threading.get_native_id))
        return await _converse(session, clips, seed, progress)


async def _converse(session: Session, clips, seed: int, progress) -> dict[str, Any]:
    t_load = time.perf_counter()
    async with session:
        ready_s = time.perf_counter() - t_load
        clock = Clock()
        sink = session.sink
        user = ScriptedUser(clips, clock, lambda: not session.busy and sink.busy_until() <= clock.now(),
                            seed=seed, on_turn=lambda i: progress and progress.update(1))
        await session.run(user.frames(), clock)
    log = session.log
    # each turn's timeline with its transcript line (written together, in order: a
    # reopened turn and the utterance it merges into share a turn id)
    records = [dict(tl, user_text=tr["user"], assistant_text=tr["assistant"])
               for tl, tr in zip(log.timeline, log.transcript)]
    matched, counts = match_turns(user.turns, records, user.media_time)
    asr_stats = getattr(session.stages.asr, "stats", {})
    threads = getattr(session.stages.asr, "thread_choice", None)
    return {"turns": matched, "counts": counts, "speculation": dict(session.orchestrator.stats),
            "asr_paths": dict(asr_stats), "ready_s": ready_s, "records": records,
            "asr_threads": threads.record() if threads is not None else None}


def applicable(config: CascadeConfig, overrides: dict[str, dict[str, Any]]
               ) -> dict[str, dict[str, Any]]:
    """The part of ``overrides`` this profile has keys for (the openai backend has no
    KV-cache switch, espeak no thread count...)."""
    have = config.to_dict()
    kept = {section: {k: v for k, v in values.items() if k in have.get(section, {})}
            for section, values in overrides.items()}
    return {section: values for section, values in kept.items() if values}
