"""Speech synthesis with espeak-ng (Debian's espeak-ng package): formant
synthesis, robotic but the lightest and fastest voice there is."""
from __future__ import annotations

import io
import shutil
import subprocess
from typing import AsyncIterator

import numpy as np
from pydantic import Field

from pipeline import clock
from pipeline.config import Strict
from pipeline.errors import MissingDependencyError, StageError
from pipeline.events import AudioChunk, Sentence
from pipeline.registry import register
from stages.base import Stage

SAMPLE_RATE = 22050  # espeak-ng's output rate


class EspeakConfig(Strict):
    voice: str = Field("en-us", description="espeak-ng voice (espeak-ng --voices lists them).")
    words_per_minute: int = Field(175, ge=80, le=450, description="Speaking rate.")
    pitch: int = Field(50, ge=0, le=99, description="Pitch, 0-99.")
    executable: str = Field("espeak-ng", description="The espeak-ng program.")


@register("tts", "espeak", EspeakConfig, "espeak-ng (formant synthesis; lightest, fastest)")
class EspeakTTS(Stage[Sentence, AudioChunk]):
    kind = "tts"
    sample_rate = SAMPLE_RATE

    def _load(self) -> None:
        if shutil.which(self.config.executable) is None:
            raise MissingDependencyError(f"tts.backend espeak needs {self.config.executable!r}: "
                                         "apt-get install espeak-ng")

    def synthesize(self, text: str) -> np.ndarray:
        import soundfile as sf

        cfg = self.config
        res = subprocess.run([cfg.executable, "-v", cfg.voice, "-s", str(cfg.words_per_minute),
                              "-p", str(cfg.pitch), "--stdout", text], capture_output=True)
        if res.returncode != 0 or not res.stdout:
            raise StageError("tts", f"espeak-ng failed: {res.stderr.decode(errors='replace')[:200]}")
        audio, rate = sf.read(io.BytesIO(res.stdout), dtype="float32")
        if rate != SAMPLE_RATE:
            raise StageError("tts", f"espeak-ng produced {rate} Hz, expected {SAMPLE_RATE}")
        return audio

    async def warmup(self) -> None:
        await self.worker.call(self.synthesize, "Hello.")

    async def process(self, events: AsyncIterator[Sentence]) -> AsyncIterator[AudioChunk]:
        async for sentence in events:
            audio = await self.worker.call(self.synthesize, sentence.text)
            if len(audio):
                yield AudioChunk(sentence.turn_id, clock.now(), samples=audio,
                                 sample_rate=SAMPLE_RATE, sentence_index=sentence.index,
                                 text=sentence.text)
