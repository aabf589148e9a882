"""Reply quality: what the assistant says, measured on a spoken question set.

    make quality [CONFIG=configs/default.yaml] [PROFILES="configs/default.yaml configs/quality.yaml"]
    .venv/bin/python -m eval.quality --config A.yaml [--config B.yaml] [--variants]

The questions of :mod:`eval.questions` are synthesized (the bundled Piper voice, or
espeak-ng with --carrier espeak: the audio is only the carrier), spoken in real time as one conversation through the whole pipeline
(VAD, ASR, LLM, TTS), one after the other once each reply is over, as in the latency
report. Each reply is scored: the expected fact is there (answer rate), it mostly
repeats the user's words (echo rate), it was said before (distinct-reply rate), it is
empty or cut. V2V is measured on the same turns, so the trade between a profile's
replies and its speed is visible in one run. ``--variants``: the first profile again
with each reply-quality technique off in turn (system prompt, primer, echo guard,
history shaping).

Writes eval/out/quality.md and quality.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from eval.corpus import Clip
from eval.questions import QUESTIONS, SETS, Question, score_reply, summarize
from eval.scripted import applicable, run_conversation
from eval.stats import durations_ms, percentiles, plain
from pipeline.audio import PIPELINE_RATE, resample
from pipeline.config import CascadeConfig, load_config
from pipeline.edges import audible_bounds

OUT = Path(__file__).resolve().parent / "out"
OLD_SYSTEM_PROMPT = ("You are a voice assistant. Answer briefly: one sentence, under twenty "
                     "words, friendly and clear.")

# Each reply-quality technique, and how to turn it off (the LLM keys apply where the
# backend has them).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "without the system prompt for replies (the old one)": {"llm": {"system_prompt":
                                                                    OLD_SYSTEM_PROMPT}},
    "without the primer": {"llm": {"primer": []}},
    "without the echo guard": {"llm": {"echo_guard": False}},
    "without history shaping (all turns the budget holds)": {"pipeline": {"history_max_turns":
                                                                          None}},
}
# All of them off at once: the replies and V2V as they were before this work.
VARIANTS["all four off (as before)"] = {
    section: {k: v for over in VARIANTS.values() for k, v in over.get(section, {}).items()}
    for section in ("llm", "pipeline")}


def carrier_voice(name: str):
    """The voice that speaks the questions: the bundled Piper voice (default), or
    espeak-ng. Whisper tiny.en mishears espeak-ng's formant speech (word error rate 18%
    on this set, against 5% for Piper), and the measure is of the replies, not of the
    ASR on robotic speech."""
    if name == "espeak":
        from stages.tts_espeak import EspeakConfig, EspeakTTS
        tts = EspeakTTS(EspeakConfig(words_per_minute=150))
    elif name == "piper":
        from stages.tts_piper import PiperConfig, PiperTTS
        tts = PiperTTS(PiperConfig())
    else:
        raise ValueError(f"carrier {name!r}: piper or espeak")
    tts._load()
    return tts


def synthesize(questions: tuple[Question, ...] = QUESTIONS,
               carrier: str = "piper") -> list[tuple[Clip, np.ndarray, float]]:
    """Each question as 16 kHz speech (see :func:`carrier_voice`), with where its
    speech ends, as the scripted user wants them."""
    tts = carrier_voice(carrier)
    out = []
    for i, q in enumerate(questions):
        audio = resample(tts.synthesize(q.text), tts.sample_rate, PIPELINE_RATE)
        audio = (0.5 * audio / max(1e-6, float(np.abs(audio).max()))).astype(np.float32)
        _, end = audible_bounds(audio, -40.0)  # above 0.01
        end_s = (end or len(audio)) / PIPELINE_RATE
        clip = Clip(f"q{i + 1:02d}", Path(carrier), q.text, len(audio) / PIPELINE_RATE)
        out.append((clip, audio, end_s))
    return out


def score_run(result: dict[str, Any], questions: tuple[Question, ...] = QUESTIONS
              ) -> dict[str, Any]:
    """Each scripted question paired with the reply its turn got, scored."""
    by_turn = {t["user_turn"]: t for t in result["turns"]}
    rows = []
    for i, q in enumerate(questions, start=1):
        t = by_turn.get(i)
        row = score_reply(q, t["user_text"] if t else "", t["assistant_text"] if t else None)
        row["v2v_ms"] = durations_ms(t)["V2V"] if t else None
        row["status"] = t["status"] if t else "missed"
        rows.append(row)
    v2v = percentiles(r["v2v_ms"] for r in rows)
    return {**summarize(rows), "v2v_ms": {"p50": v2v["p50"], "p90": v2v["p90"]},
            "missed_turns": result["counts"]["missed_turns"], "rows": rows}


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """The scores again from the stored replies (what the ASR heard, what was said), with
    the scoring rules of now: for a change of rules, without a new run."""
    by_text = {q.text: q for qs in SETS.values() for q in qs}
    for run in result["runs"].values():
        rows = []
        for old in run["rows"]:
            row = score_reply(by_text[old["question"]], old["heard"],
                              None if old.get("status") == "missed" else old["reply"])
            rows.append({**row, "v2v_ms": old["v2v_ms"], "status": old.get("status")})
        run.update(summarize(rows), rows=rows)
    return result


def run_profile(config: CascadeConfig, clips, seed: int = 0) -> dict[str, Any]:
    """The questions of ``clips`` (from :func:`synthesize`, in their set's order) as one
    conversation with this profile, scored."""
    by_text = {q.text: q for qs in SETS.values() for q in qs}
    questions = tuple(by_text[c.text] for c, _, _ in clips)
    return score_run(asyncio.run(run_conversation(config, clips, seed)), questions)


def quality(configs: list[str], variants: bool | list[str] = False, seed: int = 0,
            carrier: str = "piper", question_set: str = "main") -> dict[str, Any]:
    """``variants``: True for every one, or the names (a word of them) to run."""
    clips = synthesize(SETS[question_set], carrier=carrier)
    runs: dict[str, Any] = {}
    for path in configs:
        print(f"reply quality: {path} ({len(clips)} spoken questions)")
        runs[path] = {"config": path, **run_profile(load_config(path), clips, seed)}
    if variants:
        base = load_config(configs[0])
        for name, over in VARIANTS.items():
            if variants is not True and not any(w in name for w in variants):
                continue
            applied = applicable(base, over)
            if not applied:
                continue
            print(f"reply quality: {configs[0]} {name}")
            runs[f"{configs[0]} {name}"] = {"config": configs[0], "overrides": applied,
                                            **run_profile(base.replace(**applied), clips, seed)}
    return {"questions": len(clips), "set": question_set, "carrier": carrier, "runs": runs}


def headline(run: dict[str, Any]) -> dict[str, Any]:
    """What summary.json keeps: ``quality: {answer_rate, echo_rate, distinct_rate, ...}``."""
    keys = ("answer_rate", "echo_rate", "distinct_rate", "empty_rate", "cut_rate", "questions",
            "questions_with_fact", "v2v_ms")
    return {k: run[k] for k in keys}


def render(result: dict[str, Any]) -> str:
    def ms(x):
        return "–" if x is None else f"{x:.0f}"

    lines = ["| profile | answer rate | echo rate | distinct replies | empty or cut | "
             "V2V p50 | V2V p90 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["runs"].items():
        lines.append(f"| {name} | {r['answer_rate']:.0%} ({round(r['answer_rate'] * r['questions_with_fact'])}"
                     f"/{r['questions_with_fact']}) | {r['echo_rate']:.0%} | {r['distinct_rate']:.0%} | "
                     f"{r['empty_rate'] + r['cut_rate']:.0%} | {ms(r['v2v_ms']['p50'])} ms | "
                     f"{ms(r['v2v_ms']['p90'])} ms |")
    lines.append("\nAnswer rate: the expected fact is in the reply (questions with one); echo: "
                 "over 60% of the reply's words are the user's, it has no content word of its "
                 "own, and it does not answer; distinct: different replies over questions.")
    for name, r in result["runs"].items():
        lines += [f"\n### {name}\n", "| | question (as heard) | reply |", "|---|---|---|"]
        for row in r["rows"]:
            mark = "answered" if row["answered"] else "ECHO" if row["echo"] else (
                f"empty ({row['status']})" if row["empty"] else "cut" if row["cut"] else "")
            lines.append(f"| {mark} | {row['heard'] or '(nothing heard)'} | {row['reply']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", action="append", help="a profile (repeat for several)")
    ap.add_argument("--variants", nargs="*", metavar="WORD",
                    help="the first profile with each reply-quality technique off in turn "
                    "(or only those whose name has one of these words, e.g. \"all four\")")
    ap.add_argument("--set", choices=sorted(SETS), default="main",
                    help="the question set: main, or heldout (not used to tune the prompt)")
    ap.add_argument("--carrier", choices=("piper", "espeak"), default="piper",
                    help="the voice that speaks the questions")
    ap.add_argument("--rescore", type=Path, metavar="JSON",
                    help="no run: score the replies stored in this quality.json again")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    variants = False if args.variants is None else (args.variants or True)
    if args.rescore:
        result = rescore(json.loads(args.rescore.read_text()))
        args.set, args.carrier = result.get("set", "main"), result.get("carrier", "piper")
    else:
        result = quality(args.config or ["configs/default.yaml"], variants,
                         carrier=args.carrier, question_set=args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "quality" if args.set == "main" else f"quality-{args.set}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=plain))
    md = render(result)
    (args.out / f"{stem}.md").write_text(f"# Reply quality ({args.set} question set, spoken by "
                                         f"{args.carrier})\n\n" + md + "\n")
    print(md.split("\n###")[0])


if __name__ == "__main__":
    main()
