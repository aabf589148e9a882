"""The session's records: transcript.jsonl and timeline.jsonl, one line per turn,
appended and flushed as each turn ends, so nothing is lost if the session stops
on an error or Ctrl-C."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


class SessionLog:
    def __init__(self, out_dir: Optional[Path]):
        self.out_dir = out_dir
        self.transcript: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("transcript.jsonl", "timeline.jsonl"):
                (out_dir / name).write_text("")

    def add(self, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        self.transcript.append(transcript)
        self.timeline.append(timeline)
        if self.out_dir is not None:
            for name, rec in (("transcript.jsonl", transcript), ("timeline.jsonl", timeline)):
                with open(self.out_dir / name, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
