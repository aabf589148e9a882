"""Voice activity detection with Silero VAD (ONNX, the copy shipped in
faster-whisper's assets), on 32 ms frames of 16 kHz audio.

Emits SpeechStarted once speech has lasted ``min_speech_ms`` (so a click or a
cough is not a turn), SpeechPaused when silence begins (a candidate end of turn,
after ``pause_ms``), SpeechResumed if speech comes back, and SpeechEnded once the
silence has lasted ``min_silence_ms`` (``end_silence_ms`` under adaptive endpointing:
pipeline.max_silence_ms), or when the input ends inside an utterance, or where the
orchestrator found that its words stopped (``end_speech``: a noisy room). With ``early_pause_drop``, a
provisional SpeechPaused may come first, where the probability falls below the
speaker's own level while noise still keeps it above the absolute threshold.
"""
from __future__ import annotations

from collections import deque
from typing import AsyncIterator, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from pipeline.config import Strict
from pipeline.errors import ModelNotFoundError
from pipeline.events import (AudioFrame, SpeechEnded, SpeechPaused, SpeechProgress,
                             SpeechResumed, SpeechStarted)
from pipeline.models import bundled_file, onnx_session, user_path
from pipeline.registry import register
from stages.base import Stage

SAMPLE_RATE = 16000
FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
CONTEXT = 64


class SileroVADConfig(Strict):
    model: Optional[str] = Field(
        None, description="Path to a Silero VAD ONNX file; null = faster-whisper's bundled copy.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability at or above "
                             "which a frame is speech.")
    neg_threshold: Optional[float] = Field(
        None, gt=0, lt=1, description="Below this a frame is silence (hysteresis); "
        "null = threshold - 0.15.")
    min_speech_ms: int = Field(96, ge=0, description="Speech shorter than this is noise: no "
                               "turn.")
    barge_in_min_speech_ms: int = Field(
        192, ge=0, description="While the assistant speaks, speech must last this long to "
        "interrupt it (a cough or a click does not).")
    barge_in_threshold: Optional[float] = Field(
        None, gt=0, lt=1, description="Speech probability needed to interrupt the assistant; "
        "null = threshold. audio.echo: half_duplex raises it.")
    relative_drop: Optional[float] = Field(
        None, gt=0, lt=1, description="Noise-robust end of speech: inside speech, a frame whose "
        "probability falls this far below the utterance's own speech level (a running mean "
        "of its voiced frames) is silence too, and once paused only a frame within half of "
        "it resumes. Background noise after the last word keeps Silero at 0.5-0.95, above "
        "neg_threshold, for hundreds of ms. 0.2 hears the end in noise ~170 ms sooner (p50, "
        "eval.bench_vad) but also ends inner pauses sooner: more premature endpoints on the "
        "pauses set, so null (the absolute thresholds only) by default.")
    early_pause_drop: Optional[float] = Field(
        None, gt=0, lt=1, description="Speculation that starts before the noise after the "
        "last word has faded: inside speech, frames this far below the utterance's own speech "
        "level (a running mean of its frames above it) for pause_ms give a provisional "
        "SpeechPaused, and the speculative turn starts on the audio up to there; a frame back "
        "within half of it is a SpeechResumed. The silence that ends the turn is still counted "
        "from the end the absolute thresholds hear (a second SpeechPaused confirms it), so the "
        "turn ends no sooner than without it: only its compute starts sooner. Not with "
        "relative_drop.")
    min_silence_ms: int = Field(288, ge=32, description="Silence that ends a turn (endpoint).")
    pause_ms: int = Field(32, ge=32, description="Silence after which a SpeechPaused "
                          "(candidate end of turn) is emitted.")
    speech_pad_ms: int = Field(96, ge=0, description="Audio kept before the first and after "
                               "the last voiced frame of an utterance.")
    room_margin_db: float = Field(
        3.0, ge=0, description="After an utterance ended by its words stopping "
        "(pipeline.words_stall_s: the VAD heard the room's noise as speech), the room is known "
        "(from the 256 ms or more of noise after the words stopped, up to the partial that "
        "showed it): speech starts, resumes after a pause or interrupts the reply only on "
        "frames this far above the loudest frame of that noise, so the room's babble does not "
        "start turns. Inside speech the VAD is as before: the room's noise keeps the utterance "
        "open until its words stop again, and each such stall learns the room again. In a room "
        "as loud as the user (SNR under ~5 dB) this shuts the user out too, until the room is "
        "forgotten (room_forget_ms).")
    room_preroll_ms: int = Field(
        640, ge=0, description="In a known room, speech starts on its first frames above the "
        "room's noise, which may come after its first words: this much more audio before "
        "them goes to the ASR.")
    room_forget_ms: int = Field(
        1000, ge=32, description="The known room is forgotten after this much silence by the "
        "VAD's own probability (the noise has stopped).")
    max_utterance_s: float = Field(60.0, gt=1, description="A turn is cut here even without a "
                                   "pause (a monologue); the rest starts the next turn.")

    @model_validator(mode="after")
    def _check(self):
        if self.model is not None:
            user_path("vad.model", self.model)
        if self.pause_ms > self.min_silence_ms:
            raise ValueError("pause_ms must not exceed min_silence_ms")
        if self.early_pause_drop is not None and self.relative_drop is not None:
            raise ValueError("early_pause_drop and relative_drop do not go together: with "
                             "relative_drop the utterance already ends at the relative drop")
        return self

    @property
    def low(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(0.01, self.threshold - 0.15)


def _level_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(samples)) + 1e-10))


def _frames(ms: int) -> int:
    return max(1, int(round(ms / 1000 * SAMPLE_RATE / FRAME)))


@register("vad", "silero", SileroVADConfig, "Silero VAD v6 (ONNX, bundled with faster-whisper)")
class SileroVAD(Stage[AudioFrame, Union[SpeechStarted, SpeechProgress, SpeechPaused,
                                        SpeechResumed, SpeechEnded]]):
    kind = "vad"

    def __init__(self, config: SileroVADConfig):
        super().__init__(config)
        self._session = None
        self.turns = 0  # utterances seen: the turn ids the orchestrator uses
        # set by an adaptive endpoint: the silence that closes an utterance (instead of
        # min_silence_ms); the orchestrator ends the turn earlier when it is complete
        self.end_silence_ms: Optional[int] = None
        # set by the orchestrator's listen-ahead: a SpeechProgress every this much speech
        self.progress_ms: Optional[int] = None
        self._stalled: Optional[tuple[int, float, float]] = None  # see end_speech
        # a noisy room, learnt where the words stopped: the level (dB) speech must pass
        self._room: Optional[float] = None
        self._room_quiet = 0  # frames of silence by the probability, while the room is known

    @property
    def closes_after_ms(self) -> int:
        """The silence after which an utterance is closed (SpeechEnded)."""
        return self.end_silence_ms or self.config.min_silence_ms

    def _load(self) -> None:
        path = self.config.model or str(bundled_file(
            "faster_whisper", "faster-whisper==1.2.1", "assets", "silero_vad_v6.onnx"))
        self._session = onnx_session("vad.model", path, 1, "is it a Silero VAD .onnx model?")
        inputs = sorted(i.name for i in self._session.get_inputs())
        if inputs != ["c", "h", "input"]:
            raise ModelNotFoundError(f"vad.model: {path} has the inputs {inputs}, not those of "
                                     "Silero VAD (input, h, c)")
        self.reset()

    def end_speech(self, turn_id: int, at: float, heard_until: float) -> None:
        """The words of utterance ``turn_id`` stopped at ``at`` while this VAD still hears
        speech (pipeline.words_stall_s: a noisy room), as its partial transcripts of the
        audio up to ``heard_until`` show. At the next frame, if that utterance is still open
        and not paused (a pause ends it the usual way), it is closed there: a SpeechEnded
        with ``stalled``, its audio up to ``at`` and its padding; the frames from ``at`` to
        ``heard_until``, with no words in them, are the room (see room_margin_db)."""
        self._stalled = (turn_id, at, heard_until)

    def reset(self) -> None:
        self._stalled, self._room, self._room_quiet = None, None, 0
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._ctx = np.zeros(CONTEXT, np.float32)

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one 512-sample frame (blocking; keeps the LSTM state)."""
        x = np.concatenate([self._ctx, frame])[None, :]
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._ctx = frame[-CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    async def process(self, frames: AsyncIterator[AudioFrame]):
        cfg = self.config
        pad = _frames(cfg.speech_pad_ms)
        min_silence = _frames(self.closes_after_ms)
        pause = _frames(cfg.pause_ms)
        progress = _frames(self.progress_ms) if self.progress_ms else 0
        min_speech_normal, min_speech_barge = (_frames(cfg.min_speech_ms),
                                               _frames(cfg.barge_in_min_speech_ms))
        barge_threshold = cfg.barge_in_threshold or cfg.threshold
        max_frames = int(cfg.max_utterance_s * SAMPLE_RATE / FRAME)
        # pre-roll: long enough to reach back over speech judged echo at first
        reach = pad + max(min_speech_normal, min_speech_barge) + 32
        history: deque[np.ndarray] = deque(maxlen=reach + _frames(cfg.room_preroll_ms))
        utterance: list[np.ndarray] = []
        in_speech = False
        voiced_run = 0
        raw_run = 0  # voiced frames counting those judged echo: where speech may have begun
        raw_start = 0.0
        silence_run = 0
        resume_run = 0  # voiced frames while paused and the assistant speaks
        paused = False
        last_voiced_end = 0.0
        start_t = 0.0
        drop = cfg.relative_drop
        level = 0.0  # the utterance's speech level (running mean of its voiced frames)
        early = cfg.early_pause_drop
        early_run = 0  # frames below the speech level by early_pause_drop, inside speech
        early_paused = False  # a provisional SpeechPaused is out
        early_end = 0.0  # end of the last frame near the speech level

        async for frame in frames:
            if frame.sample_rate != SAMPLE_RATE or len(frame.samples) != FRAME:
                raise ValueError(f"vad: expects {FRAME}-sample frames at {SAMPLE_RATE} Hz, got "
                                 f"{len(frame.samples)} at {frame.sample_rate} Hz")
            raw = await self.worker.call(self.probability, frame.samples)
            if self._room is not None and not (in_speech and not paused):
                raw = self._in_the_room(raw, frame.samples)
            p = 0.0 if frame.likely_echo else raw  # the assistant hearing itself is not speech
            frame_start = frame.t - FRAME / SAMPLE_RATE
            if not in_speech:
                history.append(frame.samples)
                threshold = barge_threshold if frame.assistant_speaking else cfg.threshold
                min_speech = min_speech_barge if frame.assistant_speaking else min_speech_normal
                if raw >= cfg.threshold:
                    if raw_run == 0:
                        raw_start = frame_start
                    raw_run += 1
                elif raw < cfg.low:
                    raw_run = 0
                if p >= threshold:
                    if voiced_run == 0:
                        start_t = frame_start
                    voiced_run += 1
                    if voiced_run >= min_speech:
                        in_speech, silence_run, paused = True, 0, False
                        last_voiced_end = early_end = frame.t
                        early_run, early_paused = 0, False
                        level = p
                        onset = max(voiced_run, raw_run)
                        if self._room is not None:  # words under the room's level came first
                            keep = min(len(history), onset + pad + _frames(cfg.room_preroll_ms))
                        else:
                            keep = min(len(history), onset + pad, reach)
                        utterance = list(history)[-keep:]
                        self.turns += 1
                        yield SpeechStarted(self.turns, frame.t, speech_start=min(start_t, raw_start)
                                            if raw_run >= voiced_run else start_t)
                elif p < cfg.low:
                    voiced_run = 0
                continue

            utterance.append(frame.samples)
            stalled, self._stalled = self._stalled, None
            if stalled is not None and stalled[0] == self.turns and not paused:
                def frames_since(t: float) -> int:
                    return min(len(utterance), max(0, round((frame.t - t) * SAMPLE_RATE / FRAME)))
                after, unheard = frames_since(stalled[1]), frames_since(stalled[2])
                yield SpeechEnded(self.turns, frame.t, speech_end=stalled[1],
                                  audio=self._cut(utterance, after, pad), stalled=True)
                self._learn_room(utterance[len(utterance) - after:len(utterance) - unheard])
                in_speech, voiced_run, raw_run, paused = False, 0, 0, False
                history.clear()
                utterance = []
                continue
            # Hysteresis: inside speech a frame above neg_threshold is still speech;
            # once paused, only a frame above threshold resumes it.
            # Once paused while the reply plays (after an early endpoint), resuming takes
            # what a barge-in takes: the assistant's own voice must not reopen the turn.
            if paused and frame.assistant_speaking:
                resume_run = resume_run + 1 if p >= barge_threshold else 0
                resumed = resume_run >= min_speech_barge
            else:
                resume_run = 0
                resumed = p >= (cfg.threshold if paused else cfg.low)
                if drop is not None and resumed:  # relative to this speaker, in this noise
                    resumed = p >= level - (drop / 2 if paused else drop)
            if resumed:
                if early is None:
                    level += 0.2 * (p - level)
                last_voiced_end = frame.t
                silence_run, resume_run = 0, 0
                if paused:
                    paused = False
                    early_run, early_paused, early_end = 0, False, frame.t
                    yield SpeechResumed(self.turns, frame.t)
                elif early is not None:
                    # speech by the absolute thresholds: is it near this speaker's level?
                    if early_paused:
                        if p >= level - early / 2:
                            early_run, early_paused, early_end = 0, False, frame.t
                            level += 0.2 * (p - level)
                            yield SpeechResumed(self.turns, frame.t)
                    elif p >= level - early:
                        early_run, early_end = 0, frame.t
                        level += 0.2 * (p - level)
                    else:
                        early_run += 1
                        if early_run == pause:
                            early_paused = True
                            yield SpeechPaused(self.turns, frame.t, speech_end=early_end,
                                               audio=self._cut(utterance, early_run, pad),
                                               provisional=True)
            else:
                silence_run += 1
            if progress and silence_run == 0 and len(utterance) % progress == 0:
                yield SpeechProgress(self.turns, frame.t, audio=np.concatenate(utterance))
            if silence_run == pause and not paused:
                paused = True
                # after a provisional pause: its confirmation (the turn's silence counts
                # from here), the speculative turn keeps the audio it started on
                early_run, early_paused = 0, False
                yield SpeechPaused(self.turns, frame.t, speech_end=last_voiced_end,
                                   audio=self._cut(utterance, silence_run, pad))
            forced = len(utterance) >= max_frames
            if silence_run >= min_silence or forced:
                audio = self._cut(utterance, silence_run, pad)
                yield SpeechEnded(self.turns, frame.t, speech_end=last_voiced_end if not forced
                                  else frame.t, audio=audio, forced=forced)
                in_speech, voiced_run, raw_run, paused = False, 0, 0, False
                history.clear()
                utterance = []
        if in_speech:
            # The input ended inside an utterance (a file, or a stream, that stops before
            # the silence that closes it has passed): the input's end is its end; the
            # orchestrator answers it, or commits the speculative turn already on it.
            yield SpeechEnded(self.turns, frame.t, speech_end=last_voiced_end,
                              audio=self._cut(utterance, silence_run, pad))

    def _learn_room(self, noise: list[np.ndarray]) -> None:
        """The frames after an utterance's words stopped, which the VAD heard as speech
        and the partials as no words: the room's noise, which from now on starts no speech
        (see room_margin_db). Each stall learns the room again; with less than 256 ms of
        such frames, none is known."""
        self._room_quiet = 0
        if len(noise) < _frames(256):
            self._room = None
            return
        self._room = max(_level_db(f) for f in noise) + self.config.room_margin_db

    def _in_the_room(self, p: float, samples: np.ndarray) -> float:
        """The probability of a frame outside speech (or in a pause) in the known room: 0
        if the frame is not louder than the room's noise by room_margin_db. The room is
        forgotten after room_forget_ms of silence by the probability alone."""
        if p < self.config.low:
            self._room_quiet += 1
            if self._room_quiet >= _frames(self.config.room_forget_ms):
                self._room = None
            return p
        self._room_quiet = 0
        return p if _level_db(samples) >= self._room else 0.0

    @staticmethod
    def _cut(utterance: list[np.ndarray], silence_run: int, pad: int) -> np.ndarray:
        """The utterance up to the last voiced frame plus ``pad`` frames of padding."""
        keep = len(utterance) - max(0, silence_run - pad)
        return np.concatenate(utterance[:keep]) if keep > 0 else np.zeros(0, np.float32)
