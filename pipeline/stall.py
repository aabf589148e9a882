"""The end of speech in a noisy room, from the words: when the listen-ahead's partial
transcripts stop gaining words while the VAD still hears speech, the user has stopped
and the VAD is hearing the room (babble, a cafe: Silero rates them as speech, and its
end of speech never comes). See ``pipeline.words_stall_s``."""
from __future__ import annotations

from typing import Optional


class WordStall:
    """The word counts of one utterance's partial transcripts, and whether they stalled.

    ``after_s``: the speech over which the words must have grown by at most one (one: a
    word Whisper makes of the noise, or one cut in two and joined again); ``step_s``:
    the audio between two partials, which the end of speech gets after the partial that
    showed the last word (that word may have been cut there)."""

    def __init__(self, after_s: float, step_s: float):
        self.after_s = after_s
        self.step_s = step_s
        self._turn: Optional[int] = None
        self._counts: list[tuple[float, int]] = []

    def forget(self) -> None:
        """Speech resumed after a pause (or a new utterance began): start again."""
        self._turn, self._counts = None, []

    def heard(self, turn_id: int, t: float, words: int) -> Optional[float]:
        """A partial transcript of utterance ``turn_id`` with ``words`` words, on its audio
        up to ``t``. Returns the end of speech (a time before ``t``) once the words have
        stalled, else None."""
        if turn_id != self._turn:
            self._turn, self._counts = turn_id, []
        if words == 0:  # no partial (its guard refused it, or past the short window)
            return None
        self._counts.append((t, words))
        earlier = [(t0, n0) for t0, n0 in self._counts if t - t0 >= self.after_s - 1e-6]
        if not earlier or words > earlier[-1][1] + 1:
            return None
        # the last word appeared in the first partial that had as many words as this one
        shown = next(t0 for t0, n0 in self._counts if n0 >= words)
        return min(t, shown + self.step_s)
