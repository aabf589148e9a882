"""Acoustic echo cancellation with the Speex echo canceller (Debian's
libspeexdsp, called through ctypes), using what the speaker played as the
reference signal, followed by Speex's residual-echo suppressor.

Both streams run at 16 kHz in 16 ms frames (two per 32 ms VAD frame). The reference is a FIFO fed with
everything the output played (silence included), so microphone and reference
advance together and the adaptive filter absorbs the fixed delay between them,
up to ``tail_ms``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import deque

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
    """What the speaker played, at 16 kHz, as a FIFO shared between the output
    callback (writer) and the microphone side (reader).

    The echo of a sample reaches the microphone after it was played, so the
    reference must not lag the microphone: the reader keeps at most ``max_lead_s``
    queued (the writer started first, and the two device clocks drift), dropping the
    oldest. The filter then sees the echo ``lead + acoustic delay`` after its
    reference, within its tail."""

    def __init__(self, max_lead_s: float = 0.06):
        self._buf: deque[np.ndarray] = deque()
        self._n = 0
        self._max = int(max_lead_s * RATE)
        self._lock = threading.Lock()

    def push(self, samples16k: np.ndarray) -> None:
        with self._lock:
            self._buf.append(samples16k)
            self._n += len(samples16k)

    def pull(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        got = 0
        with self._lock:
            excess = self._n - n - self._max
            while excess > 0 and self._buf:  # drop what is older than the allowed lead
                head = self._buf[0]
                if len(head) <= excess:
                    self._buf.popleft()
                    self._n -= len(head)
                    excess -= len(head)
                else:
                    self._buf[0] = head[excess:]
                    self._n -= excess
                    excess = 0
            while got < n and self._buf:
                head = self._buf[0]
                take = min(n - got, len(head))
                out[got:got + take] = head[:take]
                got += take
                if take == len(head):
                    self._buf.popleft()
                else:
                    self._buf[0] = head[take:]
                self._n -= take
        return out


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
