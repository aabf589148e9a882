"""Fake stages with scripted latencies, for exact orchestration tests. They are
used in addition to the real-model tests, never instead of them."""
from __future__ import annotations

import asyncio
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

    def __init__(self, script, endpoint_s=0.3, pause_s=0.064, resumes=(), audio_s=0.1,
                 early_s=None):
        super().__init__(max_utterance_s=60.0, min_silence_ms=300, speech_pad_ms=0)
        self.script = script
        self.audio_s = audio_s  # the length of each utterance's audio (silence)
        self.endpoint_s = endpoint_s
        self.pause_s = pause_s
        # (pause_at, resume_at) inside an utterance; (pause_at, resume_at, True): the
        # pause is provisional (vad.early_pause_drop)
        self.resumes = resumes
        # a provisional pause this long before each utterance's end (noise after the words)
        self.early_s = early_s

    async def process(self, frames):
        pending = []
        for i, (s, e) in enumerate(self.script):
            pending += [(s, "start", i + 1, s), (e + self.pause_s, "pause", i + 1, e),
                        (e + self.endpoint_s, "end", i + 1, e)]
            if self.early_s is not None:
                pending.append((e - self.early_s + self.pause_s, "early", i + 1, e - self.early_s))
            for p, r, *early in self.resumes:
                if s < p < e:
                    pending += [(p + self.pause_s, "early" if early else "pause", i + 1, p),
                                (r, "resume", i + 1, r)]
        pending.sort(key=lambda p: p[0])
        async for frame in frames:
            while pending and frame.t >= pending[0][0]:
                _, kind, turn_id, at = pending.pop(0)
                audio = np.zeros(int(self.audio_s * 16000), np.float32)
                if kind == "start":
                    yield SpeechStarted(turn_id, clock.now(), speech_start=at)
                elif kind in ("pause", "early"):
                    yield SpeechPaused(turn_id, clock.now(), speech_end=at, audio=audio,
                                       provisional=kind == "early")
                elif kind == "resume":
                    yield SpeechResumed(turn_id, clock.now())
                else:
                    yield SpeechEnded(turn_id, clock.now(), speech_end=at, audio=audio)


class FakeASR(FakeStage):
    """``fail``: turn id -> exception raised instead of a transcript; ``hang``: turn ids
    whose recognition never ends."""
    kind = "asr"

    def __init__(self, delay=0.1, texts=None, fail=None, hang=()):
        super().__init__()
        self.delay, self.texts, self.fail, self.hang = delay, texts or {}, fail or {}, hang
        self.calls = []

    async def recognize(self, ended):
        self.calls.append((clock.now(), ended.turn_id))
        await asyncio.sleep(self.delay)
        if ended.turn_id in self.fail:
            raise self.fail[ended.turn_id]
        if ended.turn_id in self.hang:
            await asyncio.Event().wait()
        return Transcript(ended.turn_id, clock.now(),
                          text=self.texts.get(ended.turn_id, f"hello {ended.turn_id}"))


class FakeLLM(FakeStage):
    """``fail``: turn id -> (number of words written first, exception)."""
    kind = "llm"

    def __init__(self, ttft=0.05, per_token=0.02, reply="Sure thing. I can help with that. "
                 "Here is a third sentence.", fail=None):
        super().__init__(system_prompt="be brief")
        self.ttft, self.per_token, self.reply, self.fail = ttft, per_token, reply, fail or {}
        self.requests = []
        self.written = []  # (time, turn id, word)

    def count_tokens(self, messages):
        return sum(len(m.content.split()) + 3 for m in messages)

    async def generate(self, req):
        self.requests.append(req)
        await asyncio.sleep(self.ttft)
        words = self.reply.split(" ")
        after, error = self.fail.get(req.turn_id, (None, None))
        for i, w in enumerate(words):
            if i == after:
                raise error
            if i:
                await asyncio.sleep(self.per_token)
            self.written.append((clock.now(), req.turn_id, w))
            yield TextDelta(req.turn_id, clock.now(), text=(" " if i else "") + w)


class FakeTTS(FakeStage):
    """``fail``: (turn id, sentence index) -> exception raised instead of its audio."""
    kind = "tts"
    sample_rate = 16000

    def __init__(self, delay=0.04, seconds_per_word=0.3, fail=None):
        super().__init__()
        self.delay, self.spw, self.fail = delay, seconds_per_word, fail or {}
        self.texts = []  # (time synthesis started, text)
        self.done = []  # (time synthesis ended, text)

    async def speak(self, s):
        self.texts.append((clock.now(), s.text))
        await asyncio.sleep(self.delay)
        if (s.turn_id, s.index) in self.fail:
            raise self.fail[(s.turn_id, s.index)]
        n = int(len(s.text.split()) * self.spw * self.sample_rate)
        self.done.append((clock.now(), s.text))
        return AudioChunk(s.turn_id, clock.now(), samples=np.full(n, 0.1, np.float32),
                          sample_rate=self.sample_rate, sentence_index=s.index, text=s.text)


def fake_session(config, stages, out_dir=None, sink=None, end_of_turn=None):
    """A session of these stages writing to a FileSink (or ``sink``). The scripted VAD
    decides the endpoint (a fixed silence) unless ``end_of_turn`` gives the verdicts."""
    from pipeline.console import Console
    from pipeline.session import Session
    from pipeline.sinks import FileSink

    if end_of_turn is None:
        config = config.replace(pipeline={"endpointing": "fixed"})
    return Session(config, lambda st: sink or FileSink(16000), out_dir, Console(quiet=True),
                   stages=stages, end_of_turn=end_of_turn)


def run_session(session, seconds: float, tail_s: float = 0.5) -> None:
    """Run a session over ``seconds`` of silent input on a virtual-time event loop
    (the scripted VAD decides where speech is): exact timings, no real waiting."""
    from pipeline.clock import Clock
    from pipeline.filemode import file_frames
    from tests.virtual_time import run_virtual

    async def main():
        async with session:
            clk = Clock(source=asyncio.get_running_loop().time)
            await session.run(file_frames(np.zeros(int(seconds * 16000), np.float32), clk,
                                          lambda: session.busy, tail_s=tail_s), clk)

    run_virtual(main())
