"""Observers of a session: what the orchestrator tells the outside world.

The orchestrator calls one method per happening; the console shows it, the session
log writes it. Each observer is small and knows nothing of the others."""
from __future__ import annotations

from typing import Any, Callable, Optional

from .console import Console
from .session_log import SessionLog
from .turn import Turn


class Observer:
    """Every method is optional."""

    def status(self, state: str) -> None:
        """listening, hearing you, thinking, speaking."""

    def speech_started(self, t: float) -> None:
        """The VAD confirmed speech; ``t``: the media time of its first voiced sample."""

    def speech_resumed(self, t: float) -> None:
        """Speech came back after a pause (after an early endpoint: the user went on)."""

    def endpoint(self, turn: Turn) -> None:
        """The turn's end is decided (``turn.ended.speech_end``: its last voiced sample)."""

    def user(self, turn: Turn) -> None:
        """The user's words for this turn are known and about to be answered."""

    def assistant(self, turn: Turn, text: str, v2v_ms: Optional[float]) -> None:
        """A chunk of the reply goes to the speaker (the first one carries V2V)."""

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        """The turn is over and recorded."""

    def notice(self, text: str) -> None:
        """Something worth a line that is not a turn."""

    def error(self, text: str) -> None:
        """Something failed outside a turn."""


class Observers(Observer):
    """Several observers as one, called in order."""

    def __init__(self, *observers: Observer):
        self.all = list(observers)

    def status(self, state: str) -> None:
        for o in self.all:
            o.status(state)

    def speech_started(self, t: float) -> None:
        for o in self.all:
            o.speech_started(t)

    def speech_resumed(self, t: float) -> None:
        for o in self.all:
            o.speech_resumed(t)

    def endpoint(self, turn: Turn) -> None:
        for o in self.all:
            o.endpoint(turn)

    def user(self, turn: Turn) -> None:
        for o in self.all:
            o.user(turn)

    def assistant(self, turn: Turn, text: str, v2v_ms: Optional[float]) -> None:
        for o in self.all:
            o.assistant(turn, text, v2v_ms)

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        for o in self.all:
            o.turn_ended(turn, transcript, timeline)

    def notice(self, text: str) -> None:
        for o in self.all:
            o.notice(text)

    def error(self, text: str) -> None:
        for o in self.all:
            o.error(text)


class ConsoleObserver(Observer):
    def __init__(self, console: Console):
        self.console = console
        self._shown: Optional[int] = None  # the turn whose user text was printed

    def status(self, state: str) -> None:
        self.console.status(state)

    def user(self, turn: Turn) -> None:
        if self._shown != turn.turn_id and turn.user_text:
            self._shown = turn.turn_id
            self.console.user(turn.turn_id, turn.user_text)

    def assistant(self, turn: Turn, text: str, v2v_ms: Optional[float]) -> None:
        self.user(turn)
        self.console.assistant(turn.turn_id, text, v2v_ms)

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        self.user(turn)
        if turn.user_text or turn.error:
            self.console.turn_done(turn.turn_id, turn.status, turn.error)

    def notice(self, text: str) -> None:
        self.console.info(text)

    def error(self, text: str) -> None:
        self.console.error(text)


class LogObserver(Observer):
    """transcript.jsonl and timeline.jsonl, a line each as each turn ends. A write
    that fails (a full disk) is reported once; the lines are kept and written later."""

    def __init__(self, log: SessionLog, report: Callable[[str], None]):
        self.log = log
        self.report = report
        self._failing = False

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        written = self.log.add(transcript, timeline)
        if not written and not self._failing:
            self.report(f"{self.log.write_error}; the session goes on, its records are kept "
                        "and written when the disk allows")
        elif written and self._failing:
            self.report("the session's records are written again")
        self._failing = not written
