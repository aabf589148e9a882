"""Per-turn timelines: named phases stamped by the orchestrator on the session
clock, written as one JSONL line per turn."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from . import clock

# first_sound: the reply's first audible sample at the output (playback_start plus
# the silence its first chunk starts with, pipeline.tts_silence_db)
PHASES = ("user_speech_end", "endpoint", "asr_final", "eot_decided", "llm_first_token",
          "first_sentence", "tts_first_audio", "playback_start", "first_sound")


@dataclass
class TurnTimeline:
    turn_id: int
    times: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str, t: Optional[float] = None) -> None:
        """Stamp ``phase`` (first stamp wins) at ``t`` or now."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.times.setdefault(phase, clock.now() if t is None else t)

    @property
    def v2v_ms(self) -> Optional[float]:
        if "playback_start" in self.times and "user_speech_end" in self.times:
            return (self.times["playback_start"] - self.times["user_speech_end"]) * 1000
        return None

    def record(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"turn_id": self.turn_id}
        for phase in PHASES:
            t = self.times.get(phase)
            out[phase] = None if t is None else round(t, 4)
        v2v = self.v2v_ms
        out["v2v_ms"] = None if v2v is None else round(v2v, 1)
        out.update(extra)
        return out


# The causal chain of a turn. The endpoint is not in it: a speculative turn's ASR
# and LLM start at a pause, before the endpoint is confirmed; its audio waits for it.
CHAIN = ("user_speech_end", "asr_final", "llm_first_token", "first_sentence",
         "tts_first_audio", "playback_start", "first_sound")


def phases_in_order(times: dict[str, Optional[float]]) -> bool:
    """Every present phase follows its causes: the chain above is non-decreasing, and
    user_speech_end <= endpoint <= playback_start."""
    def ordered(names):
        seen = [times[p] for p in names if times.get(p) is not None]
        return all(a <= b + 1e-9 for a, b in zip(seen, seen[1:]))
    return ordered(CHAIN) and ordered(("user_speech_end", "endpoint", "playback_start"))
