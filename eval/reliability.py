"""The reliability report: the fault matrix as run, and the soak.

    .venv/bin/python -m eval.reliability [--soak eval/out/soak.json] [--live-soak FILE] [--no-tests]

Runs the fault-matrix tests (server faults, stage failures, signals, audio device,
output directory, bad input, long input, barge-in at every phase) with pytest, each
case a test on real parts, and writes eval/out/reliability.md: every case and its
outcome, crashes (a case that did not end in its clear error: a failed test),
and the soak's figures and curves (from ``make soak``'s soak.json and soak.png).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

from eval.long_files import render as render_long_files

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "eval" / "out"

# (area, test file, test name filter or None)
MATRIX = [
    ("LLM server faults", "tests/test_llm_server_faults.py", None),
    ("stage failures and barge-in at every phase", "tests/test_orchestrator.py", None),
    ("signals", "tests/test_signals.py", None),
    ("output directory", "tests/test_output_faults.py", None),
    ("bad input and config", "tests/test_bad_input.py", None),
    ("missing or broken models", "tests/test_load_errors.py", None),
    ("long input", "tests/test_long_input.py", None),
    ("audio device", "tests/test_live_audio.py", None),
    ("end of turn: reopen and merge", "tests/test_end_of_turn.py", None),
]


def run_matrix(xml: Path) -> list[dict[str, Any]]:
    files = [f for _, f, _ in MATRIX]
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", *files], cwd=ROOT, check=False)
    area = {f: a for a, f, _ in MATRIX}
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        f = case.get("classname", "").replace(".", "/") + ".py"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = "failed" if tag in ("failure", "error") else "skipped"
        doc = case.get("name", "")
        cases.append({"area": area.get(f, f), "case": doc.removeprefix("test_").replace("_", " "),
                      "outcome": outcome, "seconds": float(case.get("time", 0))})
    return cases


def soak_section(s: dict[str, Any], image: str) -> list[str]:
    live = s.get("mode") == "live"
    lines = ["", f"## Soak: {s['minutes']:.0f} minutes in {'live' if live else 'file'} mode", "",
             "A looped corpus conversation with a barge-in every 4th turn, in real time "
             f"(`make soak MINUTES={s['minutes']:.0f}{' LIVE=1' if live else ''}`), config "
             f"`{s['config']}`"
             + (": the live pipeline as a process, on PulseAudio virtual devices." if live
                else ", in file mode."), "",
             "| figure | value | target |", "|---|---:|---:|",
             f"| turns | {s['turns']} | |",
             f"| of them interrupted (barge-in) | {s['interrupted']} | |",
             f"| transcript lines | {s['transcript_lines']} | = turns |",
             f"| lost lines | {s['lost_lines']} | 0 |",
             f"| turn errors | {s['errors']} | 0 |",
             f"| RSS growth from minute {s['rss_baseline_minute']:.0f} to the end | "
             f"{s['rss_growth_pct']:+.2f}% | under 5% |",
             "| V2V p50 drift, first window to last | "
             + ("–" if s["v2v_p50_drift_pct"] is None else f"{s['v2v_p50_drift_pct']:+.1f}%")
             + " | under 10% |",
             f"| threads / open descriptors at the end | {s['threads_end']} / {s['fds_end']} | "
             "steady |", "",
             "| minute | RSS MB | threads | fds | turns | lines | errors | V2V p50 | V2V p90 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in s["samples"]:
        lines.append(f"| {x['minute']:.0f} | {x['rss_mb']:.0f} | {x.get('tasks', x.get('threads'))} | "
                     f"{x['fds']} | {x['turns']} | {x['transcript_lines']} | {x['errors']} | "
                     f"{x['v2v_p50_ms'] or 0:.0f} | {x['v2v_p90_ms'] or 0:.0f} |")
    lines += ["", "V2V here runs from the VAD's end of speech (the clips are looped).", "",
              f"![soak curves]({image})"]
    return lines


def render(cases: list[dict[str, Any]], soak: Optional[dict[str, Any]],
           live_soak: Optional[dict[str, Any]] = None,
           long_files: Optional[dict[str, Any]] = None) -> str:
    failed = [c for c in cases if c["outcome"] == "failed"]
    lines = ["# Cascade reliability report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `python -m eval.reliability`.", ""]
    if cases:
        lines += [f"## Fault matrix: {len(cases)} cases, {len(failed)} crashes", "",
                  "Each case is a test on real parts (a real HTTP server that misbehaves, real "
                  "signals to a real process, a full tmpfs, PulseAudio devices, real models). "
                  "A case passes when it ends in a clear error naming the culprit, or is "
                  "handled as a listener would expect, and the session goes on or stops "
                  "cleanly with its transcript kept.", "",
                  "| area | case | outcome |", "|---|---|---|"]
        lines += [f"| {c['area']} | {c['case']} | {c['outcome']} |" for c in cases]
    if long_files:
        lines += ["", "## Long input files", "",
                  "`python -m eval.long_files`: silence, white noise and a looped utterance "
                  "(no pause added: the user talks on over each reply), each short and long, "
                  "in file mode as fast as the CPU goes; peak RSS of the long file against "
                  "the short one.", "", *render_long_files(long_files)]
    for result, image in ((soak, "soak.png"), (live_soak, "soak-live.png")):
        if result:
            lines += soak_section(result, image)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--soak", type=Path, default=OUT / "soak.json")
    ap.add_argument("--live-soak", type=Path, default=OUT / "soak-live.json")
    ap.add_argument("--long-files", type=Path, default=OUT / "long_files.json")
    ap.add_argument("--no-tests", action="store_true",
                    help="keep the cases of the last run (reliability.json), redo the soak part")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "reliability.json"
    if args.no_tests:  # the cases of the last run, with a newer soak
        cases = json.loads(previous.read_text())["cases"] if previous.is_file() else []
    else:
        cases = run_matrix(args.out / "reliability-junit.xml")
    soak = json.loads(args.soak.read_text()) if args.soak.is_file() else None
    live = json.loads(args.live_soak.read_text()) if args.live_soak.is_file() else None
    long_files = json.loads(args.long_files.read_text()) if args.long_files.is_file() else None
    (args.out / "reliability.md").write_text(render(cases, soak, live, long_files))
    (args.out / "reliability.json").write_text(json.dumps({"cases": cases, "soak": soak,
                                                           "live_soak": live,
                                                           "long_files": long_files}, indent=2))
    print(f"wrote {args.out}/reliability.md: {len(cases)} cases, "
          f"{sum(c['outcome'] == 'failed' for c in cases)} failed")


if __name__ == "__main__":
    main()
