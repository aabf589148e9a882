"""Latency statistics computed from timelines (nothing else): per-phase durations,
percentiles and the share of turns under the 500 ms ceiling."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

CEILING_MS = 500.0
MOSHI_MS = 200.0

# phase -> (start, end) timeline fields; "speech_end" is the true end of the user's
# speech, measured from the input audio.
PHASES = {
    "endpoint delay": ("speech_end", "endpoint"),
    "ASR": ("asr_start", "asr_final"),
    "LLM time to first token": ("asr_final", "llm_first_token"),
    "first sentence": ("llm_first_token", "first_sentence"),
    "TTS first audio": ("first_sentence", "tts_first_audio"),
    "V2V": ("speech_end", "playback_start"),
    # V2V plus the silence the first chunk starts with: when the user hears the reply
    "first sound": ("speech_end", "first_sound"),
}


# V2V cut into consecutive steps, from the true end of speech to playback: each step
# ends at a timeline mark. A turn without a mark (no verdict: a fixed silence, or the
# VAD closed the utterance first) has that step in the next one, so the steps of a
# turn always add up to its V2V. The silence a verdict asks for is waited in one of two
# steps: before the reply starts, when it was deferred (pipeline.defer_replies), or at
# the gate, when the reply was ready before the endpoint.
CRITICAL_PATH = (
    ("VAD lag", "user_speech_end"),  # the VAD's end of speech
    # the ASR gets the audio: at the pause if the turn is speculative, else at the endpoint
    ("pause heard", "asr_start"),
    ("ASR", "asr_final"),
    ("end-of-turn verdict", "eot_decided"),
    ("reply start, first token", "llm_first_token"),  # a deferred reply waits here
    ("first sentence", "first_sentence"),
    ("TTS first audio", "tts_first_audio"),
    ("endpoint wait, output", "playback_start"),  # a reply ready early waits here
)


def critical_path_ms(turn: dict[str, Any]) -> dict[str, Optional[float]]:
    """The steps of ``turn``'s V2V in milliseconds (see CRITICAL_PATH); {} without V2V."""
    prev = turn.get("speech_end")
    if prev is None or turn.get("playback_start") is None:
        return {}
    steps: dict[str, Optional[float]] = {}
    for name, mark in CRITICAL_PATH:
        t = turn.get(mark)
        steps[name] = None if t is None else (t - prev) * 1000
        prev = prev if t is None else t
    return steps


def critical_paths(turns: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per end-of-turn verdict ("complete", "unsure", ...; "no verdict": a fixed
    silence, or the utterance closed by the VAD before one): the turns, each step's p50
    and the V2V p50."""
    groups: dict[str, list[tuple[dict[str, Any], dict[str, Optional[float]]]]] = {}
    for t in turns:
        steps = critical_path_ms(t)
        if steps:
            reason = (t.get("end_of_turn") or {}).get("reason", "no verdict")
            groups.setdefault(reason, []).append((t, steps))
    out = {}
    for reason, group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        out[reason] = {"turns": len(group),
                       "steps_p50_ms": {name: percentiles(s[name] for _, s in group)["p50"]
                                        for name, _ in CRITICAL_PATH},
                       "v2v_p50_ms": percentiles(durations_ms(t)["V2V"] for t, _ in group)["p50"]}
    return out


def critical_path_table(paths: dict[str, dict[str, Any]]) -> str:
    """Markdown: one column per verdict, one row per step (p50s; they need not add up
    to the V2V p50, each is a median of its own)."""
    if not paths:
        return ""
    names = list(paths)
    rows = ["| step, p50 ms | " + " | ".join(f"{n} ({paths[n]['turns']})" for n in names) + " |",
            "|---|" + "---:|" * len(names)]
    for step, _ in CRITICAL_PATH:
        rows.append(f"| {step} | " + " | ".join(_fmt(paths[n]["steps_p50_ms"][step])
                                                for n in names) + " |")
    rows.append("| **V2V** | " + " | ".join(f"**{_fmt(paths[n]['v2v_p50_ms'])}**"
                                            for n in names) + " |")
    return "\n".join(rows)


def span_ms(turn: dict[str, Any], start: str, end: str) -> Optional[float]:
    """Milliseconds from the timeline field ``start`` to ``end``, or None if either is missing."""
    ta, tb = turn.get(start), turn.get(end)
    return None if ta is None or tb is None else (tb - ta) * 1000


def durations_ms(turn: dict[str, Any]) -> dict[str, Optional[float]]:
    return {phase: span_ms(turn, a, b) for phase, (a, b) in PHASES.items()}


def percentiles(values: Iterable[float]) -> dict[str, Optional[float]]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return {"p50": None, "p90": None, "max": None, "n": 0}
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "max": float(v.max()), "n": int(len(v))}


def phase_table(turns: list[dict[str, Any]]) -> dict[str, dict[str, Optional[float]]]:
    per = [durations_ms(t) for t in turns]
    return {phase: percentiles(d[phase] for d in per) for phase in PHASES}


def under_share(turns: list[dict[str, Any]], limit_ms: float = CEILING_MS) -> float:
    v2v = [durations_ms(t)["V2V"] for t in turns]
    v2v = [x for x in v2v if x is not None]
    return sum(x < limit_ms for x in v2v) / len(v2v) if v2v else 0.0


def _fmt(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.0f}"


def markdown_table(turns: list[dict[str, Any]]) -> str:
    table = phase_table(turns)
    rows = ["| phase | p50 ms | p90 ms | max ms |", "|---|---:|---:|---:|"]
    for phase, s in table.items():
        rows.append(f"| {phase} | {_fmt(s['p50'])} | {_fmt(s['p90'])} | {_fmt(s['max'])} |")
    rows.append(f"| *500 ms ceiling* | {CEILING_MS:.0f} | {CEILING_MS:.0f} | {CEILING_MS:.0f} |")
    rows.append(f"| *Moshi (~200 ms)* | {MOSHI_MS:.0f} | | |")
    rows.append("")
    rows.append(f"Turns: {len(turns)}; V2V under 500 ms: {under_share(turns) * 100:.0f}%")
    return "\n".join(rows)


def plain(o: Any) -> Any:
    """``json.dumps(default=plain)``: numpy scalars and arrays as Python values."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")
