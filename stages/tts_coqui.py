"""Speech synthesis with Coqui TTS (the `coqui-tts` package, an optional extra:
pip install -r requirements-coqui.txt), from a model checkpoint and its config
given by path. Nothing is downloaded: model names from the Coqui hub are refused."""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from pipeline.config import Strict
from pipeline.errors import MissingDependencyError
from pipeline.models import user_path
from pipeline.registry import register
from stages.base import SentenceTTS


class CoquiConfig(Strict):
    model_path: str = Field(..., description="Path of the model checkpoint (.pth).")
    config_path: str = Field(..., description="Path of the model's config.json.")
    speaker: Optional[str] = Field(None, description="Speaker name of a multi-speaker model.")
    language: Optional[str] = Field(None, description="Language of a multilingual model.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where to run.")
    threads: int = Field(2, ge=1, description="Torch CPU threads.")

    @field_validator("model_path")
    @classmethod
    def _model(cls, value: str) -> str:
        user_path("tts.model_path", value)
        return value

    @field_validator("config_path")
    @classmethod
    def _config(cls, value: str) -> str:
        user_path("tts.config_path", value)
        return value


@register("tts", "coqui", CoquiConfig, "Coqui TTS (optional extra), model and config by path")
class CoquiTTS(SentenceTTS):

    def __init__(self, config: CoquiConfig):
        super().__init__(config)
        self._synth = None
        self.sample_rate = 22050  # replaced by the model's rate at load

    def _load(self) -> None:
        try:
            import torch
            from TTS.utils.synthesizer import Synthesizer
        except ImportError as err:
            raise MissingDependencyError("tts.backend coqui needs the Coqui extra: pip install "
                                         "-r requirements-coqui.txt") from err
        cfg = self.config
        torch.set_num_threads(cfg.threads)
        self._synth = Synthesizer(tts_checkpoint=cfg.model_path, tts_config_path=cfg.config_path,
                                  use_cuda=cfg.device == "cuda")
        self.sample_rate = int(self._synth.output_sample_rate)

    def synthesize(self, text: str) -> np.ndarray:
        cfg = self.config
        wav = self._synth.tts(text, speaker_name=cfg.speaker, language_name=cfg.language,
                              split_sentences=False)
        return np.asarray(wav, dtype=np.float32)
