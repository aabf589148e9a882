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
        self._since = float("-inf")
        self._counts: list[tuple[float, int]] = []

    def forget(self, since: float) -> None:
        """Speech resumed at ``since`` after a pause: count again from there (a partial of
        the audio before it, still being decoded, is not counted)."""
        self._since, self._counts = since, []

    def heard(self, turn_id: int, t: float, words: int) -> Optional[float]:
        """A partial transcript of utterance ``turn_id`` with ``words`` words, on its audio
        up to ``t``. Returns the end of speech (a time before ``t``) once the words have
        stalled, else None."""
        if turn_id != self._turn:
            self._turn, self._since, self._counts = turn_id, float("-inf"), []
        if words == 0 or t < self._since:  # no partial (its guard refused it), or stale
            return None
        self._counts.append((t, words))
        ref = [t0 for t0, _ in self._counts if t - t0 >= self.after_s - 1e-6]
        if not ref:
            return None
        # over the window, from its fewest words (a partial may over-count), at most one more
        window = [n0 for t0, n0 in self._counts if t0 >= ref[-1]]
        if words > min(window) + 1:
            return None
        # the last word appeared in the partial after the last one with fewer words
        fewer = [i for i, (_, n0) in enumerate(self._counts) if n0 < words]
        shown = self._counts[fewer[-1] + 1 if fewer else 0][0]
        return min(t, shown + self.step_s)
