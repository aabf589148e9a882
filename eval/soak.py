"""Soak: a long conversation, with barge-ins, watched for leaks and drift.

    make soak MINUTES=120 [LIVE=1]
    .venv/bin/python -m eval.soak --minutes 120 [--interval 600] [--config FILE] [--live]

File mode (the default): the corpus clips are spoken in a loop, in real time, through
the whole pipeline (Silero, Whisper, the LLM, the TTS) into a file sink that forgets
what it played. Every ``barge_every``-th turn the user speaks again while the reply is
playing. Every ``--interval`` seconds it records the process's RSS, threads and open
file descriptors, the V2V p50/p90 and the LLM's time to first token of the turns of
that window (from the VAD's end of speech: the clips are looped, so no reference end),
the history's length, the turn errors, and transcript lines on disk against turns.

Writes eval/out/soak.json (minutes, turns, transcript_lines, lost_lines, errors,
rss_growth_pct from minute 10 or, in shorter runs, the second sample, to the end,
v2v_p50_drift_pct from the first window to the last, and every sample) and soak.png.

Live mode (``--live``): the same conversation through the real audio device path. A
private PulseAudio server with a virtual microphone and speaker
(:mod:`eval.virtual_audio`); ``python -m pipeline run`` as a subprocess, reading the
microphone through PyAudio -> ALSA's pulse plugin -> PulseAudio. Clips of at most 7 s
are played into the microphone one after the other; after each, the soak waits until
a turn newer than any before the clip is recorded in timeline.jsonl and every turn the
console showed is (the session records a turn once its reply has played out; a turn
cut by the clip may be recorded after it; ``reply_timeout_s`` at most, counted in
``waits_timed_out``), then pauses 0.4-1.0 s. After every ``barge_every``-th clip it
waits for the reply to start (the console's "V2V" line) and speaks the next clip
``barge_after_s`` later. The samples are the subprocess's (/proc/<pid>: VmRSS,
Threads, fd/), with the V2V and the errors of the window's lines of its
timeline.jsonl. At the end the session gets SIGINT, as Ctrl-C, and its files are read
once it has exited.

Its counts, all from the session's own files and console once it has ended: ``turns``
is the lines of timeline.jsonl (one per recorded turn); ``lost_lines`` counts every
turn the session showed on its console ("[turn N] ..."), by id, and every
timeline.jsonl line, by id, that has no line in transcript.jsonl. ``errors`` is the
turns whose status is error plus the console's "error:" and traceback lines outside
turns (each in ``error_messages``, to be explained or fixed). ``exit_code`` is 130
after a clean Ctrl-C. Writes eval/out/soak-live.json (the file mode's keys, with
"mode": "live") and soak-live.png.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import numpy as np

from eval.corpus import load_manifest
from eval.stats import percentiles
from eval.virtual_audio import LiveSession, PulseServer, VirtualRoom
from pipeline.audio import FRAME_SAMPLES, PIPELINE_RATE, read_wav
from pipeline.clock import Clock
from pipeline.config import load_config
from pipeline.console import Console
from pipeline.events import AudioFrame
from pipeline.session import Session
from pipeline.sinks import FileSink

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
MAX_CLIP_S = 7.0


def proc_stats(pid: int | str = "self") -> dict[str, Any]:
    """A process's RSS (MB), threads (the kernel's tasks) and open file descriptors."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "tasks": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def latency(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """V2V p50/p90 (from the VAD's end of speech) and LLM time to first token p50 of
    timeline records."""
    records = list(records)
    v2v = percentiles(r.get("v2v_ms") for r in records)
    ttft = percentiles((r["llm_first_token"] - r["asr_final"]) * 1000 for r in records
                       if r.get("llm_first_token") is not None and r.get("asr_final") is not None)
    return {"v2v_p50_ms": v2v["p50"], "v2v_p90_ms": v2v["p90"], "window_turns": v2v["n"],
            "llm_ttft_p50_ms": ttft["p50"]}


def trends(samples: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """RSS growth from minute 10 (or the second sample) to the end, V2V p50 drift from
    the first window to the last, threads and descriptors at the end."""
    base = next((s for s in samples if s["minute"] >= 10), samples[1] if len(samples) > 1
                else final)
    firsts = [s for s in samples if s["v2v_p50_ms"] is not None]
    return {
        "rss_growth_pct": (final["rss_mb"] - base["rss_mb"]) / base["rss_mb"] * 100,
        "rss_baseline_minute": base["minute"],
        "v2v_p50_drift_pct": ((firsts[-1]["v2v_p50_ms"] - firsts[0]["v2v_p50_ms"])
                              / firsts[0]["v2v_p50_ms"] * 100) if len(firsts) > 1 else None,
        "threads_end": final["threads"], "fds_end": final["fds"],
    }


def write_result(result: dict[str, Any], out: Path, name: str, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result["samples"], out / f"{name}.png", title)


# -- file mode ---------------------------------------------------------------------

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
    stats = proc_stats()
    lines = len((out_dir / "transcript.jsonl").read_text().splitlines())
    return {"minute": round((time.monotonic() - t0) / 60, 2), "rss_mb": stats["rss_mb"],
            "threads": threading.active_count(), "tasks": stats["tasks"],
            "fds": stats["fds"], "turns": len(session.log.timeline),
            "transcript_lines": lines, "errors": sum(t["status"] == "error"
                                                     for t in session.log.transcript),
            "history_messages": len(session.orchestrator.history),
            **latency(session.log.timeline[since:])}


async def soak(config_path: str, minutes: float, interval_s: float, out: Path) -> dict[str, Any]:
    config = load_config(config_path)
    clips = [read_wav(c.path) for c in load_manifest() if c.duration_s <= MAX_CLIP_S]
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
    turns = len(session.log.transcript)
    result = {
        "config": config_path, "minutes": round((time.monotonic() - t0) / 60, 2),
        "turns": turns, "user_utterances": user.spoken,
        "transcript_lines": final["transcript_lines"],
        "lost_lines": turns - final["transcript_lines"], "errors": final["errors"],
        "interrupted": sum(t["status"] == "interrupted" for t in session.log.transcript),
        **trends(samples, final),
        "samples": samples, "final": final,
    }
    write_result(result, out, "soak", "Soak: a looped corpus conversation with barge-ins")
    return result


# -- live mode ---------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSONL file that a running session appends to."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


TURN_LINE = re.compile(r"\[turn (\d+)\]")  # the console's lines of each turn
ERROR_LINE = re.compile(r"^(?:error: .*|Traceback .*)$", re.M)  # failures outside turns


class LiveUser:
    """Corpus clips played into a live session's virtual microphone for ``seconds``,
    each once the previous reply has played out; every ``barge_every``-th clip, the
    next one is spoken ``barge_after_s`` after the reply starts. ``tick`` is called
    while it waits (at least every ``poll_s``)."""

    def __init__(self, clips: list[Path], room: VirtualRoom, session: LiveSession,
                 tick: Callable[[], None], barge_every: int = 4, barge_after_s: float = 0.8,
                 reply_timeout_s: float = 45.0, poll_s: float = 0.1, seed: int = 0):
        self.clips, self.room, self.session, self.tick = clips, room, session, tick
        self.barge_every, self.barge_after_s = barge_every, barge_after_s
        self.reply_timeout_s, self.poll_s = reply_timeout_s, poll_s
        self.rng = random.Random(seed)
        self.timeline = session.out_dir / "timeline.jsonl"
        self.spoken = self.barge_ins = self.timed_out = 0

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Until ``done()`` (True) or ``timeout`` seconds or the session's end (False)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline or self.session.proc.poll() is not None:
                return False
            self.tick()
            time.sleep(self.poll_s)
        return True

    def _say(self, wav: Path) -> None:
        player = self.room.play(wav)
        self._wait(lambda: player.poll() is not None, timeout=MAX_CLIP_S + 10)
        if player.poll() is None:
            player.kill()
            player.wait()
        elif player.returncode != 0:
            raise RuntimeError(f"paplay {wav} into {self.room.mic} failed "
                               f"(exit {player.returncode})")

    def _turns(self) -> tuple[set[int], set[int]]:
        """The turn ids shown on the console, and those recorded in timeline.jsonl."""
        return ({int(n) for n in TURN_LINE.findall(self.session.output)},
                {t["turn_id"] for t in read_jsonl(self.timeline)})

    def _answered_after(self, last: int) -> bool:
        """A turn after ``last`` is recorded (its reply has played out, or it was cut),
        and no turn shown on the console is still open. A turn cut by the previous
        clip may be recorded after that clip has ended: it does not count."""
        shown, recorded = self._turns()
        return max(recorded, default=0) > last and shown <= recorded

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.session.proc.poll() is None:
            last = max(set().union(*self._turns()), default=0)  # turns before this clip
            self._say(self.clips[self.spoken % len(self.clips)])
            self.spoken += 1
            if self.spoken % self.barge_every == 0:  # cut in while it speaks
                replies = self.session.output.count("(V2V ")
                if self._wait(lambda: self.session.output.count("(V2V ") > replies,
                              self.reply_timeout_s):
                    self.barge_ins += 1
                    self._wait(lambda: False, self.barge_after_s)
                else:
                    self.timed_out += 1
                continue
            if not self._wait(lambda: self._answered_after(last), self.reply_timeout_s):
                self.timed_out += 1
            self._wait(lambda: False, self.rng.uniform(0.4, 1.0))


class LiveSampler:
    """Every ``interval_s``, a sample of a live session's process (/proc/<pid>) and of
    its timeline.jsonl lines since the last sample; ``tick`` takes it when it is due."""

    def __init__(self, pid: int, run_dir: Path, interval_s: float):
        self.pid, self.run_dir, self.interval_s = pid, run_dir, interval_s
        self.t0 = time.monotonic()
        self.due = self.t0 + interval_s
        self.since = 0  # timeline lines before this window
        self.samples: list[dict[str, Any]] = []

    def tick(self) -> None:
        if time.monotonic() < self.due:
            return
        self.samples.append(self.sample(self.since))
        self.since, self.due = self.samples[-1]["turns"], self.due + self.interval_s
        print(json.dumps(self.samples[-1]), flush=True)

    def sample(self, since: int = 0) -> dict[str, Any]:
        timeline = read_jsonl(self.run_dir / "timeline.jsonl")
        stats = proc_stats(self.pid)
        return {"minute": round((time.monotonic() - self.t0) / 60, 2),
                "rss_mb": stats["rss_mb"], "threads": stats["tasks"], "tasks": stats["tasks"],
                "fds": stats["fds"], "turns": len(timeline),
                "transcript_lines": count_lines(self.run_dir / "transcript.jsonl"),
                "errors": sum(t.get("status") == "error" for t in timeline),
                **latency(timeline[since:])}


def stop_session(session: LiveSession) -> str:
    """Ctrl-C, as a person would; killed if it has not ended 30 s later."""
    if session.proc.poll() is not None:
        return session.output
    try:
        return session.stop()
    except subprocess.TimeoutExpired:
        session.proc.kill()
        session.proc.wait()
        return session.output + "\nerror: the session did not end within 30 s of Ctrl-C\n"


def soak_live(config_path: str, minutes: float, interval_s: float, out: Path,
              start_timeout_s: float = 300.0) -> dict[str, Any]:
    load_config(config_path)  # a bad file fails here, before any server starts
    clips = [c.path for c in load_manifest() if c.duration_s <= MAX_CLIP_S]
    run_dir = (out / "soak_live_session").resolve()
    with PulseServer() as server:
        room = VirtualRoom(server)
        try:
            session = room.session(ROOT, run_dir, Path(config_path).resolve())
            session.wait_for("listening: just speak", timeout=start_timeout_s)
            sampler = LiveSampler(session.proc.pid, run_dir, interval_s)
            user = LiveUser(clips, room, session, sampler.tick)
            user.run(minutes * 60)
            ended_early = session.proc.poll() is not None
            if ended_early and not sampler.samples:
                raise RuntimeError(f"the live session ended by itself (exit "
                                   f"{session.proc.returncode}):\n{session.output[-3000:]}")
            final = sampler.samples[-1] if ended_early else sampler.sample()
            if not ended_early and (not sampler.samples
                                    or sampler.samples[-1]["turns"] < final["turns"]):
                sampler.samples.append(sampler.sample(sampler.since))  # the last window
            minutes_run = round((time.monotonic() - sampler.t0) / 60, 2)
            output = stop_session(session)
        finally:
            room.close()
    transcript = read_jsonl(run_dir / "transcript.jsonl")
    timeline = read_jsonl(run_dir / "timeline.jsonl")
    on_disk = Counter(t["turn_id"] for t in transcript)
    shown = {int(n) for n in TURN_LINE.findall(output)}
    lost = (sum((Counter(t["turn_id"] for t in timeline) - on_disk).values())
            + len(shown - set(on_disk)))
    messages = ([f"turn {t['turn_id']}: {t.get('error')}" for t in timeline
                 if t.get("status") == "error"] + ERROR_LINE.findall(output))
    exit_code = session.proc.returncode
    result = {
        "mode": "live", "config": config_path, "minutes": minutes_run,
        "turns": len(timeline), "user_utterances": user.spoken, "barge_ins": user.barge_ins,
        "transcript_lines": len(transcript), "reported_turns": len(shown),
        "lost_lines": lost, "errors": len(messages), "error_messages": messages,
        "interrupted": sum(t["status"] == "interrupted" for t in transcript),
        **trends(sampler.samples, final),
        "waits_timed_out": user.timed_out, "ended_by_itself": ended_early,
        "exit_code": exit_code,
        "clean_exit": exit_code == 130 and "session transcript saved" in output,
        "samples": sampler.samples, "final": final,
    }
    write_result(result, out, "soak-live", "Live soak (PulseAudio virtual devices): a looped "
                 "corpus conversation with barge-ins")
    return result


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--minutes", type=float, default=120.0)
    ap.add_argument("--interval", type=float, default=600.0, help="seconds between samples")
    ap.add_argument("--live", action="store_true",
                    help="through PulseAudio virtual devices, the pipeline as a subprocess")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.live:
        result = soak_live(args.config, args.minutes, args.interval, args.out)
    else:
        result = asyncio.run(soak(args.config, args.minutes, args.interval, args.out))
    name = "soak-live" if args.live else "soak"
    keys = ("minutes", "turns", "transcript_lines", "lost_lines", "errors", "interrupted",
            "rss_growth_pct", "v2v_p50_drift_pct")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    print(f"wrote {args.out}/{name}.json, {name}.png")


if __name__ == "__main__":
    main()
