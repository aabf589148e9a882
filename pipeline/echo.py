"""Acoustic echo cancellation with the Speex echo canceller (Debian's
libspeexdsp, called through ctypes), using what the speaker played as the
reference signal, followed by Speex's residual-echo suppressor.

Both streams run at 16 kHz in 16 ms frames (two per 32 ms VAD frame). The reference
holds everything the output played (silence included) on the session's time line,
and each microphone frame is matched with what was played during its own time span,
so the adaptive filter only has to absorb the acoustic delay between them, up to
``tail_ms``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import deque
from typing import Optional

import numpy as np

from .errors import MissingDependencyError

RATE = 16000
FRAME = 256  # 16 ms: divides the VAD's 512-sample frame
_ECHO_SET_SAMPLING_RATE = 24
_PREPROCESS_SET_ECHO_STATE = 24
_PREPROCESS_SET_DENOISE = 0
_PREPROCESS_SET_ECHO_SUPPRESS = 20
_PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE = 22


def _lib():
    name = ctypes.util.find_library("speexdsp")
    if name is None:
        raise MissingDependencyError("audio.echo: aec needs libspeexdsp: "
                                     "apt-get install libspeexdsp1")
    lib = ctypes.CDLL(name)
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 3
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    return lib


class EchoReference:
    """What the speaker played, at 16 kHz, on the session's time line, shared between
    the output callback (writer) and the microphone side (reader).

    The writer pushes each block with the session time its first sample is output;
    the reader pulls the reference for a microphone frame's own time span. A frame
    that waited in the event loop (a stall) still gets the speaker samples of its own
    moment, not the newest ones; a time nothing was pushed for is silence. The echo
    of a sample reaches the microphone after it was played, so the filter sees the
    echo ``acoustic delay`` after its reference, within its tail. The last ``keep_s``
    are kept."""

    def __init__(self, keep_s: float = 3.0):
        self._blocks: deque[tuple[int, np.ndarray]] = deque()  # (first sample's index, samples)
        self._keep = int(keep_s * RATE)
        self._lock = threading.Lock()

    def push(self, t: float, samples16k: np.ndarray) -> None:
        """``samples16k`` were output from session time ``t`` on."""
        start = round(t * RATE)
        with self._lock:
            self._blocks.append((start, samples16k))
            while self._blocks and self._blocks[0][0] + len(self._blocks[0][1]) \
                    < start + len(samples16k) - self._keep:
                self._blocks.popleft()

    def pull(self, end: float, n: int) -> np.ndarray:
        """The ``n`` samples output up to session time ``end`` (zeros where none were);
        a later push wins where two overlap."""
        last = round(end * RATE)
        first = last - n
        out = np.zeros(n, np.float32)
        with self._lock:
            for start, samples in self._blocks:
                lo, hi = max(start, first), min(start + len(samples), last)
                if lo < hi:
                    out[lo - first:hi - first] = samples[lo - start:hi - start]
        return out


class StreamClock:
    """Session times of a continuous stream of samples (a device's input or output).
    Each block starts where the previous one ended, so the lateness of device
    callbacks (they come in bursts) does not shift samples against each other. A
    block measured earlier than that moves the count back to it (a callback is never
    early: the count started late, or the device's clock runs fast); one measured
    more than ``tolerance_s`` later moves it forward (a drop-out of the device)."""

    def __init__(self, rate: int, tolerance_s: float = 0.05):
        self._rate, self._tolerance = rate, tolerance_s
        self._next: Optional[float] = None

    def place(self, measured: float, n: int) -> float:
        """Session time of the first of ``n`` samples measured to start at ``measured``."""
        if self._next is None or not self._next <= measured <= self._next + self._tolerance:
            self._next = measured
        start = self._next
        self._next = start + n / self._rate
        return start


class TimedResampler:
    """A device's stream resampled to 16 kHz, with the session time of what comes
    out. The resampler holds input back and emits it in bursts, so the time of its
    output follows the sample counts, not the moment it came out."""

    def __init__(self, rate: int, tolerance_s: float = 0.05):
        import soxr

        self._rate = rate
        self._soxr = soxr.ResampleStream(rate, RATE, 1, dtype="float32")
        self._times = StreamClock(rate, tolerance_s)
        self._in = self._out = 0  # samples in (at ``rate``) and out (at 16 kHz) so far

    def __call__(self, block: np.ndarray, measured: float) -> tuple[float, np.ndarray]:
        """A block at the device's rate whose first sample was measured at session time
        ``measured`` -> (session time of the first sample out, the samples out)."""
        end = self._times.place(measured, len(block)) + len(block) / self._rate
        out = self._soxr.resample_chunk(block)
        self._in += len(block)
        self._out += len(out)
        held = self._in / self._rate - self._out / RATE
        return end - held - len(out) / RATE, out


class SpeexAEC:
    def __init__(self, tail_ms: int = 400, suppress_db: int = -40):
        self._lib = _lib()
        lib = self._lib
        self._echo = lib.speex_echo_state_init(FRAME, int(RATE * tail_ms / 1000))
        rate = ctypes.c_int(RATE)
        lib.speex_echo_ctl(self._echo, _ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._pre = lib.speex_preprocess_state_init(FRAME, RATE)
        lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_ECHO_STATE, ctypes.c_void_p(self._echo))
        off = ctypes.c_int(0)
        lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_DENOISE, ctypes.byref(off))
        sup = ctypes.c_int(suppress_db)
        lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_ECHO_SUPPRESS, ctypes.byref(sup))
        lib.speex_preprocess_ctl(self._pre, _PREPROCESS_SET_ECHO_SUPPRESS_ACTIVE, ctypes.byref(sup))
        self._out = np.zeros(FRAME, np.int16)

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Float32 mic and reference at 16 kHz (same length, a multiple of FRAME)
        -> echo-cancelled float32 mic."""
        if len(mic) % FRAME or len(ref) != len(mic):
            raise ValueError(f"echo canceller needs equal blocks of a multiple of {FRAME} "
                             f"samples, got {len(mic)} and {len(ref)}")
        out = np.empty(len(mic), np.float32)
        m16 = np.clip(mic * 32767, -32768, 32767).astype(np.int16)
        r16 = np.clip(ref * 32767, -32768, 32767).astype(np.int16)
        for i in range(0, len(mic), FRAME):
            m, r = np.ascontiguousarray(m16[i:i + FRAME]), np.ascontiguousarray(r16[i:i + FRAME])
            self._lib.speex_echo_cancellation(self._echo, m.ctypes.data, r.ctypes.data,
                                              self._out.ctypes.data)
            self._lib.speex_preprocess_run(self._pre, self._out.ctypes.data)
            out[i:i + FRAME] = self._out / 32768.0
        return out

    def close(self) -> None:
        if self._echo:
            self._lib.speex_preprocess_state_destroy(self._pre)
            self._lib.speex_echo_state_destroy(self._echo)
            self._echo = None


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


class EchoGate:
    """Decides whether a frame is the assistant's own voice (a non-linear processor
    after the linear canceller: Silero hears even a -20 dB residual as speech).

    While the speaker is active, a frame is echo when the canceller removed most of
    it (output below ``gate`` x microphone level), or when it is quieter than
    ``gate`` x the recent speaker level and either the filter has not converged
    yet (the first ``converge_s`` of speaker activity) or the microphone's level
    envelope follows the speaker's (an echo path dominates; user speech on top
    breaks that correlation). Once ~1 s of speaker activity has been seen, the
    echo return loss (median microphone/speaker level ratio) predicts the echo
    level, and a frame no louder than twice the prediction is echo.
    """

    def __init__(self, gate: float = 0.5, converge_s: float = 3.0, window: int = 8,
                 history: int = 48, max_lag: int = 12):
        self.gate = gate
        self.converge_s = converge_s
        self._ref_levels: deque[float] = deque(maxlen=window)  # ~250 ms of 32 ms frames
        self._mic_env: deque[float] = deque(maxlen=history)  # ~1.5 s, log levels
        self._ref_env: deque[float] = deque(maxlen=history + max_lag)
        self._max_lag = max_lag  # ~400 ms of echo delay
        self._erl: deque[float] = deque(maxlen=96)  # mic/speaker level ratios, ~3 s
        self.active_s = 0.0  # speaker activity seen so far

    def coupled(self) -> bool:
        """Does the microphone's level envelope follow the speaker's, at some delay?"""
        n = len(self._mic_env)
        if n < 24:
            return True  # too little to tell: assume an echo path
        mic = np.asarray(self._mic_env)
        ref = np.asarray(self._ref_env)
        best = -1.0
        for lag in range(min(self._max_lag, len(ref) - n) + 1):
            seg = ref[len(ref) - n - lag: len(ref) - lag]
            if seg.std() > 1e-6 and mic.std() > 1e-6:
                best = max(best, float(np.corrcoef(mic, seg)[0, 1]))
        return best > 0.5

    def likely_echo(self, mic: np.ndarray, cleaned: np.ndarray, ref: np.ndarray) -> bool:
        ref_now, mic_now = _rms(ref), _rms(mic)
        self._ref_levels.append(ref_now)
        self._ref_env.append(20 * np.log10(ref_now + 1e-5))
        self._mic_env.append(20 * np.log10(mic_now + 1e-5))
        ref_level = max(self._ref_levels)
        if ref_level < 1e-3:
            return False  # the speaker is silent: nothing to echo
        self.active_s += len(ref) / RATE
        out = _rms(cleaned)
        self._erl.append(mic_now / ref_level)
        if out < self.gate * mic_now:
            return True  # the canceller removed most of it
        if len(self._erl) >= 32:
            # Echo return loss: what the microphone usually hears of the speaker. A
            # frame no louder than twice that is consistent with echo alone, whatever
            # state the adaptive filter is in (it misadapts during double talk).
            return mic_now < 2.0 * float(np.median(self._erl)) * ref_level
        if out >= self.gate * ref_level:
            return False  # clearly louder than anything the speaker could cause
        # Quieter than the speaker: echo if the filter has not converged yet, or if
        # the microphone's level still follows the speaker's (echo dominates).
        return self.active_s < self.converge_s or self.coupled()
