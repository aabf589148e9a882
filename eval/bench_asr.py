"""ASR benchmark: standard faster-whisper transcription (30 s padded window) vs
Cascade's short-utterance window with its guard, same model, same beam, same run.

    .venv/bin/python -m eval.bench_asr [--config configs/default.yaml] [--repeats 1]
                                       [--window-floor S] [--slow FRACTION]

Prints WER and per-utterance decode time (median, p90) for both, and writes
eval/out/bench_asr.json.
"""
from __future__ import annotations

import argparse
import contextlib
import asyncio
import json
import time
from pathlib import Path

import numpy as np

from eval.corpus import load_manifest
from eval.cpu_quota import SlowCpu
from eval.probe import LEGEND, describe, speed_probe
from eval.stats import percentiles
from eval.wer import wer
from pipeline.audio import read_wav
from pipeline.config import load_config
from stages.asr_faster_whisper import FasterWhisperASR

OUT = Path(__file__).resolve().parent / "out"


def bench(config_path: str, repeats: int = 1, window_floor_s: float | None = None) -> dict:
    config = load_config(config_path)
    if window_floor_s is not None:
        config = config.replace(asr={"window_floor_s": window_floor_s})
    asr = FasterWhisperASR(config.asr)
    asyncio.run(asr.start())
    clips = load_manifest()
    audio = [read_wav(c.path) for c in clips]
    asr.transcribe(np.zeros(16000, np.float32))  # warm-up
    results = {}
    # the reference is faster-whisper's transcription exactly as it comes (no token bound)
    standard = lambda a: asr.transcribe_padded(a, bounded=False)  # noqa: E731
    for name, fn in (("standard_padded", standard), ("short_window", asr.transcribe)):
        hyps, times = [], []
        asr.stats = {k: 0 for k in asr.stats}
        for _ in range(repeats):
            hyps = []
            for a in audio:
                t0 = time.perf_counter()
                hyps.append(fn(a)[0])
                times.append(time.perf_counter() - t0)
        spread = percentiles(times)
        results[name] = {
            "wer": round(wer([c.text for c in clips], hyps), 4),
            "decode_ms_p50": round(spread["p50"] * 1000, 1),
            "decode_ms_p90": round(spread["p90"] * 1000, 1),
            "utterances": len(clips),
        }
        if name == "short_window":
            results[name]["guard_fallbacks"] = asr.stats["fallback"]
            results[name]["retried_longer"] = asr.stats["retried"]
            results[name]["repeats_cut"] = asr.stats["repaired"]
    results["wer_delta_points"] = round(
        (results["short_window"]["wer"] - results["standard_padded"]["wer"]) * 100, 2)
    results["speedup_p50"] = round(results["standard_padded"]["decode_ms_p50"]
                                   / results["short_window"]["decode_ms_p50"], 2)
    results["config"] = {k: v for k, v in config.asr.model_dump().items()}
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--slow", type=float, metavar="FRACTION",
                    help="emulate a slower CPU: every thread at this fraction of a core")
    ap.add_argument("--window-floor", type=float, metavar="S",
                    help="asr.window_floor_s for the short window (the profile's otherwise)")
    args = ap.parse_args()
    with SlowCpu(args.slow) if args.slow else contextlib.nullcontext():
        start = speed_probe()
        res = bench(args.config, args.repeats, args.window_floor)
        end = speed_probe()
    res["cpu_fraction"] = args.slow or 1.0
    # the machine's speed at the start and the end (under --slow: the emulation's)
    res["speed_probe_ms"] = {"start": start, "end": end}
    for name in ("standard_padded", "short_window"):
        r = res[name]
        print(f"{name:16s} WER {r['wer'] * 100:5.2f}%  decode p50 {r['decode_ms_p50']:6.1f} ms"
              f"  p90 {r['decode_ms_p90']:6.1f} ms")
    print(f"short window: {res['short_window']['retried_longer']} retried in the longer "
          f"window, {res['short_window']['guard_fallbacks']} guard fallbacks, "
          f"{res['short_window']['repeats_cut']} repeats cut, WER "
          f"{res['wer_delta_points']:+.2f} points, {res['speedup_p50']}x faster at p50")
    print(f"CPU probe (eval/probe.py: {LEGEND}): {describe(start)} at the start, "
          f"{describe(end)} at the end")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_asr.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
