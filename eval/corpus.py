"""The shared speech corpus (../shared/speech): clips with reference transcripts."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    text: str
    duration_s: float


def speech_dir() -> Path:
    return Path(os.environ.get("CASCADE_SPEECH_DIR", DEFAULT_DIR))


def load_manifest(directory: Path | None = None) -> list[Clip]:
    directory = directory or speech_dir()
    manifest = directory / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: speech corpus not found; set CASCADE_SPEECH_DIR")
    clips = []
    for line in manifest.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            clips.append(Clip(rec["id"], directory / rec["audio"], rec["text"],
                              float(rec["duration_s"])))
    return clips
