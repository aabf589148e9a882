"""Where speech really ends in a clip, measured from the audio itself (not from
the pipeline's VAD): the last 10 ms window louder than the clip's noise floor
(its 10th-percentile window) + 15 dB, the threshold kept between 35 and 25 dB
below the loudest window. Breath and room noise after the last word stay below
it. When in doubt it places the end early, which counts more endpoint delay
against the pipeline, never less. A noisy clip uses its clean twin's boundary."""
from __future__ import annotations

import numpy as np

from eval.corpus import Clip
from pipeline.audio import read_wav

WINDOW = 160  # 10 ms at 16 kHz


def speech_span(audio: np.ndarray, rate: int = 16000, lowest_db: float = -35.0,
                highest_db: float = -25.0, above_noise_db: float = 15.0) -> tuple[float, float]:
    n = len(audio) // WINDOW
    if n == 0:
        return 0.0, 0.0
    energy = np.sqrt(np.mean(audio[: n * WINDOW].reshape(n, WINDOW) ** 2, axis=1)) + 1e-10
    db = 20 * np.log10(energy / energy.max())
    threshold = min(max(lowest_db, float(np.percentile(db, 10)) + above_noise_db), highest_db)
    voiced = np.flatnonzero(db > threshold)
    return voiced[0] * WINDOW / rate, (voiced[-1] + 1) * WINDOW / rate


def clean_twin(clip: Clip, clips: list[Clip]) -> Clip:
    if clip.id.endswith("_noisy"):
        twin = clip.id[: -len("_noisy")] + "_clean"
        for c in clips:
            if c.id == twin:
                return c
    return clip


def speech_end(clip: Clip, clips: list[Clip]) -> float:
    """Seconds from the clip's start to its last voiced sample."""
    return speech_span(read_wav(clean_twin(clip, clips).path))[1]
