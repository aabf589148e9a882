"""Audio helpers: reading input files, resampling, framing.

An input file is read as a listener would hear it: any sample rate and sample
format, any number of channels (averaged to mono), NaN/Inf samples silenced,
samples beyond full scale clipped, a DC offset removed (it would confuse the
VAD). It can be streamed block by block (:func:`iter_wav_blocks`), so that a
long recording is never held whole.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from .errors import AudioInputError

PIPELINE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: Silero's frame
DC_CUTOFF_HZ = 5.0  # the high-pass removing a DC offset, far below a voice (70 Hz and up)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


class DCBlocker:
    """One-pole high-pass y[n] = x[n] - x[n-1] + a*y[n-1], its state carried from
    block to block. Vectorised over runs of samples: y = p * (y[-1] + cumsum(d / p))
    with p[k] = a**(k+1) and d the first difference of x."""

    RUN = 4096  # keeps a**-RUN far from overflowing

    def __init__(self, rate: int, cutoff_hz: float = DC_CUTOFF_HZ):
        self.a = float(np.exp(-2 * np.pi * cutoff_hz / rate))
        # x[-1] is taken to be the first sample: an offset present from the start
        # leaves no transient
        self.x1: float | None = None
        self.y1 = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), np.float32)
        p = self.a ** np.arange(1, self.RUN + 1)
        for start in range(0, len(x), self.RUN):
            run = x[start:start + self.RUN].astype(np.float64)
            if self.x1 is None:
                self.x1 = run[0]
            q = p[:len(run)]
            y = q * (self.y1 + np.cumsum(np.diff(run, prepend=self.x1) / q))
            out[start:start + len(run)] = y
            self.x1, self.y1 = run[-1], y[-1]
        return out


def _open(path: Path):
    import soundfile as sf

    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path}: the file is empty (0 bytes)")
    try:
        return sf.SoundFile(str(path))
    except Exception as err:  # soundfile raises its own error types
        reason = getattr(err, "error_string", err)  # without the path said again
        raise AudioInputError(f"{path}: not a readable audio file (libsndfile: {reason})") \
            from None


def iter_wav_blocks(path: Union[str, Path], rate: int = PIPELINE_RATE,
                    block_s: float = 1.0) -> Iterator[np.ndarray]:
    """The file as consecutive mono float32 blocks at ``rate`` (about ``block_s``
    seconds each), read and resampled block by block. A file cut short gives what
    it holds. Raises AudioInputError naming the file."""
    import soxr

    path = Path(path)
    with _open(path) as f:
        stream = (soxr.ResampleStream(f.samplerate, rate, 1, dtype="float32", quality="HQ")
                  if f.samplerate != rate else None)
        dc = DCBlocker(rate)
        size = max(1, int(block_s * f.samplerate))
        bad = given = 0
        while True:
            try:
                block = f.read(size, dtype="float32", always_2d=True)
            except Exception as err:  # soundfile raises its own error types
                raise AudioInputError(f"{path}: unreadable after {f.tell() / f.samplerate:.1f} s "
                                      f"({err})") from None
            last = len(block) < size
            finite = np.isfinite(block)
            if not finite.all():
                bad += block.size - int(np.count_nonzero(finite))
                block = np.where(finite, block, np.float32(0))
            mono = np.clip(block, -1.0, 1.0).mean(axis=1, dtype=np.float32)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            if len(mono):
                given += len(mono)
                yield dc(mono)
            if last:
                break
    if bad:
        warnings.warn(f"{path}: {bad} NaN/Inf samples replaced by silence", stacklevel=2)
    if not given:
        raise AudioInputError(f"{path}: the file holds no audio")


def read_wav(path: Union[str, Path], rate: int = PIPELINE_RATE) -> np.ndarray:
    """The whole file as mono float32 at ``rate`` (see :func:`iter_wav_blocks`)."""
    return np.concatenate(list(iter_wav_blocks(path, rate)))


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
