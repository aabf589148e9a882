"""Where speech really ends in a clip, measured from the audio itself (not from
the pipeline's VAD).

Energy is taken in the speech band only (300-6000 Hz, 20 ms Hann windows every
10 ms), so rumble, hum and breath pops below 300 Hz do not count, and passed
through a 50 ms running median, so a click in the room noise (shorter than
30 ms) does not count either. A window is voiced when that smoothed energy is
12 dB above the clip's noise floor (its 10th-percentile window), the threshold
kept between 35 and 25 dB below the loudest window. The end is the end of the
last voiced window. A noisy clip uses its clean twin's boundary. The longest pause
inside the speech is the longest run of unvoiced windows between voiced ones (the
pauses benchmark files a clip by it).

Checked against Silero's own end on the corpus' clean clips
(tests/test_speech_bounds.py): Silero ends 56 ms after this boundary at the
median, never more than 14 ms before it. An earlier version without the band filter and the
median put the end up to 0.4 s too late on clips with noise after the last
word, which flattered V2V on those turns.
"""
from __future__ import annotations

import numpy as np

from eval.corpus import Clip
from pipeline.audio import read_wav

HOP = 160  # 10 ms at 16 kHz
WIN = 320  # 20 ms
SMOOTH = 5  # hops in the running median: 50 ms


def band_energy(audio: np.ndarray, rate: int = 16000, lo_hz: float = 300.0,
                hi_hz: float = 6000.0) -> np.ndarray:
    """Energy per 10 ms hop in the speech band."""
    if len(audio) < WIN:
        return np.zeros(0)
    n = 1 + (len(audio) - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(audio[idx] * np.hanning(WIN), axis=1)) ** 2
    freqs = np.fft.rfftfreq(WIN, 1 / rate)
    return spec[:, (freqs >= lo_hz) & (freqs <= hi_hz)].sum(axis=1) + 1e-20


def voiced_hops(audio: np.ndarray, rate: int = 16000, lowest_db: float = -35.0,
                highest_db: float = -25.0, above_noise_db: float = 12.0) -> np.ndarray:
    """Indices of the 10 ms hops whose 20 ms window is voiced."""
    energy = band_energy(audio, rate)
    if len(energy) == 0:
        return np.zeros(0, int)
    db = 10 * np.log10(energy / energy.max())
    # running median: a sound shorter than 30 ms (a click) vanishes, edges stay put
    half = SMOOTH // 2
    padded = np.pad(db, half, mode="edge")
    smooth_db = np.median(np.lib.stride_tricks.sliding_window_view(padded, SMOOTH), axis=1)
    threshold = min(max(lowest_db, float(np.percentile(db, 10)) + above_noise_db), highest_db)
    return np.flatnonzero(smooth_db > threshold)


def speech_span(audio: np.ndarray, rate: int = 16000) -> tuple[float, float]:
    """(start, end) of the speech in ``audio``, seconds."""
    voiced = voiced_hops(audio, rate)
    if len(voiced) == 0:
        return 0.0, 0.0
    return voiced[0] * HOP / rate, (voiced[-1] * HOP + WIN) / rate


def longest_pause(audio: np.ndarray, rate: int = 16000) -> float:
    """The longest silence inside the speech, seconds: from the end of one voiced window
    to the start of the next."""
    voiced = voiced_hops(audio, rate)
    if len(voiced) < 2:
        return 0.0
    return max(0.0, float(np.diff(voiced).max() * HOP - WIN) / rate)


def clean_twin(clip: Clip, clips: list[Clip]) -> Clip:
    if clip.id.endswith("_noisy"):
        twin = clip.id[: -len("_noisy")] + "_clean"
        for c in clips:
            if c.id == twin:
                return c
    return clip


def noisy_pairs(clips: list[Clip]) -> list[tuple[Clip, Clip]]:
    """The noisy clips that have a clean twin, each with it."""
    return [(c, twin) for c in clips
            if c.id.endswith("_noisy") and (twin := clean_twin(c, clips)) is not c]


def clip_noise(noisy: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """A noisy clip's noise (the clip less its clean twin, over their common length) and
    its SNR in dB."""
    n = min(len(noisy), len(clean))
    noise = noisy[:n] - clean[:n]
    return noise, float(10 * np.log10(np.mean(np.square(clean[:n])) / np.mean(np.square(noise))))


def speech_end(clip: Clip, clips: list[Clip]) -> float:
    """Seconds from the clip's start to its last voiced sample."""
    return speech_span(read_wav(clean_twin(clip, clips).path))[1]
