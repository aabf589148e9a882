"""The acoustic end-of-turn signal: Pipecat's Smart Turn v3.2 (BSD-2-Clause), an
ONNX classifier over the last 8 s of the user's audio that says whether the
speaker sounds finished (intonation, lengthening, a trailing "and...").

Only its model file is used: it ships inside the ``pipecat-ai`` wheel, installed
without its dependencies (``pip install --no-deps pipecat-ai==1.14.0``), at
``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``. The model's input,
a Whisper log-mel spectrogram (80 bands x 800 frames of 10 ms, on audio normalized
to zero mean and unit variance), is computed here with faster-whisper's own
feature extractor.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from pipeline.errors import ModelNotFoundError
from pipeline.models import bundled_file, onnx_session, user_path

PIP_SPEC = "pipecat-ai==1.14.0"
SAMPLE_RATE = 16000
WINDOW_S = 8
FRAMES = WINDOW_S * SAMPLE_RATE // 160  # 800 mel frames


class SmartTurn:
    """``probability(audio)``: P(the turn is complete) for 16 kHz mono float32 audio that
    ends where the user stopped (blocking; one ONNX Runtime thread)."""

    def __init__(self, model: Optional[str] = None, threads: int = 1):
        self.model, self.threads = model, threads
        self._session = None
        self._features = None
        self.cpu_ms: list[float] = []  # CPU time of each estimate

    def load(self) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        path = (user_path("pipeline.smart_turn_model", self.model) if self.model else
                bundled_file("pipecat", f"--no-deps {PIP_SPEC}", "audio", "turn", "smart_turn",
                             "data", "smart-turn-v3.2-cpu.onnx"))
        self._session = onnx_session("pipeline.smart_turn_model", path, self.threads,
                                     "is it a Smart Turn v3 .onnx model?")
        if [i.name for i in self._session.get_inputs()] != ["input_features"]:
            raise ModelNotFoundError(f"pipeline.smart_turn_model: {path} is not a Smart Turn "
                                     "v3 model (its input is not 'input_features')")
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE,
                                          hop_length=160, chunk_length=WINDOW_S, n_fft=400)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """The model's input: the last 8 s (left-padded with silence), normalized, as a
        (1, 80, 800) log-mel spectrogram."""
        n = WINDOW_S * SAMPLE_RATE
        x = np.asarray(audio, np.float32)[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)[:, :FRAMES]
        if mel.shape[1] < FRAMES:
            mel = np.pad(mel, ((0, 0), (0, FRAMES - mel.shape[1])))
        return np.ascontiguousarray(mel[None], dtype=np.float32)  # ONNX Runtime misreads strided input

    def probability(self, audio: np.ndarray) -> float:
        if self._session is None:
            self.load()
        t0 = time.thread_time()
        out = self._session.run(None, {"input_features": self.features(audio)})
        self.cpu_ms.append((time.thread_time() - t0) * 1000)
        return float(np.asarray(out[0]).reshape(-1)[0])
