"""The server's Prometheus metrics (text exposition format 0.0.4), kept in process:
turns by status, a V2V histogram, per-phase durations, sessions and errors."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Optional

BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# phase -> (from, to) in a turn's timeline
PHASES = {"endpoint": ("user_speech_end", "endpoint"),
          "asr": ("user_speech_end", "asr_final"),
          "llm_first_token": ("asr_final", "llm_first_token"),
          "first_sentence": ("llm_first_token", "first_sentence"),
          "tts_first_audio": ("first_sentence", "tts_first_audio"),
          "playback_start": ("tts_first_audio", "playback_start")}


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}'
               for b, c in zip(BUCKETS_S, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        tail = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{tail} {self.sum:.6f}", f"{name}_count{tail} {self.total}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self.active_sessions = 0
        self.sessions = 0
        self.refused = 0
        self.turns: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.v2v = Histogram()
        self.phases = {p: Histogram() for p in PHASES}

    def turn(self, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        self.turns[transcript["status"]] += 1
        if transcript.get("error"):
            self.errors["turn"] += 1
        v2v = timeline.get("v2v_ms")
        if v2v is not None:
            self.v2v.observe(v2v / 1000)
        for phase, (a, b) in PHASES.items():
            ta, tb = timeline.get(a), timeline.get(b)
            if ta is not None and tb is not None and not math.isnan(tb - ta):
                self.phases[phase].observe(max(0.0, tb - ta))

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def render(self, capacity: Optional[int] = None) -> str:
        lines = ["# HELP cascade_active_sessions Realtime sessions open now.",
                 "# TYPE cascade_active_sessions gauge",
                 f"cascade_active_sessions {self.active_sessions}"]
        if capacity is not None:
            lines += ["# HELP cascade_max_sessions server.max_sessions.",
                      "# TYPE cascade_max_sessions gauge", f"cascade_max_sessions {capacity}"]
        lines += ["# HELP cascade_sessions_total Sessions accepted.",
                  "# TYPE cascade_sessions_total counter", f"cascade_sessions_total {self.sessions}",
                  "# HELP cascade_sessions_refused_total Sessions refused at capacity.",
                  "# TYPE cascade_sessions_refused_total counter",
                  f"cascade_sessions_refused_total {self.refused}",
                  "# HELP cascade_turns_total Turns recorded, by status.",
                  "# TYPE cascade_turns_total counter"]
        lines += [f'cascade_turns_total{{status="{s}"}} {n}' for s, n in sorted(self.turns.items())]
        lines += ["# HELP cascade_errors_total Errors: failed turns, bad client messages, "
                  "sessions that failed.", "# TYPE cascade_errors_total counter"]
        lines += [f'cascade_errors_total{{kind="{k}"}} {n}' for k, n in sorted(self.errors.items())]
        lines += ["# HELP cascade_v2v_seconds Voice-to-voice latency: end of the user's speech "
                  "to the reply's first sample sent for playback.",
                  "# TYPE cascade_v2v_seconds histogram", *self.v2v.lines("cascade_v2v_seconds"),
                  "# HELP cascade_phase_seconds Per-phase durations of a turn.",
                  "# TYPE cascade_phase_seconds histogram"]
        for phase, hist in self.phases.items():
            lines += hist.lines("cascade_phase_seconds", f'phase="{phase}"')
        return "\n".join(lines) + "\n"
