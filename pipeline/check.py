"""`python -m pipeline check --config FILE`: validate the config, load each stage
(printing its load time and memory), and run one tiny request through each.
Every stage is checked even if an earlier one fails; any failure gives a
non-zero exit with a message naming the stage."""
from __future__ import annotations

import asyncio
import resource
import time
from typing import Awaitable, Callable

import numpy as np

from .config import CascadeConfig
from .errors import CascadeError
from .events import AudioFrame, ChatMessage, LLMRequest, Sentence, SpeechEnded, stream_of
from .stages import build_stages


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _vad_probe(stage) -> str:
    frames = [AudioFrame(-1, (i + 1) * 0.032, samples=np.zeros(512, np.float32))
              for i in range(10)]
    events = [e async for e in stage.process(stream_of(*frames))]
    return f"{len(frames)} silent frames -> {len(events)} speech events"


async def _asr_probe(stage) -> str:
    t = np.arange(16000) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    [tr] = [e async for e in stage.process(stream_of(SpeechEnded(1, 0.0, 1.0, audio)))]
    return f"1 s tone -> {tr.text!r}"


async def _llm_probe(stage) -> str:
    msgs = (ChatMessage("system", stage.config.system_prompt), ChatMessage("user", "Say hello."))
    text = "".join([d.text async for d in stage.process(stream_of(LLMRequest(1, 0.0, msgs)))])
    if not text.strip():
        raise CascadeError("llm: empty reply to 'Say hello.'")
    return f"'Say hello.' -> {text.strip()[:60]!r}"


async def _tts_probe(stage) -> str:
    chunks = [c async for c in stage.process(stream_of(Sentence(1, 0.0, "Hello there.", 0)))]
    seconds = sum(len(c.samples) for c in chunks) / stage.sample_rate
    if seconds <= 0:
        raise CascadeError("tts: no audio for 'Hello there.'")
    return f"'Hello there.' -> {seconds:.2f} s of audio at {stage.sample_rate} Hz"


PROBES: dict[str, Callable[..., Awaitable[str]]] = {
    "vad": _vad_probe, "asr": _asr_probe, "llm": _llm_probe, "tts": _tts_probe}


async def check(config: CascadeConfig, out=print) -> bool:
    out(f"config {config.source}: valid")
    stages = build_stages(config)
    ok = True
    for kind, stage in zip(("vad", "asr", "llm", "tts"), stages.all()):
        backend = config.to_dict()[kind]["backend"]
        before = _rss_mb()
        t0 = time.perf_counter()
        try:
            await stage.start()
            load_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            result = await PROBES[kind](stage)
            out(f"  {kind:3s} {backend:15s} ok: load {load_s:.2f} s, +{_rss_mb() - before:.0f} MB; "
                f"{result} in {(time.perf_counter() - t1) * 1000:.0f} ms")
        except Exception as err:  # report every stage, then fail
            ok = False
            out(f"  {kind:3s} {backend:15s} FAILED: {err}")
        finally:
            try:
                await stage.aclose()
            except Exception:  # a stage that never started may not close cleanly
                pass
    out("all stages ok" if ok else "check failed")
    return ok
