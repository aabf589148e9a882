"""Audio helpers: reading WAV input, resampling, framing."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioInputError

PIPELINE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: Silero's frame


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def read_wav(path: Union[str, Path], rate: int = PIPELINE_RATE) -> np.ndarray:
    """Mono float32 at ``rate``: any sample rate, mono or stereo (downmixed)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises its own error types
        raise AudioInputError(f"{path}: not a readable audio file ({err})") from None
    channels = audio.shape[1]
    if channels > 2:
        raise AudioInputError(f"{path}: {channels} channels; give a mono or stereo recording")
    if len(audio) == 0:
        raise AudioInputError(f"{path}: the file holds no audio")
    mono = audio.mean(axis=1) if channels == 2 else audio[:, 0]
    return resample(np.ascontiguousarray(mono), sr, rate)


def write_wav(path: Union[str, Path], audio: np.ndarray, rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16")


def frames(audio: np.ndarray, size: int = FRAME_SAMPLES):
    """Yield consecutive frames; the last one is zero-padded."""
    for start in range(0, len(audio), size):
        frame = audio[start:start + size]
        if len(frame) < size:
            frame = np.pad(frame, (0, size - len(frame)))
        yield start + size, frame
