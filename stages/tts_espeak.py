"""Speech synthesis with espeak-ng (Debian's espeak-ng package): formant
synthesis, robotic but the lightest and fastest voice there is."""
from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
from pydantic import Field

from pipeline.config import Strict
from pipeline.errors import MissingDependencyError, StageError
from pipeline.registry import register
from stages.base import SentenceTTS

SAMPLE_RATE = 22050  # espeak-ng's output rate


class EspeakConfig(Strict):
    voice: str = Field("en-us", description="espeak-ng voice (espeak-ng --voices lists them).")
    words_per_minute: int = Field(175, ge=80, le=450, description="Speaking rate.")
    pitch: int = Field(50, ge=0, le=99, description="Pitch, 0-99.")
    executable: str = Field("espeak-ng", description="The espeak-ng program.")
    timeout_s: float = Field(5.0, gt=0, description="Longest time one sentence's synthesis may "
                             "take before it fails (espeak-ng takes milliseconds).")


@register("tts", "espeak", EspeakConfig, "espeak-ng (formant synthesis; lightest, fastest)")
class EspeakTTS(SentenceTTS):
    sample_rate = SAMPLE_RATE

    def _load(self) -> None:
        if shutil.which(self.config.executable) is None:
            raise MissingDependencyError(f"tts.backend espeak needs {self.config.executable!r}: "
                                         "apt-get install espeak-ng")

    def synthesize(self, text: str) -> np.ndarray:
        import soundfile as sf

        cfg = self.config
        # the text goes through stdin: as an argument, "-5 degrees" would be read as an option
        try:
            res = subprocess.run([cfg.executable, "-v", cfg.voice, "-s", str(cfg.words_per_minute),
                                  "-p", str(cfg.pitch), "--stdout", "--stdin"],
                                 input=text.encode("utf-8"), capture_output=True,
                                 timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            raise StageError("tts", f"espeak-ng timed out after {cfg.timeout_s:g} s "
                             "(tts.timeout_s)") from None
        if res.returncode != 0 or not res.stdout:
            raise StageError("tts", f"espeak-ng failed: {res.stderr.decode(errors='replace')[:200]}")
        audio, rate = sf.read(io.BytesIO(res.stdout), dtype="float32")
        if rate != SAMPLE_RATE:
            raise StageError("tts", f"espeak-ng produced {rate} Hz, expected {SAMPLE_RATE}")
        return audio
