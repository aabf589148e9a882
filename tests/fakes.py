"""Fake stages with scripted latencies, for exact orchestration tests. They are
used in addition to the real-model tests, never instead of them."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from pipeline import clock
from pipeline.events import (AudioChunk, SpeechEnded, SpeechPaused, SpeechResumed,
                             SpeechStarted, TextDelta, Transcript)
from pipeline.worker import Worker


class FakeStage:
    kind = "fake"

    def __init__(self, **config):
        self.config = SimpleNamespace(**config)
        self.worker = Worker(self.kind)
        self.load_s = 0.0

    async def start(self):
        pass

    async def warmup(self):
        pass

    async def aclose(self):
        self.worker.shutdown()


class ScriptedVAD(FakeStage):
    """Emits SpeechStarted / SpeechEnded at scripted media times:
    ``script = [(start_s, end_s), ...]``; the endpoint comes ``endpoint_s`` after end."""
    kind = "vad"

    def __init__(self, script, endpoint_s=0.3, pause_s=0.064, resumes=()):
        super().__init__(max_utterance_s=60.0, min_silence_ms=300, speech_pad_ms=0)
        self.script = script
        self.endpoint_s = endpoint_s
        self.pause_s = pause_s
        self.resumes = resumes  # (pause_at, resume_at) inside an utterance

    async def process(self, frames):
        pending = []
        for i, (s, e) in enumerate(self.script):
            pending += [(s, "start", i + 1, s), (e + self.pause_s, "pause", i + 1, e),
                        (e + self.endpoint_s, "end", i + 1, e)]
            for p, r in self.resumes:
                if s < p < e:
                    pending += [(p + self.pause_s, "pause", i + 1, p), (r, "resume", i + 1, r)]
        pending.sort(key=lambda p: p[0])
        async for frame in frames:
            while pending and frame.t >= pending[0][0]:
                _, kind, turn_id, at = pending.pop(0)
                audio = np.zeros(1600, np.float32)
                if kind == "start":
                    yield SpeechStarted(turn_id, clock.now(), speech_start=at)
                elif kind == "pause":
                    yield SpeechPaused(turn_id, clock.now(), speech_end=at, audio=audio)
                elif kind == "resume":
                    yield SpeechResumed(turn_id, clock.now())
                else:
                    yield SpeechEnded(turn_id, clock.now(), speech_end=at, audio=audio)


class FakeASR(FakeStage):
    kind = "asr"

    def __init__(self, delay=0.1, texts=None):
        super().__init__()
        self.delay, self.texts = delay, texts or {}

    async def process(self, events):
        async for ev in events:
            await asyncio.sleep(self.delay)
            yield Transcript(ev.turn_id, clock.now(), text=self.texts.get(ev.turn_id, f"hello {ev.turn_id}"))


class FakeLLM(FakeStage):
    kind = "llm"

    def __init__(self, ttft=0.05, per_token=0.02, reply="Sure thing. I can help with that. "
                 "Here is a third sentence."):
        super().__init__(system_prompt="be brief")
        self.ttft, self.per_token, self.reply = ttft, per_token, reply
        self.requests = []

    def count_tokens(self, messages):
        return sum(len(m.content.split()) + 3 for m in messages)

    async def process(self, events):
        async for req in events:
            self.requests.append(req)
            await asyncio.sleep(self.ttft)
            words = self.reply.split(" ")
            for i, w in enumerate(words):
                if i:
                    await asyncio.sleep(self.per_token)
                yield TextDelta(req.turn_id, clock.now(), text=(" " if i else "") + w)


class FakeTTS(FakeStage):
    kind = "tts"
    sample_rate = 16000

    def __init__(self, delay=0.04, seconds_per_word=0.3):
        super().__init__()
        self.delay, self.spw = delay, seconds_per_word
        self.texts = []

    async def process(self, events):
        async for s in events:
            self.texts.append((clock.now(), s.text))
            await asyncio.sleep(self.delay)
            n = int(len(s.text.split()) * self.spw * self.sample_rate)
            yield AudioChunk(s.turn_id, clock.now(), samples=np.full(n, 0.1, np.float32),
                             sample_rate=self.sample_rate, sentence_index=s.index, text=s.text)


def run_session(orch, seconds: float, tail_s: float = 0.5) -> None:
    """Run an orchestrator over ``seconds`` of silent input with a fast clock (the
    scripted VAD decides where speech is)."""
    from pipeline import clock as clock_mod
    from pipeline.clock import Clock
    from pipeline.filemode import file_frames

    async def main():
        await orch.start()
        clk = Clock(fast=True)
        clock_mod.use(clk)
        await orch.run(file_frames(np.zeros(int(seconds * 16000), np.float32), clk,
                                   lambda: orch.busy, tail_s=tail_s))
        await orch.aclose()

    asyncio.run(main())
