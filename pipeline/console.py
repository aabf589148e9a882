"""What the user sees in the terminal: loading status, each turn's texts and V2V.

In live mode a status line (listening, hearing you, thinking, speaking) is
redrawn in place; in file mode every line is plain."""
from __future__ import annotations

import sys
from typing import TextIO


class Console:
    def __init__(self, live: bool = False, stream: TextIO = sys.stdout, quiet: bool = False):
        self.live = live and stream.isatty()
        self.stream = stream
        self.quiet = quiet
        self._state = ""
        self._partial = False  # an assistant line is open

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        if self.live and self._state:
            self.stream.write("\r\033[K")
        if self._partial and not text.startswith(" "):
            self.stream.write("\n")
            self._partial = False
        self.stream.write(text)
        if self.live and self._state:
            self.stream.write(f"\n[{self._state}]" if text.endswith("\n") else "")
        self.stream.flush()

    def status(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if self.live and not self.quiet:
            self.stream.write(f"\r\033[K[{state}]")
            self.stream.flush()

    def info(self, text: str) -> None:
        self._write(f"{text}\n")

    def error(self, text: str) -> None:
        self._write(f"error: {text}\n")

    def user(self, turn_id: int, text: str) -> None:
        self._write(f"[turn {turn_id}] you: {text}\n")

    def assistant(self, turn_id: int, sentence: str, v2v_ms=None) -> None:
        """One chunk of the reply as it goes to the speaker; the first carries V2V."""
        if v2v_ms is not None:
            self._write(f"[turn {turn_id}] assistant (V2V {v2v_ms:.0f} ms): {sentence}")
        else:
            self._write(f" {sentence}")
        self._partial = True

    def turn_done(self, turn_id: int, status: str, error: str | None = None) -> None:
        if status != "answered":
            self._write(f"  [turn {turn_id}] {status}" + (f": {error}" if error else "") + "\n")
