"""How soon the VAD hears that speech ended, on clean and on noisy clips.

    .venv/bin/python -m eval.bench_vad [--relative-drop 0.2 ...]

Every corpus clip, with 0.5 s of silence before and 1.5 s after, goes through the
Silero VAD stage offline. For each clip: the *end lag*, from the true end of speech
(the clip's own audio, a noisy clip's clean twin: eval.speech_bounds) to the first
SpeechPaused after the last resume (where the committed speculative turn started:
the rest of the endpoint delay is the end-of-turn silence, counted from the VAD's own
end of speech; negative if the VAD heard the end before the energy did); and the
*inner pauses*, SpeechPaused events followed by a resume (each starts speculative work
that speech then discards), and utterances the VAD itself splits (a silence past
``pipeline.max_silence_ms`` with adaptive endpointing, else ``vad.min_silence_ms``). Per
setting of ``vad.relative_drop`` and of ``vad.early_pause_drop``, per group (clean,
noisy): p50 and p90 of the lag, inner pauses per clip, and clips whose end was not heard
before the trailing silence. Writes eval/out/bench_vad.json.

``--room``: the noisy clips as in a noisy room, where the noise does not stop with the
clip: each noisy clip's own noise (the clip less its clean twin) is looped for
``ROOM_BEFORE_S`` before it and ``ROOM_AFTER_S`` after it. For each clip: the
utterances the VAD heard, and whether it heard the last one end before the input
ended (where a live session's input never does). Writes eval/out/bench_vad_room.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from eval.corpus import load_manifest
from eval.speech_bounds import clip_noise, noisy_pairs, speech_end, speech_span
from eval.stats import percentiles
from pipeline.audio import read_wav
from pipeline.config import load_config
from pipeline.events import (AudioFrame, SpeechEnded, SpeechPaused, SpeechResumed,
                             SpeechStarted, stream_of)

OUT = Path(__file__).resolve().parent / "out"
LEAD_S, TAIL_S = 0.5, 1.5
ROOM_BEFORE_S, ROOM_AFTER_S = 1.0, 3.0


async def _events(vad, audio: np.ndarray) -> list:
    from stages.vad_silero import FRAME

    frames = [AudioFrame(0, (i + 1) * FRAME / 16000, audio[i * FRAME:(i + 1) * FRAME])
              for i in range(len(audio) // FRAME)]
    vad.reset()
    return [ev async for ev in vad.process(stream_of(*frames))]


def end_heard(events: list) -> Optional[float]:
    """When the VAD heard the last utterance end: its first pause after the last resume
    or start (a pause followed by a resume is inside the utterance; with
    ``vad.early_pause_drop`` the provisional pause, where speculation starts, comes
    before the one that confirms it)."""
    heard = None
    for ev in events:
        if isinstance(ev, (SpeechResumed, SpeechStarted)):
            heard = None
        elif isinstance(ev, SpeechPaused) and heard is None:
            heard = ev.t
    return heard


def _started_vad(config_path: str, **update: Any):
    """The profile's Silero VAD with ``vad.<key>: value`` for each of ``update``, closing
    utterances where the orchestrator makes it close them (pipeline.max_silence_ms with
    adaptive endpointing), loaded."""
    from stages.vad_silero import SileroVAD

    config = load_config(config_path)
    vad = SileroVAD(config.vad.model_copy(update=update))
    pc = config.pipeline
    if pc.endpointing == "adaptive" and pc.speculative:  # as the orchestrator sets it
        vad.end_silence_ms = pc.max_silence_ms
    asyncio.run(vad.start())
    return vad


def measure(config_path: str, key: str, value: Optional[float]) -> dict[str, Any]:
    """The clips through the VAD with ``vad.<key>: value`` (relative_drop or
    early_pause_drop; None: the absolute thresholds alone)."""
    vad = _started_vad(config_path, **{"relative_drop": None, "early_pause_drop": None,
                                       key: value})
    clips = load_manifest()
    rows = []
    try:
        for clip in clips:
            audio = read_wav(clip.path)
            padded = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), audio,
                                     np.zeros(int(TAIL_S * 16000), np.float32)])
            end = LEAD_S + speech_end(clip, clips)
            evs = asyncio.run(_events(vad, padded))
            last = end_heard(evs)
            rows.append({"clip": clip.id, "noisy": clip.id.endswith("_noisy"),
                         "lag_ms": round((last - end) * 1000, 1) if last is not None else None,
                         "heard_in_clip": last is not None and last <= LEAD_S + clip.duration_s,
                         "inner_pauses": sum(isinstance(ev, SpeechResumed) for ev in evs),
                         "utterances": sum(isinstance(ev, SpeechEnded) for ev in evs)})
    finally:
        asyncio.run(vad.aclose())
    groups = {}
    for name, keep in (("clean", False), ("noisy", True)):
        sel = [r for r in rows if r["noisy"] == keep]
        groups[name] = {"clips": len(sel),
                        "lag_ms": percentiles(r["lag_ms"] for r in sel if r["lag_ms"] is not None),
                        "inner_pauses_per_clip": sum(r["inner_pauses"] for r in sel) / max(1, len(sel)),
                        "end_heard_before_the_clip_ended": sum(r["heard_in_clip"] for r in sel),
                        "split_utterances": sum(r["utterances"] > 1 for r in sel)}
    return {"setting": f"{key}: {value}" if value is not None else "absolute thresholds",
            key: value, "groups": groups, "rows": rows}


def in_a_noisy_room(config_path: str) -> list[dict[str, Any]]:
    """Each noisy clip with its noise going on before and after it (see ``--room``)."""
    vad = _started_vad(config_path)
    rows = []
    try:
        for clip, twin in noisy_pairs(load_manifest()):
            noisy, clean = read_wav(clip.path), read_wav(twin.path)
            noise, snr = clip_noise(noisy, clean)
            n = len(noise)
            room = np.tile(noise, int(np.ceil((ROOM_BEFORE_S + ROOM_AFTER_S) * 16000 / n)) + 1)
            before = room[:int(ROOM_BEFORE_S * 16000)]
            after = room[len(before):len(before) + int(ROOM_AFTER_S * 16000)]
            audio = np.concatenate([before, noisy, after])
            start, end = (ROOM_BEFORE_S + t for t in speech_span(clean))
            evs = asyncio.run(_events(vad, audio))
            started = [ev.t for ev in evs if isinstance(ev, SpeechStarted)]
            heard = end_heard(evs)
            input_end = len(audio) / 16000
            rows.append({"clip": clip.id, "snr_db": round(snr, 1),
                         "utterances": len(started),
                         # Silero heard the noise alone as speech (before the user spoke)
                         "began_on_the_noise": bool(started and started[0] < start),
                         # a pause the input's end did not cause: heard while the noise went on
                         "end_heard": bool(heard is not None and heard < input_end - 0.1),
                         "lag_ms": round(float(heard - end) * 1000, 1) if heard is not None else None})
    finally:
        asyncio.run(vad.aclose())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--relative-drop", type=float, nargs="*", default=[0.2],
                    help="settings to compare with the absolute thresholds alone")
    ap.add_argument("--early-pause-drop", type=float, nargs="*", default=[0.2],
                    help="the same for vad.early_pause_drop (speculation only)")
    ap.add_argument("--room", action="store_true",
                    help="only the noisy clips with their noise going on (a noisy room)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.room:
        rows = in_a_noisy_room(args.config)
        print("| noisy clip, its noise going on | SNR dB | utterances | began on the noise "
              "| end heard | lag ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            lag = f"{r['lag_ms']:.0f}" if r["end_heard"] else "-"
            print(f"| {r['clip']} | {r['snr_db']:.1f} | {r['utterances']} | "
                  f"{'yes' if r['began_on_the_noise'] else 'no'} | "
                  f"{'yes' if r['end_heard'] else 'no'} | {lag} |")
        print(f"end heard while the noise went on: {sum(r['end_heard'] for r in rows)} of "
              f"{len(rows)}")
        (OUT / "bench_vad_room.json").write_text(json.dumps(rows, indent=1))
        return
    results = [measure(args.config, "relative_drop", None)]
    results += [measure(args.config, "relative_drop", d) for d in args.relative_drop]
    results += [measure(args.config, "early_pause_drop", d) for d in args.early_pause_drop]
    print("| setting | clips | end lag p50 ms | p90 ms | inner pauses per clip "
          "| end heard inside the clip | utterances split |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for res in results:
        for name, g in res["groups"].items():
            print(f"| {res['setting']} | {name} ({g['clips']}) | {g['lag_ms']['p50']:.0f} | "
                  f"{g['lag_ms']['p90']:.0f} | {g['inner_pauses_per_clip']:.2f} | "
                  f"{g['end_heard_before_the_clip_ended']} | {g['split_utterances']} |")
    (OUT / "bench_vad.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
