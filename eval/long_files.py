"""One-hour input files in file mode: memory stays bounded, nothing is lost.

    .venv/bin/python -m eval.long_files [--minutes 60] [--short 2] [--kinds silence noise speech]

Three kinds of input, each written to disk in one-minute blocks (never held whole)
at ``--short`` minutes and at ``--minutes``, run through ``python -m pipeline run
--input FILE --fast`` (file mode as fast as the CPU goes) in a fresh process that
reports its own peak RSS:

- silence: digital zeros;
- noise: white noise at -20 dBFS RMS, nothing but noise;
- speech: one corpus utterance looped back to back with no pause added (the VAD
  still finds the clip's own short silences, so the user talks on over each reply:
  turns end interrupted, and a piece longer than ``vad.max_utterance_s`` is cut).

For each: exit code, wall time, peak RSS (the long file against the short one),
turns in the transcript, turns with an error, and whether conversation.wav covers
the whole input. Writes eval/out/long_files.json (the reliability report shows it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from eval.corpus import load_manifest
from pipeline.audio import read_wav

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "eval" / "out"
RATE = 16000
CLIP = "cmusphinx_goforward"  # a short corpus utterance, looped for the speech file

# python -m pipeline, printing its own peak RSS when it exits
PEAK = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
        "sys.argv = ['pipeline', *sys.argv[1:]]; runpy.run_module('pipeline', run_name='__main__')")


def write_input(path: Path, kind: str, minutes: float) -> None:
    rng = np.random.default_rng(0)
    loop = read_wav(next(c for c in load_manifest() if c.id == CLIP).path) if kind == "speech" \
        else None
    total = int(minutes * 60 * RATE)
    pos = 0
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=1, subtype="PCM_16") as f:
        while pos < total:
            n = min(60 * RATE, total - pos)
            if kind == "silence":
                block = np.zeros(n, np.float32)
            elif kind == "noise":
                block = (0.1 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)
            else:
                idx = (np.arange(pos, pos + n) % len(loop))
                block = loop[idx]
            f.write(block)
            pos += n


def run_file(path: Path, out: Path, timeout_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK, "run", "--input", str(path),
                          "--output-dir", str(out), "--fast"], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    peak = res.stderr.split("PEAK_RSS_KB")[-1].split()
    lines = [json.loads(x) for x in (out / "transcript.jsonl").read_text().splitlines()] \
        if (out / "transcript.jsonl").is_file() else []
    conv = out / "conversation.wav"
    return {"exit_code": res.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": round(int(peak[0]) / 1024, 1) if peak else None,
            "turns": len(lines), "turns_with_error": sum("error" in x for x in lines),
            "answered": sum(x.get("status") == "answered" for x in lines),
            "conversation_s": round(sf.info(str(conv)).duration, 1) if conv.is_file() else None,
            "input_s": round(sf.info(str(path)).duration, 1),
            "stderr_tail": res.stderr.strip().splitlines()[-3:] if res.returncode else []}


def bench(kinds: list[str], minutes: float, short: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cascade-long-") as tmp:
        for kind in kinds:
            for m in (short, minutes):
                wav = Path(tmp) / f"{kind}-{m:g}.wav"
                write_input(wav, kind, m)
                print(f"{kind}, {m:g} min ...", flush=True)
                r = run_file(wav, Path(tmp) / f"out-{kind}-{m:g}", timeout_s=max(600, m * 60))
                wav.unlink()
                results[f"{kind} {m:g} min"] = {"kind": kind, "minutes": m, **r}
                print(f"  {r}", flush=True)
            long_, short_ = results[f"{kind} {minutes:g} min"], results[f"{kind} {short:g} min"]
            if long_["peak_rss_mb"] and short_["peak_rss_mb"]:
                long_["peak_rss_growth_mb"] = round(long_["peak_rss_mb"] - short_["peak_rss_mb"], 1)
    return {"minutes": minutes, "short_minutes": short, "runs": results}


def render(result: dict[str, Any]) -> list[str]:
    lines = ["| input | exit | wall time (file mode, as fast as it goes) | peak RSS | vs the short file | turns | with an "
             "error | conversation.wav covers the input |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in result["runs"].items():
        growth = r.get("peak_rss_growth_mb")
        covers = r["conversation_s"] is not None and r["conversation_s"] >= r["input_s"]
        lines.append(f"| {name} | {r['exit_code']} | {r['wall_s']:.0f} s | {r['peak_rss_mb']} MB | "
                     f"{'' if growth is None else f'{growth:+.1f} MB'} | {r['turns']} | "
                     f"{r['turns_with_error']} | {'yes' if covers else 'NO'} "
                     f"({r['conversation_s']} s of {r['input_s']} s) |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--short", type=float, default=2)
    ap.add_argument("--kinds", nargs="+", default=["silence", "noise", "speech"],
                    choices=["silence", "noise", "speech"])
    ap.add_argument("--merge", action="store_true",
                    help="add these runs to the ones already in long_files.json")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    result = bench(args.kinds, args.minutes, args.short)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "long_files.json"
    if args.merge and path.is_file():
        old = json.loads(path.read_text())
        result = {**old, "runs": {**old["runs"], **result["runs"]}}
    path.write_text(json.dumps(result, indent=2))
    print("\n".join(render(result)))


if __name__ == "__main__":
    main()
