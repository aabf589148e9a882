"""The "pauses" benchmark: does the end of turn wait for a user who pauses, and
answer at once one who is done?

    .venv/bin/python -m eval.pauses [--config FILE] [--items N]   (also part of `make report`)

A conversation built from the real-speech corpus, spoken in real time:
- ``split``: a clip cut at a word boundary near its middle (Whisper's word
  timestamps), with 300, 500, 800 or 1200 ms of silence inserted there;
- ``natural``: long read sentences with their own inner pauses (each measured:
  the longest silence between voiced windows, eval.speech_bounds);
- ``short``: short complete answers ("ten of clubs", "Please call Stella.").
It runs once with the configured end of turn and once with the fixed silence
(``pipeline.endpointing: fixed``, vad.min_silence_ms), in the same run, and reports
for each: the premature-endpoint rate (a reply started playing while the user had
more to say), the share of utterances answered as two turns (split), late
endpoints (V2V over 1 s), V2V p50/p90 (from the utterance's last voiced sample to
the reply's first sample), and the end-of-turn model's CPU time per turn.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from eval.corpus import Clip, load_manifest
from eval.scripted import ScriptedUser, UserTurn
from eval.speech_bounds import longest_pause, speech_end
from eval.stats import percentiles, plain
from pipeline.audio import PIPELINE_RATE, read_wav
from pipeline.clock import Clock
from pipeline.config import CascadeConfig, load_config
from pipeline.console import Console
from pipeline.session import Session
from pipeline.sinks import FileSink

OUT = Path(__file__).resolve().parent / "out"
INSERTED_MS = (300, 500, 800, 1200)
LATE_MS = 1000.0
HEARD_STATUSES = ("answered", "interrupted", "error")  # turns that reached the history


@dataclass(frozen=True)
class Item:
    clip: Clip  # id carries the variant: "<clip>+800ms"
    audio: np.ndarray
    end_s: float  # the last voiced sample, from the item's start
    kind: str  # split | natural | short
    pause_ms: Optional[int] = None  # the inserted silence (split)
    # the longest silence inside the speech, measured (natural and short; for a split
    # item the inserted silence is the pause that counts)
    longest_pause_ms: Optional[float] = None

    @property
    def pause_class_ms(self) -> float:
        """The pause that puts the item in or out of the "pauses up to 1 s" set."""
        if self.pause_ms is not None:
            return float(self.pause_ms)
        return self.longest_pause_ms or 0.0


def word_cut(audio: np.ndarray, whisper) -> Optional[float]:
    """A word boundary near the middle: halfway between a word's end and the next's start."""
    segments, _ = whisper.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
    words = [w for s in segments for w in s.words]
    if len(words) < 4:
        return None
    i = len(words) // 2 - 1
    return (words[i].end + words[i + 1].start) / 2


def build_items(n_split: int = 12, n_natural: int = 5, n_short: int = 5) -> list[Item]:
    from faster_whisper import WhisperModel

    from stages.asr_faster_whisper import resolve_model

    clips = load_manifest()
    clean = [c for c in clips if not c.id.endswith("_noisy")]
    whisper = WhisperModel(str(resolve_model("tiny.en")), device="cpu", compute_type="int8",
                           cpu_threads=2)
    items: list[Item] = []
    for c in [c for c in clean if 3.0 < c.duration_s <= 7.0][:n_split]:
        audio = read_wav(c.path)
        cut = word_cut(audio, whisper)
        if cut is None:
            continue
        ms = INSERTED_MS[len(items) % len(INSERTED_MS)]
        at = int(cut * PIPELINE_RATE)
        gap = np.zeros(int(ms / 1000 * PIPELINE_RATE), np.float32)
        items.append(Item(replace(c, id=f"{c.id}+{ms}ms"), np.concatenate([audio[:at], gap,
                                                                            audio[at:]]),
                          speech_end(c, clips) + ms / 1000, "split", ms))
    for kind, chosen in (
            ("natural", sorted((c for c in clean if c.duration_s > 8.0),
                               key=lambda c: c.duration_s)[:n_natural]),
            ("short", sorted((c for c in clean if c.duration_s <= 3.0),
                             key=lambda c: c.duration_s)[:n_short])):
        for c in chosen:
            audio = read_wav(c.path)
            items.append(Item(c, audio, speech_end(c, clips), kind,
                              longest_pause_ms=round(longest_pause(audio) * 1000)))
    return items


def score(user_turns: list[UserTurn], items: list[Item], records: list[dict[str, Any]],
          end: float) -> dict[str, Any]:
    """Per utterance: premature (a reply sample played before its last voiced sample),
    split (two turns of it reached the history), its V2V (the turn that answered its
    end), late (V2V over 1 s or never answered)."""
    rows = []
    for i, (ut, item) in enumerate(zip(user_turns, items)):
        nxt = user_turns[i + 1].offset if i + 1 < len(user_turns) else end
        mine = [r for r in records if r.get("user_speech_end") is not None
                and ut.offset <= r["user_speech_end"] < nxt]
        premature = any(r.get("playback_start") is not None
                        and r["playback_start"] < ut.speech_end - 0.05 for r in mine)
        heard = [r for r in mine if r["status"] in HEARD_STATUSES]
        final = [r for r in heard if r.get("playback_start") is not None
                 and r["playback_start"] >= ut.speech_end - 0.05]
        v2v = (final[-1]["playback_start"] - ut.speech_end) * 1000 if final else None
        rows.append({"item": item.clip.id, "kind": item.kind, "pause_ms": item.pause_ms,
                     "longest_pause_ms": item.longest_pause_ms,
                     "pause_class_ms": item.pause_class_ms,
                     "premature": premature, "split": len(heard) > 1,
                     "late": v2v is None or v2v > LATE_MS, "v2v_ms": v2v,
                     "turns": [{k: r.get(k) for k in ("turn_id", "status", "user_speech_end",
                                                      "endpoint", "playback_start",
                                                      "end_of_turn")} for r in mine]})
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows) or 1
    upto_1s = [r for r in rows if r["pause_class_ms"] <= 1000]
    v2v = percentiles(r["v2v_ms"] for r in rows)
    return {"utterances": len(rows), "utterances_pauses_upto_1s": len(upto_1s),
            "premature_rate": sum(r["premature"] for r in rows) / n,
            "premature_rate_pauses_upto_1s": sum(r["premature"] for r in upto_1s) / (len(upto_1s) or 1),
            "split_utterances": sum(r["split"] for r in rows),
            "split_utterances_pauses_upto_1s": sum(r["split"] for r in upto_1s),
            "late_endpoints": sum(r["late"] for r in rows),
            "v2v_ms": {"p50": v2v["p50"], "p90": v2v["p90"]}, "rows": rows}


async def run_items(config: CascadeConfig, items: list[Item], seed: int = 0) -> dict[str, Any]:
    session = Session(config, lambda st: FileSink(rate=st.tts.sample_rate),
                      console=Console(quiet=True))
    async with session:
        clock = Clock()
        sink = session.sink
        user = ScriptedUser([(it.clip, it.audio, it.end_s) for it in items], clock,
                            lambda: not session.busy and sink.busy_until() <= clock.now(),
                            seed=seed)
        t0 = time.process_time()
        await session.run(user.frames(), clock)
        cpu_s = time.process_time() - t0
    result = score(user.turns, items, session.log.timeline, user.media_time)
    eot = session.orchestrator.end_of_turn
    turns = max(1, len(session.log.timeline))
    smart = eot.smart_turn.cpu_ms if eot is not None and eot.smart_turn is not None else []
    result["smart_turn_cpu_ms_per_turn"] = sum(smart) / turns if smart else None
    result["smart_turn_cpu_ms"] = percentiles(smart)
    result["process_cpu_s"] = round(cpu_s, 1)
    result["speculation"] = dict(session.orchestrator.stats)
    return result


def pauses_benchmark(config: CascadeConfig, items: Optional[list[Item]] = None) -> dict[str, Any]:
    """The configured end of turn and the fixed silence, on the same utterances."""
    items = items or build_items()
    adaptive = asyncio.run(run_items(config, items))
    fixed = asyncio.run(run_items(config.replace(pipeline={"endpointing": "fixed"}), items))
    keys = ("premature_rate", "split_utterances", "late_endpoints", "v2v_ms", "utterances",
            "premature_rate_pauses_upto_1s", "split_utterances_pauses_upto_1s",
            "utterances_pauses_upto_1s")
    out = {k: adaptive[k] for k in keys}
    out["endpointing"] = config.pipeline.endpointing
    out["baseline"] = {k: fixed[k] for k in keys}
    out["baseline"]["vad_min_silence_ms"] = getattr(config.vad, "min_silence_ms", None)
    out["detail"] = {"adaptive": adaptive, "fixed": fixed}
    return out


def render(p: dict[str, Any]) -> str:
    def ms(x):
        return "–" if x is None else f"{x:.0f}"

    a, b = p, p["baseline"]
    n = p["detail"]["adaptive"]["utterances"]
    cpu = p["detail"]["adaptive"].get("smart_turn_cpu_ms_per_turn")
    lines = ["| end of turn | premature endpoints | utterances split in two | late (> 1 s) | "
             "V2V p50 | V2V p90 |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in ((f"{p['endpointing']} (this profile)", a),
                    (f"fixed {b.get('vad_min_silence_ms')} ms silence", b)):
        lines.append(f"| {name} | {r['premature_rate']:.0%} | {r['split_utterances']}/{n} | "
                     f"{r['late_endpoints']}/{n} | {ms(r['v2v_ms']['p50'])} ms | "
                     f"{ms(r['v2v_ms']['p90'])} ms |")
    over = [r["item"] for r in p["detail"]["adaptive"]["rows"] if r["pause_class_ms"] > 1000]
    lines.append("\nWith pauses up to 1 s only (the target's set; out of it, a pause over 1 s, "
                 f"inserted or measured: {', '.join(over) or 'none'}): "
                 + "; ".join(f"{name}: premature {r['premature_rate_pauses_upto_1s']:.0%}, split "
                             f"{r['split_utterances_pauses_upto_1s']}/"
                             f"{r['utterances_pauses_upto_1s']}"
                             for name, r in ((p["endpointing"], a), ("fixed", b))) + ".")
    if cpu is not None:
        lines.append(f"\nSmart Turn CPU time: {cpu:.0f} ms per turn "
                     f"(p50 {ms(p['detail']['adaptive']['smart_turn_cpu_ms']['p50'])} ms per "
                     "estimate; one estimate per pause).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    result = pauses_benchmark(load_config(args.config))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pauses.json").write_text(json.dumps(result, indent=2, default=plain))
    print(render(result))


if __name__ == "__main__":
    main()
