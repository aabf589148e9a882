"""The session's records: transcript.jsonl and timeline.jsonl, one line per turn,
appended and flushed as each turn ends, so nothing is lost if the session stops
on an error or Ctrl-C.

A folder that cannot be written is refused at the start. A write that fails later
(a full disk) leaves the file as it was, whole lines only; the lines not written
are kept, written as soon as a later write succeeds, and if the session ends
before that, :meth:`close` raises :class:`OutputError` carrying them, so that the
caller can print them: nothing is lost.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .errors import OutputError

FILES = ("transcript.jsonl", "timeline.jsonl")


class SessionLog:
    def __init__(self, out_dir: Optional[Path]):
        self.out_dir = out_dir
        self.transcript: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.pending: list[tuple[str, str]] = []  # (file name, JSON line) not yet on disk
        self.write_error: Optional[str] = None
        if out_dir is not None:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                for name in FILES:
                    (out_dir / name).write_text("")
            except OSError as err:
                raise OutputError(f"--output-dir {out_dir}: cannot write there "
                                  f"({err.strerror or err}); choose a writable folder") from None

    def add(self, transcript: dict[str, Any], timeline: dict[str, Any]) -> bool:
        """Record a turn; False if its lines could not be written yet (kept, see
        :attr:`write_error`)."""
        self.transcript.append(transcript)
        self.timeline.append(timeline)
        if self.out_dir is None:
            return True
        for name, rec in zip(FILES, (transcript, timeline)):
            self.pending.append((name, json.dumps(rec, ensure_ascii=False) + "\n"))
        return self.flush()

    def flush(self) -> bool:
        while self.pending:
            name, line = self.pending[0]
            path = self.out_dir / name
            try:
                _append_whole(path, line.encode("utf-8"))
            except OSError as err:
                self.write_error = f"{path}: {err.strerror or err}"
                return False
            self.pending.pop(0)
        self.write_error = None
        return True

    def close(self) -> None:
        if self.out_dir is not None and not self.flush():
            lines = "".join(line for _, line in self.pending)
            raise OutputError(f"{self.write_error}: {len(self.pending)} record line(s) could "
                              f"not be written; here they are:\n{lines.rstrip()}")


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` entirely or not at all (a partial write is undone)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
