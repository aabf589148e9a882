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
