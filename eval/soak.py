"""Soak: a long file-mode conversation, with barge-ins, watched for leaks and drift.

    make soak MINUTES=120
    .venv/bin/python -m eval.soak --minutes 120 [--interval 600] [--config FILE]

The corpus clips are spoken in a loop, in real time, through the whole pipeline
(Silero, Whisper, the LLM, the TTS) into a file sink that forgets what it played.
Every ``barge_every``-th turn the user speaks again while the reply is playing.
Every ``--interval`` seconds it records the process's RSS, threads and open file
descriptors, the V2V p50/p90 and the LLM's time to first token of the turns of that
window (from the VAD's end of speech: the clips are looped, so no reference end),
the history's length, the turn errors, and transcript lines on disk against turns.

Writes eval/out/soak.json (minutes, turns, transcript_lines, lost_lines, errors,
rss_growth_pct from minute 10 or, in shorter runs, the second sample, to the end,
v2v_p50_drift_pct from the first window to the last, and every sample) and soak.png.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from eval.corpus import load_manifest
from eval.stats import percentiles
from pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE, read_wav
from pipeline.clock import Clock
from pipeline.config import load_config
from pipeline.console import Console
from pipeline.events import AudioFrame
from pipeline.session import Session
from pipeline.sinks import FileSink

OUT = Path(__file__).resolve().parent / "out"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class LoopingUser:
    """Corpus clips spoken one after the other for ``seconds``; every ``barge_every``-th
    turn, speaks again ``barge_after_s`` after the reply starts playing."""

    def __init__(self, clips: list[np.ndarray], clock: Clock, session: Session, seconds: float,
                 barge_every: int = 4, barge_after_s: float = 0.8, seed: int = 0):
        self.clips, self.clock, self.session, self.seconds = clips, clock, session, seconds
        self.barge_every, self.barge_after_s = barge_every, barge_after_s
        self.rng = random.Random(seed)
        self.spoken = 0
        self._n = 0

    async def _frame(self, samples: np.ndarray) -> AudioFrame:
        self._n += len(samples)
        t = self._n / PIPELINE_RATE
        await self.clock.sleep_until(t)
        return AudioFrame(-1, t, samples=samples, sample_rate=PIPELINE_RATE)

    async def _silence_until(self, done) -> AsyncIterator[AudioFrame]:
        waited = 0
        while not done() and waited < 20 * PIPELINE_RATE:
            waited += FRAME_SAMPLES
            yield await self._frame(np.zeros(FRAME_SAMPLES, np.float32))

    async def frames(self) -> AsyncIterator[AudioFrame]:
        sink, now = self.session.sink, self.clock.now
        while self._n / PIPELINE_RATE < self.seconds:
            audio = self.clips[self.spoken % len(self.clips)]
            self.spoken += 1
            padded = np.pad(audio, (0, -len(audio) % FRAME_SAMPLES))
            for start in range(0, len(padded), FRAME_SAMPLES):
                yield await self._frame(padded[start:start + FRAME_SAMPLES])
            if self.spoken % self.barge_every == 0:  # cut in while it speaks
                async for f in self._silence_until(lambda: sink.busy_until() > now() + 0.5):
                    yield f
                t = now() + self.barge_after_s
                async for f in self._silence_until(lambda: now() >= t):
                    yield f
                continue
            settle = now() + 0.6
            async for f in self._silence_until(lambda: now() >= settle and not self.session.busy
                                               and sink.busy_until() <= now()):
                yield f
            pause = now() + self.rng.uniform(0.4, 1.0)
            async for f in self._silence_until(lambda: now() >= pause):
                yield f


def sample(session: Session, out_dir: Path, since: int, t0: float) -> dict[str, Any]:
    records = session.log.timeline[since:]
    v2v = percentiles(r.get("v2v_ms") for r in records)
    ttft = percentiles((r["llm_first_token"] - r["asr_final"]) * 1000 for r in records
                       if r.get("llm_first_token") is not None and r.get("asr_final") is not None)
    lines = len((out_dir / "transcript.jsonl").read_text().splitlines())
    return {"minute": round((time.monotonic() - t0) / 60, 2), "rss_mb": round(rss_mb(), 1),
            "threads": threading.active_count(), "tasks": len(os.listdir("/proc/self/task")),
            "fds": open_fds(), "turns": len(session.log.timeline),
            "transcript_lines": lines, "errors": sum(t["status"] == "error"
                                                     for t in session.log.transcript),
            "history_messages": len(session.orchestrator.history),
            "v2v_p50_ms": v2v["p50"], "v2v_p90_ms": v2v["p90"], "window_turns": v2v["n"],
            "llm_ttft_p50_ms": ttft["p50"]}


async def soak(config_path: str, minutes: float, interval_s: float, out: Path) -> dict[str, Any]:
    config = load_config(config_path)
    clips = [read_wav(c.path) for c in load_manifest() if c.duration_s <= 7.0]
    run_dir = out / "soak_session"
    session = Session(config, lambda st: FileSink(st.tts.sample_rate, keep_s=30.0), run_dir,
                      Console(quiet=True))
    samples: list[dict[str, Any]] = []
    async with session:
        clock = Clock()
        user = LoopingUser(clips, clock, session, minutes * 60)
        t0 = time.monotonic()

        async def watch() -> None:
            since = 0
            while True:
                await asyncio.sleep(interval_s)
                samples.append(sample(session, run_dir, since, t0))
                since = len(session.log.timeline)
                print(json.dumps(samples[-1]), flush=True)
        watcher = asyncio.create_task(watch())
        try:
            await session.run(user.frames(), clock)
        finally:
            watcher.cancel()
    final = sample(session, run_dir, 0, t0)
    base = next((s for s in samples if s["minute"] >= 10), samples[1] if len(samples) > 1
                else final)
    firsts = [s for s in samples if s["v2v_p50_ms"] is not None]
    turns = len(session.log.transcript)
    result = {
        "config": config_path, "minutes": round((time.monotonic() - t0) / 60, 2),
        "turns": turns, "user_utterances": user.spoken,
        "transcript_lines": final["transcript_lines"],
        "lost_lines": turns - final["transcript_lines"], "errors": final["errors"],
        "interrupted": sum(t["status"] == "interrupted" for t in session.log.transcript),
        "rss_growth_pct": (final["rss_mb"] - base["rss_mb"]) / base["rss_mb"] * 100,
        "rss_baseline_minute": base["minute"],
        "v2v_p50_drift_pct": ((firsts[-1]["v2v_p50_ms"] - firsts[0]["v2v_p50_ms"])
                              / firsts[0]["v2v_p50_ms"] * 100) if len(firsts) > 1 else None,
        "threads_end": final["threads"], "fds_end": final["fds"],
        "samples": samples, "final": final,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    plot(samples, out / "soak.png")
    return result


def plot(samples: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    m = [s["minute"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    axes[0].plot(m, [s["rss_mb"] for s in samples], "o-")
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(m, [s["tasks"] for s in samples], "o-", label="threads")
    axes[1].plot(m, [s["fds"] for s in samples], "s-", label="open fds")
    axes[1].legend(fontsize=8)
    axes[2].plot(m, [s["v2v_p50_ms"] for s in samples], "o-", label="V2V p50 (VAD end)")
    axes[2].plot(m, [s["v2v_p90_ms"] for s in samples], "s--", label="V2V p90")
    axes[2].plot(m, [s["llm_ttft_p50_ms"] for s in samples], "^-", label="LLM TTFT p50")
    axes[2].set_ylabel("ms")
    axes[2].set_xlabel("minutes")
    axes[2].legend(fontsize=8)
    fig.suptitle("Soak: a looped corpus conversation with barge-ins")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--minutes", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=600.0, help="seconds between samples")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    result = asyncio.run(soak(args.config, args.minutes, args.interval, args.out))
    keys = ("minutes", "turns", "transcript_lines", "lost_lines", "errors", "interrupted",
            "rss_growth_pct", "v2v_p50_drift_pct")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    print(f"wrote {args.out}/soak.json, soak.png")


if __name__ == "__main__":
    main()
