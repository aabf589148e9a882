"""One Realtime API session: the OpenAI Realtime WebSocket protocol over a Cascade
session (the subset a voice client needs; `make serve`, :mod:`pipeline.server`).

Client events handled: ``session.update``, ``input_audio_buffer.append`` (PCM16,
24 kHz, mono), ``input_audio_buffer.clear``, ``response.cancel``,
``conversation.item.truncate``. Turn detection is always on the server (Cascade's
VAD and end-of-turn decision); ``input_audio_buffer.commit`` and
``response.create`` get an ``error`` event saying so.

Server events sent: ``session.created``, ``session.updated``,
``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` /
``cleared``, ``conversation.item.added``,
``conversation.item.input_audio_transcription.completed``, ``response.created``,
``response.output_item.added``, ``response.content_part.added``,
``response.output_audio.delta``, ``response.output_audio_transcript.delta``, their
``.done`` events, ``response.content_part.done``, ``response.output_item.done``,
``response.done``, ``conversation.item.truncated`` (on barge-in the server cuts the
reply itself, at what the client has played by then), ``error``; and one event of
its own, ``cascade.turn.timeline`` (each turn's phases, for the web page's
waterfall), which clients that do not know it ignore.

Input audio is stamped with when it was captured, on the session clock: each
chunk's newest sample when the chunk arrived. Clients send audio as it is captured
(a microphone; the web page; ``eval.realtime_client``); audio sent while the
session is still starting is kept and heard once it has. Media times are those of
the client's own stream (``audio_start_ms``, ``audio_end_ms``). More than
``server.max_buffered_s`` of audio waiting to be heard is refused.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional

import numpy as np

from .audio import FRAME_SAMPLES, PIPELINE_RATE, resample
from .clock import Clock
from .events import AudioChunk, AudioFrame
from .observers import Observer
from .sinks import FileSink, PlayedText
from .turn import Turn
from .waits import get_within

RATE = 24000  # the Realtime API's PCM16 rate, both ways
MAX_INSTRUCTIONS = 4000  # characters: a system prompt, within the history's token budget
AUDIO_FORMAT = {"type": "audio/pcm", "rate": RATE}
DELTA_SAMPLES = RATE // 5  # output audio in 200 ms deltas
MAP_FRAMES = 4096  # frames whose stream position is kept (131 s)
IDLE_S = 0.1  # no audio for this long: the client is heard as silent (time goes on)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def error_event(message: str, code: str, kind: str = "invalid_request_error",
                param: Optional[str] = None, event_id: Optional[str] = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": kind, "code": code, "message": message}
    if param is not None:
        err["param"] = param
    if event_id is not None:
        err["event_id"] = event_id
    return {"type": "error", "error": err}


class ProtocolError(Exception):
    """A client event the session cannot use: answered with an ``error`` event."""

    def __init__(self, message: str, code: str = "invalid_value", param: Optional[str] = None):
        super().__init__(message)
        self.code, self.param = code, param


def pcm16_decode(b64: Any) -> np.ndarray:
    if not isinstance(b64, str):
        raise ProtocolError("input_audio_buffer.append: 'audio' must be a base64 string",
                            "invalid_type", "audio")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("input_audio_buffer.append: 'audio' is not valid base64",
                            "invalid_value", "audio") from None
    if len(raw) % 2:
        raise ProtocolError("input_audio_buffer.append: PCM16 audio needs an even number of "
                            "bytes", "invalid_value", "audio")
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def pcm16_encode(samples: np.ndarray) -> str:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


class InputAudio:
    """``input_audio_buffer.append`` chunks in, 32 ms frames at 16 kHz out. Each frame is
    stamped with when it was captured, as near as the server can tell: the newest
    sample of each chunk was captured when the chunk arrived (the client sends audio
    as it is captured). Chunks are received and stamped from the moment the client
    connects, so audio sent while the session is still starting is heard in full, on
    its own time line, once it has."""

    def __init__(self, clock: Clock, max_buffered_s: float):
        import soxr

        self.clock, self.max_buffered_s = clock, max_buffered_s
        self._resampler = soxr.ResampleStream(RATE, PIPELINE_RATE, 1, dtype="float32")
        self._queue: asyncio.Queue = asyncio.Queue()
        self._received = 0  # 16 kHz samples received
        self._media = 0  # 16 kHz samples framed so far
        self._skipped = 0  # 16 kHz samples of the client's stream never framed (cleared, refused)
        self._map: deque[tuple[float, int]] = deque(maxlen=MAP_FRAMES)  # (t, media end)
        self._t = -1.0  # the last frame's time

    def append(self, samples: np.ndarray) -> None:
        waiting = (self._received - self._media) / PIPELINE_RATE
        if waiting > self.max_buffered_s:
            self._skipped += len(samples) * PIPELINE_RATE // RATE
            raise ProtocolError(f"input_audio_buffer.append: {waiting:.1f} s of audio wait to be "
                                f"heard (server.max_buffered_s={self.max_buffered_s:g}); the "
                                "server cannot keep up, audio is dropped", "buffer_full", "audio")
        out = self._resampler.resample_chunk(samples)
        if len(out):
            self._received += len(out)
            self._queue.put_nowait((out, self.clock.now()))

    def clear(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:  # closed: stays closed
                self._queue.put_nowait(None)
                break
            self._received -= len(item[0])
            self._skipped += len(item[0])

    def close(self) -> None:
        self._queue.put_nowait(None)

    def media_ms(self, t: float) -> int:
        """The client's stream position (ms) of session time ``t``: a frame's time (the
        end of its last sample) or its start (one frame earlier), as the VAD gives them.
        Exact even when frames arrived in a burst (their times then lie close together)."""
        frame_s = FRAME_SAMPLES / PIPELINE_RATE
        after = None
        for ft, end in reversed(self._map):  # recent times are asked for
            if abs(ft - t) < 1e-7:
                return int(round(end * 1000 / PIPELINE_RATE))
            if abs(ft - t - frame_s) < 1e-7:
                return int(round((end - FRAME_SAMPLES) * 1000 / PIPELINE_RATE))
            if ft >= t:
                after = (ft, end)
            elif ft < t - 1.0:
                break
        if after is None:
            return int(round((self._media + self._skipped) * 1000 / PIPELINE_RATE))
        ft, end = after
        pos = end - min(FRAME_SAMPLES, max(0.0, (ft - t) * PIPELINE_RATE))
        return max(0, int(round(pos * 1000 / PIPELINE_RATE)))

    async def frames(self) -> AsyncIterator[AudioFrame]:
        pending = np.zeros(0, np.float32)
        while True:
            try:
                item = await get_within(self._queue, IDLE_S)
            except TimeoutError:
                # the client sends nothing (a muted microphone): silence, so that turns
                # still end, replies are recorded and cancels are done; not in its stream
                self._t = max(self._t + 1e-4, self.clock.now())
                self._map.append((self._t, self._media + self._skipped))
                yield AudioFrame(-1, self._t, samples=np.zeros(FRAME_SAMPLES, np.float32),
                                 sample_rate=PIPELINE_RATE)
                continue
            if item is None:
                return
            chunk, arrived = item
            pending = np.concatenate([pending, chunk])
            while len(pending) >= FRAME_SAMPLES:
                frame, pending = pending[:FRAME_SAMPLES], pending[FRAME_SAMPLES:]
                self._media += FRAME_SAMPLES
                # the chunk's newest sample arrived (was captured) at ``arrived``
                t = arrived - len(pending) / PIPELINE_RATE
                self._t = max(self._t + 1e-4, t)  # strictly increasing
                self._map.append((self._t, self._media + self._skipped))
                yield AudioFrame(-1, self._t, samples=frame, sample_rate=PIPELINE_RATE)


@dataclass
class Response:
    """The Realtime items of one turn: the user's message and the reply."""

    turn: Turn
    user_item: str
    response_id: str = field(default_factory=lambda: new_id("resp"))
    item_id: str = field(default_factory=lambda: new_id("item"))
    audio_started: bool = False
    transcribed: bool = False
    samples_sent: int = 0  # 24 kHz samples of reply audio sent
    placed: list[tuple[float, int, int]] = field(default_factory=list)  # (start, first, n)
    cancel_reason: Optional[str] = None


class RealtimeSink(FileSink):
    """Reply audio to the client: sent at once as ``response.output_audio.delta``
    events; the client plays them back to back, and the sink keeps that time line (as
    file mode does), so barge-in knows what was heard."""

    def __init__(self, rate: int, protocol: "RealtimeProtocol"):
        super().__init__(rate, keep_s=60.0)
        self.protocol = protocol

    async def play(self, chunk: AudioChunk) -> float:
        start = await super().play(chunk)
        self.protocol.audio(chunk, start)
        return start

    async def stop(self, turn_id: int) -> PlayedText:
        played = await super().stop(turn_id)
        self.protocol.truncated(turn_id, played)
        return played


class RealtimeProtocol(Observer):
    """Cascade's happenings as Realtime server events, through ``send`` (never blocks)."""

    def __init__(self, send: Callable[[dict[str, Any]], None], audio_in: InputAudio,
                 on_turn: Callable[[dict[str, Any], dict[str, Any]], None] = lambda t, tl: None):
        self.send, self.audio_in, self.on_turn = send, audio_in, on_turn
        self._responses: dict[int, list[Response]] = {}  # by turn_id, oldest first
        self._user_item: Optional[str] = None  # the utterance being heard
        self._last_item: Optional[str] = None

    # ---- Observer --------------------------------------------------------------------
    def speech_started(self, t: float) -> None:
        self._user_item = new_id("item")
        self.send({"type": "input_audio_buffer.speech_started",
                   "audio_start_ms": self.audio_in.media_ms(t), "item_id": self._user_item})

    def speech_resumed(self, t: float) -> None:
        """The user went on after an endpoint: for the client that is new speech (it
        stops playing the reply at once)."""
        if self._user_item is None:
            self.speech_started(t)

    def endpoint(self, turn: Turn) -> None:
        item = self._user_item or new_id("item")
        self._user_item = None
        resp = Response(turn, item)
        self._responses.setdefault(turn.turn_id, []).append(resp)
        self.send({"type": "input_audio_buffer.speech_stopped",
                   "audio_end_ms": self.audio_in.media_ms(turn.ended.speech_end), "item_id": item})
        self.send({"type": "input_audio_buffer.committed", "item_id": item,
                   "previous_item_id": self._last_item})
        self.send({"type": "conversation.item.added", "previous_item_id": self._last_item,
                   "item": {"id": item, "object": "realtime.item", "type": "message",
                            "role": "user", "status": "completed",
                            "content": [{"type": "input_audio", "transcript": None}]}})
        self._last_item = item
        self.send({"type": "response.created", "response": self._response_obj(resp, "in_progress")})
        if turn.user_text:  # transcribed at the pause already (speculation)
            self._transcribed(resp, turn.user_text)

    def _of_turn(self, turn: Turn) -> Optional[Response]:
        return next((r for r in self._responses.get(turn.turn_id, []) if r.turn is turn), None)

    def _playing(self, turn_id: int) -> Optional[Response]:
        """The response whose audio carries this turn id: the newest still open (a held
        reply, when the utterance that stopped it has ended without words)."""
        open_ = self._responses.get(turn_id) or []
        return open_[-1] if open_ else None

    def assistant(self, turn: Turn, text: str, v2v_ms: Optional[float]) -> None:
        resp = self._of_turn(turn)
        if resp is None:
            return
        self._transcribed(resp, turn.user_text)
        self.send({"type": "response.output_audio_transcript.delta", **self._where(resp),
                   "delta": text if not resp.placed or len(resp.placed) == 1 else " " + text})

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        resp = self._of_turn(turn)
        if resp is not None:
            rest = [r for r in self._responses[turn.turn_id] if r is not resp]
            if rest:
                self._responses[turn.turn_id] = rest
            else:
                del self._responses[turn.turn_id]
            self._transcribed(resp, transcript["user"])
            self._finish(resp, transcript["status"], transcript["assistant"],
                         transcript.get("error"))
        self.send({"type": "cascade.turn.timeline", "turn": transcript, "timeline": timeline,
                   "response_id": resp.response_id if resp is not None else None})
        self.on_turn(transcript, timeline)

    def error(self, text: str) -> None:
        self.send(error_event(text, "session_error", "server_error"))

    # ---- from the sink ---------------------------------------------------------------
    def audio(self, chunk: AudioChunk, start: float) -> None:
        resp = self._playing(chunk.turn_id)
        if resp is None:
            return
        self._transcribed(resp, resp.turn.user_text)
        if not resp.audio_started:
            resp.audio_started = True
            self.send({"type": "response.output_item.added", "response_id": resp.response_id,
                       "output_index": 0, "item": self._item(resp, "in_progress", "")})
            self.send({"type": "conversation.item.added", "previous_item_id": resp.user_item,
                       "item": self._item(resp, "in_progress", "")})
            self.send({"type": "response.content_part.added", **self._where(resp),
                       "part": {"type": "audio", "transcript": ""}})
            self._last_item = resp.item_id
        samples = resample(chunk.samples, chunk.sample_rate, RATE)
        resp.placed.append((start, resp.samples_sent, len(samples)))
        for i in range(0, len(samples), DELTA_SAMPLES):
            self.send({"type": "response.output_audio.delta", **self._where(resp),
                       "delta": pcm16_encode(samples[i:i + DELTA_SAMPLES])})
        resp.samples_sent += len(samples)

    def truncated(self, turn_id: int, played: PlayedText) -> None:
        """The reply was cut at ``played.stopped_at``: what the client has played by then."""
        resp = self._playing(turn_id)
        if resp is None or not resp.audio_started or played.stopped_at is None:
            return
        heard = 0
        for start, first, n in resp.placed:
            if start < played.stopped_at:  # chunks placed after the cut were never heard
                heard = max(heard, first + min(n, int((played.stopped_at - start) * RATE)))
        resp.cancel_reason = resp.cancel_reason or "turn_detected"
        self.send({"type": "conversation.item.truncated", "item_id": resp.item_id,
                   "content_index": 0, "audio_end_ms": heard * 1000 // RATE})

    def cancel_requested(self) -> None:
        for resps in self._responses.values():
            for resp in resps:
                resp.cancel_reason = "client_cancelled"

    def known_item(self, item_id: str) -> bool:
        return any(r.item_id == item_id for rs in self._responses.values() for r in rs)

    # ---- event bodies ----------------------------------------------------------------
    def _where(self, resp: Response) -> dict[str, Any]:
        return {"response_id": resp.response_id, "item_id": resp.item_id, "output_index": 0,
                "content_index": 0}

    def _item(self, resp: Response, status: str, transcript: str) -> dict[str, Any]:
        return {"id": resp.item_id, "object": "realtime.item", "type": "message",
                "role": "assistant", "status": status,
                "content": [{"type": "output_audio", "transcript": transcript}]}

    def _response_obj(self, resp: Response, status: str, output: Optional[list] = None,
                      details: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return {"id": resp.response_id, "object": "realtime.response", "status": status,
                "status_details": details, "output": output or [],
                "output_modalities": ["audio"],
                "audio": {"output": {"format": AUDIO_FORMAT}}}

    def _transcribed(self, resp: Response, text: str) -> None:
        if not resp.transcribed:
            resp.transcribed = True
            self.send({"type": "conversation.item.input_audio_transcription.completed",
                       "item_id": resp.user_item, "content_index": 0, "transcript": text,
                       "usage": {"type": "duration", "seconds": round(
                           len(resp.turn.ended.audio) / PIPELINE_RATE, 3)}})

    def _finish(self, resp: Response, status: str, heard: str = "",
                error: Optional[str] = None) -> None:
        if status == "answered":
            state, details = "completed", {"type": "completed"}
        elif status == "error":
            state = "failed"
            details = {"type": "failed", "error": {"type": "server_error", "message": error}}
        else:  # interrupted, reopened (the user went on), no words, a backchannel
            state = "cancelled"
            details = {"type": "cancelled", "reason": resp.cancel_reason or "turn_detected"}
        output = []
        if resp.audio_started:
            item_status = "completed" if state == "completed" else "incomplete"
            where = self._where(resp)
            self.send({"type": "response.output_audio.done", **where})
            self.send({"type": "response.output_audio_transcript.done", **where,
                       "transcript": heard})
            self.send({"type": "response.content_part.done", **where,
                       "part": {"type": "audio", "transcript": heard}})
            item = self._item(resp, item_status, heard)
            self.send({"type": "response.output_item.done", "response_id": resp.response_id,
                       "output_index": 0, "item": item})
            output = [item]
        self.send({"type": "response.done",
                   "response": self._response_obj(resp, state, output, details)})


def session_object(instructions: str) -> dict[str, Any]:
    """The session as ``session.created`` and ``session.updated`` describe it."""
    return {"type": "realtime", "object": "realtime.session", "model": "cascade",
            "output_modalities": ["audio"], "instructions": instructions,
            "audio": {"input": {"format": AUDIO_FORMAT,
                                "turn_detection": {"type": "server_vad"},
                                "transcription": {"model": "cascade-asr"}},
                      "output": {"format": AUDIO_FORMAT, "voice": "cascade"}}}


def parse_session_update(event: dict[str, Any]) -> Optional[str]:
    """The new instructions, if any; ProtocolError for what Cascade cannot honour."""
    session = event.get("session")
    if not isinstance(session, dict):
        raise ProtocolError("session.update: 'session' must be an object", "invalid_type",
                            "session")
    def section(d: Any, key: str) -> dict[str, Any]:
        value = d.get(key) if isinstance(d, dict) else None
        if value is not None and not isinstance(value, dict):
            raise ProtocolError(f"session.update: '{key}' must be an object", "invalid_type",
                                f"session.{key}")
        return value or {}
    audio = section(session, "audio")
    audio_in, audio_out = section(audio, "input"), section(audio, "output")
    fmt = audio_in.get("format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm"
                            or fmt.get("rate", RATE) != RATE):
        raise ProtocolError(f"session.update: input format {json.dumps(fmt)} is not supported; "
                            "send PCM16 mono at 24000 Hz ({\"type\": \"audio/pcm\", \"rate\": "
                            "24000})", "unsupported_format", "session.audio.input.format")
    fmt_out = audio_out.get("format")
    if fmt_out is not None and (not isinstance(fmt_out, dict) or fmt_out.get("type") != "audio/pcm"
                                or fmt_out.get("rate", RATE) != RATE):
        raise ProtocolError(f"session.update: output format {json.dumps(fmt_out)} is not "
                            "supported; Cascade sends PCM16 mono at 24000 Hz",
                            "unsupported_format", "session.audio.output.format")
    if "turn_detection" in audio_in:
        td = audio_in["turn_detection"]
        if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
            raise ProtocolError("session.update: turn detection is always on the server "
                                "(server_vad or semantic_vad; both are Cascade's end-of-turn "
                                "decision)", "unsupported_turn_detection",
                                "session.audio.input.turn_detection")
    instructions = session.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or not instructions.strip()
                                     or len(instructions) > MAX_INSTRUCTIONS):
        raise ProtocolError("session.update: 'instructions' must be a non-empty string of at "
                            f"most {MAX_INSTRUCTIONS} characters", "invalid_value",
                            "session.instructions")
    return instructions
