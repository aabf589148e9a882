"""A noisy room, end to end: the user speaks twice in a room whose noise never stops.

    .venv/bin/python -m eval.room [--config configs/default.yaml] [--rooms 6] [--lead 1.0]

Each of the corpus's noisy clips (VCTK-Valentini, each with a clean twin) makes a room:
its own noise (the clip less its clean twin) loops for the whole session, which is
``LEAD_S`` of noise, the noisy clip (the first utterance), ``GAP_S`` of noise (the
reply plays), a second utterance (the next room's clean twin, mixed into this noise at
the first one's speech level), and ``TAIL_S`` of noise. Silero rates babble and cafe
noise as speech, so without pipeline.words_stall_s the first utterance would run to
vad.max_utterance_s (here: to the input's end). Each room is one file-mode session at
real-time pace (the listen-ahead's partials keep pace with the audio), with the profile
and again with words_stall_s off, in the same run.

Per utterance: answered (by a turn whose reply started, whose words match it best, at a
WER under ``HEARD_WER``, and not both utterances merged in one turn), its transcript's WER, the endpoint delay and
V2V from the true end of speech (the clean twin's). Per room: the other turns (on the
noise alone, or cut). Writes eval/out/room.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from eval.corpus import load_manifest
from eval.speech_bounds import clip_noise, noisy_pairs, speech_span
from eval.stats import percentiles
from eval.wer import wer
from pipeline.audio import PIPELINE_RATE, read_wav, write_wav
from pipeline.config import CascadeConfig, load_config
from pipeline.console import Console

OUT = Path(__file__).resolve().parent / "out"
LEAD_S, GAP_S, TAIL_S = 1.0, 7.0, 7.0
HEARD_WER = 0.5  # an answer to words heard this wrong is an answer to something else


def rooms(lead_s: float = LEAD_S) -> list[dict[str, Any]]:
    """Each room's audio and its two utterances: (start, end) of speech and the text."""
    pairs = noisy_pairs(load_manifest())
    out = []
    for i, (noisy_clip, clean_clip) in enumerate(pairs):
        noisy, clean = read_wav(noisy_clip.path), read_wav(clean_clip.path)
        noise, snr = clip_noise(noisy, clean)
        n = len(noise)
        second_clip = pairs[(i + 1) % len(pairs)][1]
        second = read_wav(second_clip.path)
        # the second utterance at the first one's speech level
        second = second * np.sqrt(np.mean(np.square(clean[:n])) / np.mean(np.square(second)))
        r = PIPELINE_RATE
        lengths = [int(lead_s * r), len(noisy), int(GAP_S * r), len(second), int(TAIL_S * r)]
        total = sum(lengths)
        room = np.tile(noise, total // n + 2)[n:n + total].astype(np.float32)
        audio = room.copy()
        first_at = lengths[0]
        audio[first_at:first_at + len(noisy)] = noisy  # the clip has this very noise in it
        second_at = first_at + len(noisy) + lengths[2]
        audio[second_at:second_at + len(second)] += second
        utterances = []
        for at, speech, text in ((first_at, clean, noisy_clip.text),
                                 (second_at, second, second_clip.text)):
            s, e = speech_span(speech)
            utterances.append({"start": at / r + s, "end": at / r + e, "text": text})
        out.append({"room": noisy_clip.id, "snr_db": round(snr, 1),
                    "audio": audio, "utterances": utterances})
    return out


def score(room: dict[str, Any], records: list[dict[str, Any]],
          texts: dict[int, str]) -> dict[str, Any]:
    """Which turn answered which utterance: the one whose words it matches best
    (WER under 1); a turn that matches both utterances together better than either
    answered them as one (merged: the first was not answered on its own)."""
    utts = room["utterances"]
    both = " ".join(u["text"] for u in utts)
    answered: dict[int, dict[str, Any]] = {}
    others = []
    for r in records:
        heard = texts.get(r["turn_id"], "")
        errs = [wer([u["text"]], [heard]) for u in utts] if heard else [1.0] * len(utts)
        best = int(np.argmin(errs))
        # a reply that started is an answer, even if the next utterance cut it
        spoke = r["status"] == "answered" or (r["status"] == "interrupted"
                                              and r.get("first_sound") is not None)
        if not spoke or errs[best] >= 1.0 or best in answered:
            others.append(r["status"])
            continue
        merged = wer([both], [heard]) < errs[best]
        u = utts[best]
        answered[best] = {
            "heard": heard, "wer": round(errs[best], 3), "merged": merged,
            "endpoint_delay_ms": round((r["endpoint"] - u["end"]) * 1000),
            "v2v_ms": (round((r["first_sound"] - u["end"]) * 1000)
                       if r.get("first_sound") is not None else None)}
    rows = []
    for i, u in enumerate(utts):
        row: dict[str, Any] = {"text": u["text"], "answered": i in answered
                               and not answered[i]["merged"]
                               and answered[i]["wer"] < HEARD_WER}
        row.update(answered.get(i, {}))
        rows.append(row)
    return {"room": room["room"], "snr_db": room["snr_db"], "utterances": rows,
            "other_turns": len(others), "their_statuses": others}


async def _session(config: CascadeConfig, audio: np.ndarray, work: Path
                   ) -> tuple[list[dict[str, Any]], dict[int, str]]:
    from pipeline.filemode import run_file

    wav = work / "room.wav"
    write_wav(wav, audio, PIPELINE_RATE)
    out = work / "out"
    await run_file(config, wav, out, console=Console(quiet=True))
    records = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    texts = {}
    for line in (out / "transcript.jsonl").read_text().splitlines():
        rec = json.loads(line)
        texts[rec["turn_id"]] = rec.get("user") or ""
    return records, texts


def room_benchmark(config: CascadeConfig, n_rooms: Optional[int] = None,
                   baseline: bool = True, lead_s: float = LEAD_S) -> dict[str, Any]:
    settings = [("profile", config)]
    if baseline:
        settings.append(("words_stall_s off", config.replace(pipeline={"words_stall_s": None})))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for room in rooms(lead_s)[:n_rooms]:
            for name, cfg in settings:
                records, texts = asyncio.run(_session(cfg, room["audio"], Path(tmp)))
                results[name].append(score(room, records, texts))
    summary = {}
    for name, rows in results.items():
        utts = [u for r in rows for u in r["utterances"]]
        answered = [u for u in utts if u["answered"]]
        summary[name] = {
            "utterances": len(utts), "answered": len(answered),
            "endpoint_delay_ms": percentiles(u["endpoint_delay_ms"] for u in answered),
            "v2v_ms": percentiles(u["v2v_ms"] for u in answered if u["v2v_ms"] is not None),
            "wer": (wer([u["text"] for u in answered], [u["heard"] for u in answered])
                    if answered else None),
            "other_turns": sum(r["other_turns"] for r in rows)}
    return {"words_stall_s": config.pipeline.words_stall_s, "lead_s": lead_s,
            "summary": summary,
            "rooms": results}


def render(res: dict[str, Any]) -> str:
    lines = ["| setting | utterances answered | endpoint delay p50 / p90 ms | V2V p50 / p90 ms "
             "| WER (answered) | other turns (noise, cut) |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in res["summary"].items():
        d, v = s["endpoint_delay_ms"], s["v2v_ms"]
        fmt = lambda p: f"{p['p50']:.0f} / {p['p90']:.0f}" if p.get("p50") is not None else "-"
        w = f"{s['wer']:.1%}" if s["wer"] is not None else "-"
        lines.append(f"| {name} | {s['answered']} of {s['utterances']} | {fmt(d)} | {fmt(v)} "
                     f"| {w} | {s['other_turns']} |")
    lines.append("")
    lines.append("| room (SNR) | setting | first utterance | second utterance | other turns |")
    lines.append("|---|---|---|---|---|")
    for name, rows in res["rooms"].items():
        for r in rows:
            cells = []
            for u in r["utterances"]:
                if "heard" not in u:
                    cells.append("not answered")
                else:
                    cells.append(f"{'merged: ' if u['merged'] else ''}"
                                 f"{u['endpoint_delay_ms']} ms, \"{u['heard']}\"")
            lines.append(f"| {r['room']} ({r['snr_db']:.1f} dB) | {name} | {cells[0]} | "
                         f"{cells[1]} | {', '.join(r['their_statuses']) or '-'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--rooms", type=int, default=None, help="only the first N rooms")
    ap.add_argument("--lead", type=float, default=LEAD_S,
                    help="seconds of the room's noise before the user first speaks")
    ap.add_argument("--no-baseline", action="store_true",
                    help="the profile only, not again with words_stall_s off")
    args = ap.parse_args()
    res = room_benchmark(load_config(args.config), args.rooms, not args.no_baseline, args.lead)
    print(render(res))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "room.json").write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
