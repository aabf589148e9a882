"""The silence at the edges of synthesized chunks.

TTS voices pad every chunk: Piper's en_US-joe-medium starts each one with 40-60 ms
of silence and ends it with 140-230 ms. The first costs every reply that much of
its first sound after its first sample reaches the output; the second puts a
quarter-second hole after a first chunk cut mid-phrase ("That's a great | idea!").
With ``pipeline.trim_tts_silence`` each chunk keeps ``chunk_lead_ms`` before its
first audible sample, and after its last one the pause its end calls for: a
sentence end, a clause (comma, colon...) or a cut between two words. Trimming only
shortens; a voice that pads less keeps what it gives.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from .events import AudioChunk

FADE_MS = 3.0  # a short ramp where a cut lands on a sample that is not quite zero


def audible_bounds(samples: np.ndarray, threshold_db: float) -> tuple[int, int]:
    """Index of the first audible sample and one past the last (level above
    ``threshold_db`` dBFS); (0, 0) when nothing is audible."""
    loud = np.flatnonzero(np.abs(samples) > 10 ** (threshold_db / 20))
    if not len(loud):
        return 0, 0
    return int(loud[0]), int(loud[-1]) + 1


def leading_silence_s(samples: np.ndarray, rate: int, threshold_db: float) -> float:
    """Seconds before the first audible sample (all of it if none is)."""
    first, end = audible_bounds(samples, threshold_db)
    return (first if end else len(samples)) / rate


def pause_after_ms(text: str, settings: Any) -> int:
    """The pause a chunk ending with ``text`` is followed by: ``pause_after_sentence_ms``
    after ". ! ?", ``pause_after_clause_ms`` after ", ; : -" and
    ``pause_after_cut_ms`` after a word (a first chunk cut at ``max_first_words``)."""
    end = text.rstrip().rstrip("\"')]»”’")[-1:]
    if end in (".", "!", "?", "…"):
        return settings.pause_after_sentence_ms
    if end in (",", ";", ":", "-", "–", "—"):
        return settings.pause_after_clause_ms
    return settings.pause_after_cut_ms


def trim(chunk: AudioChunk, settings: Any, text: Optional[str] = None) -> AudioChunk:
    """``chunk`` with its edges' silence cut to ``settings.chunk_lead_ms`` before and
    :func:`pause_after_ms` after (``settings``: the ``pipeline:`` section; ``text``: the
    chunk of text it speaks, by default its own, which a piece after the first has not)."""
    samples, rate = chunk.samples, chunk.sample_rate
    first, end = audible_bounds(samples, settings.tts_silence_db)
    if not end:
        return chunk
    # a chunk in pieces keeps its inner edges: the pieces join where the decoder cut them
    start = 0 if chunk.continues else max(0, first - int(settings.chunk_lead_ms * rate / 1000))
    pause_ms = pause_after_ms(chunk.text if text is None else text, settings)
    stop = len(samples) if chunk.more else min(len(samples), end + int(pause_ms * rate / 1000))
    if start == 0 and stop == len(samples):
        return chunk
    out = samples[start:stop].astype(np.float32, copy=True)
    # ramps within the kept silence only: the sound itself is never attenuated
    ramp = int(FADE_MS * rate / 1000)
    ramp_in, ramp_out = min(ramp, first - start), min(ramp, stop - end)
    if ramp_in and start:
        out[:ramp_in] *= np.linspace(0.0, 1.0, ramp_in, dtype=np.float32)
    if ramp_out and stop < len(samples):
        out[len(out) - ramp_out:] *= np.linspace(1.0, 0.0, ramp_out, dtype=np.float32)
    return dataclasses.replace(chunk, samples=out)
