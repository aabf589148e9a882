"""Live mode: a hands-free conversation through PortAudio (PyAudio).

The microphone callback only hands raw blocks to the event loop and the speaker
callback only copies queued samples out: neither ever waits on a model. The
microphone side resamples to 16 kHz, cancels the echo of what the speaker played
(or applies the half-duplex rule), and cuts 32 ms frames for the VAD.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from pathlib import Path
from typing import AsyncIterator, Optional, Union

import numpy as np

from . import clock as clock_mod
from .audio import FRAME_SAMPLES, PIPELINE_RATE, resample
from .clock import Clock
from .config import CascadeConfig
from .console import Console
from .devices import (Device, buffer_time, device_error, device_lost, find_device,
                      open_pyaudio, supported_rate)
from .echo import EchoGate, EchoReference, SpeexAEC, TimedResampler
from .events import AudioChunk, AudioFrame
from .session import Session
from .sinks import AudioSink, Placed, PlayedText, heard_only, played_text
from .waits import get_within


class SpeakerSink(AudioSink):
    """Reply audio to an output device. ``play`` queues (never blocks); the
    device callback copies out one block at a time, so ``stop`` takes effect
    within one block plus the device's own latency.

    ``stop`` concerns the turn now playing: once a newer turn plays, what earlier
    turns played is forgotten, so a long session keeps one turn's worth."""

    def __init__(self, pa, device: Device, preferred_rate: int, block_ms: int, clock: Clock,
                 reference: Optional[EchoReference]):
        self.rate = supported_rate(pa, device, "output", [preferred_rate])
        self._pa, self._device, self._clock, self._reference = pa, device, clock, reference
        self._block = max(64, int(self.rate * block_ms / 1000))
        self._lock = threading.Lock()
        self._queue: deque[list] = deque()  # [Placed, samples already output]
        self._placed: list[Placed] = []
        self._last_out: dict[int, float] = {}  # turn -> when its last output sample is heard
        self._end = 0.0
        self._latency = 0.0
        self._stream = None
        self._ref_resampler = TimedResampler(self.rate) if reference is not None else None

    def open(self) -> None:
        import pyaudio

        try:
            self._stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=self.rate,
                                         output=True, output_device_index=self._device.index,
                                         frames_per_buffer=self._block,
                                         stream_callback=self._callback)
        except OSError as err:
            raise device_error(f"audio.output_device: cannot open {self._device.name!r} "
                               f"({err})", "output") from None
        self._latency = float(self._stream.get_output_latency())

    def _callback(self, in_data, frame_count, time_info, status):
        import pyaudio

        out = np.zeros(frame_count, np.float32)
        now = self._clock.now()
        out_at = buffer_time(now, time_info, "output_buffer_dac_time", now + self._latency)
        filled = 0
        with self._lock:
            while filled < frame_count and self._queue:
                item = self._queue[0]
                placed, done = item
                take = min(frame_count - filled, len(placed.samples) - done)
                out[filled:filled + take] = placed.samples[done:done + take]
                filled += take
                item[1] = done + take
                self._last_out[placed.turn_id] = out_at + filled / self.rate
                if item[1] >= len(placed.samples):
                    self._queue.popleft()
        if self._reference is not None:
            self._reference.push(*self._ref_resampler(out, out_at))
        return out.tobytes(), pyaudio.paContinue

    async def play(self, chunk: AudioChunk) -> float:
        samples = resample(chunk.samples, chunk.sample_rate, self.rate)
        now = self._clock.now()
        with self._lock:
            self._placed = [p for p in self._placed
                            if p.turn_id == chunk.turn_id or p.end(self.rate) > now]
            self._last_out = {turn: t for turn, t in self._last_out.items()
                              if turn == chunk.turn_id or t > now}
            start = max(now + self._latency, self._end)
            placed = Placed(chunk.turn_id, chunk.sentence_index, chunk.text, start, samples)
            self._queue.append([placed, 0])
            self._placed.append(placed)
            self._end = start + len(samples) / self.rate
        return start

    def busy_until(self) -> float:
        return self._end

    async def stop(self, turn_id: int) -> PlayedText:
        now = self._clock.now()
        with self._lock:
            self._queue = deque(item for item in self._queue if item[0].turn_id != turn_id)
            # what the listener heard: chunks that had started by now
            result = played_text(self._placed, turn_id, now, self.rate)
            self._placed = heard_only(self._placed, turn_id, now, self.rate)
            rest = sum(len(p.samples) - done for p, done in self._queue) / self.rate
            self._end = now + self._latency + rest if self._queue else now
            stopped_at = self._last_out.get(turn_id)
        return PlayedText(result.text, result.complete, stopped_at=stopped_at)

    def check(self) -> None:
        """AudioDeviceError if PortAudio has ended the output stream."""
        if self._stream is not None and not self._stream.is_active():
            raise device_lost("speaker", self._device.name)

    async def aclose(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):  # a lost device may refuse even this
                self._stream.stop_stream()
                self._stream.close()
            self._stream = None


class MicSource:
    """Microphone frames at 16 kHz with echo handling. When PortAudio ends the
    microphone's or the speaker's stream (the device or the sound server went away),
    ``frames`` raises AudioDeviceError, so the session ends with what it has."""

    CHECK_S = 0.5  # how often the streams are checked

    def __init__(self, pa, device: Device, block_ms: int, clock: Clock, config: CascadeConfig,
                 sink: SpeakerSink, reference: Optional[EchoReference]):
        self.rate = supported_rate(pa, device, "input", [PIPELINE_RATE])
        self._pa, self._device, self._clock, self._cfg, self._sink = pa, device, clock, \
            config.audio, sink
        self._block = max(64, int(self.rate * block_ms / 1000))
        self._reference = reference
        self._aec = SpeexAEC(config.audio.aec_tail_ms) if reference is not None else None
        self._gate = EchoGate(config.audio.aec_gate, config.audio.aec_converge_s)
        self._stream = None
        self._latency = 0.0

    def _likely_echo(self, raw: np.ndarray, cleaned: np.ndarray, t: float,
                     ref: Optional[np.ndarray]) -> bool:
        cfg = self._cfg
        if ref is not None:
            return self._gate.likely_echo(raw, cleaned, ref)
        if cfg.echo == "half_duplex" and self._sink.busy_until() > t:
            level_db = 20 * math.log10(float(np.sqrt(np.mean(raw ** 2))) + 1e-9)
            return level_db < cfg.half_duplex_level_db
        return False

    async def frames(self) -> AsyncIterator[AudioFrame]:
        import pyaudio

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def callback(in_data, frame_count, time_info, status):
            # when its first sample was captured
            at = self._clock.now() - self._latency - frame_count / self.rate
            loop.call_soon_threadsafe(queue.put_nowait, (in_data, at))
            return None, pyaudio.paContinue

        try:
            self._stream = self._pa.open(format=pyaudio.paFloat32, channels=1, rate=self.rate,
                                         input=True, input_device_index=self._device.index,
                                         frames_per_buffer=self._block, stream_callback=callback,
                                         start=False)
            self._latency = float(self._stream.get_input_latency())  # before the first callback
            self._stream.start_stream()
        except OSError as err:
            raise device_error(f"audio.input_device: cannot open {self._device.name!r} "
                               f"({err})", "input") from None
        resampler = TimedResampler(self.rate)
        pending = np.zeros(0, np.float32)
        checked = 0.0
        try:
            while True:
                try:
                    data, at = await get_within(queue, self.CHECK_S)
                except TimeoutError:  # a stream PortAudio ended never calls back again
                    self._check()
                    continue
                if at > checked + self.CHECK_S:
                    self._check()
                    checked = at
                start, mic = resampler(np.frombuffer(data, np.float32), at)
                end = start + len(mic) / PIPELINE_RATE  # just after its last sample
                pending = np.concatenate([pending, mic])
                while len(pending) >= FRAME_SAMPLES:
                    frame, pending = pending[:FRAME_SAMPLES], pending[FRAME_SAMPLES:]
                    # media time of this frame's last sample
                    t = end - len(pending) / PIPELINE_RATE
                    ref, cleaned = None, frame
                    if self._aec is not None:
                        ref = self._reference.pull(t, FRAME_SAMPLES)
                        cleaned = self._aec.process(frame, ref)
                    yield AudioFrame(-1, t, samples=cleaned, sample_rate=PIPELINE_RATE,
                                     likely_echo=self._likely_echo(frame, cleaned, t, ref))
        finally:
            with contextlib.suppress(OSError):  # a lost device may refuse even this
                self._stream.stop_stream()
                self._stream.close()
            if self._aec is not None:
                self._aec.close()

    def _check(self) -> None:
        if not self._stream.is_active():
            raise device_lost("microphone", self._device.name)
        self._sink.check()


async def run_live(config: CascadeConfig, out_dir: Optional[Path],
                   input_device: Optional[Union[int, str]] = None,
                   output_device: Optional[Union[int, str]] = None,
                   console: Optional[Console] = None) -> Session:
    console = console or Console(live=True)
    pa = open_pyaudio()
    session = None
    try:
        mic_dev = find_device(pa, input_device if input_device is not None
                              else config.audio.input_device, "input")
        spk_dev = find_device(pa, output_device if output_device is not None
                              else config.audio.output_device, "output")
        if config.audio.echo == "half_duplex":
            config = config.replace(vad={"barge_in_threshold": config.audio.half_duplex_threshold})
        clock = Clock()
        clock_mod.use(clock)
        reference = EchoReference() if config.audio.echo == "aec" else None
        session = Session(config, lambda stages: SpeakerSink(
            pa, spk_dev, stages.tts.sample_rate, config.audio.block_ms, clock, reference),
            out_dir, console)
        sink = session.sink
        mic = MicSource(pa, mic_dev, config.audio.block_ms, clock, config, sink, reference)
        console.info(f"microphone: {mic_dev.name} ({mic.rate} Hz); speaker: {spk_dev.name} "
                     f"({sink.rate} Hz); echo: {config.audio.echo}")
        async with session:
            sink.open()
            threads = getattr(session.stages.asr, "thread_choice", None)
            if threads is not None and threads.encode_ms:  # timed (more than one core)
                console.info(f"asr threads (asr.cpu_threads: auto, timed at load): encoder "
                             f"{threads.encoder}, decoder {threads.decoder}")
            console.info("listening: just speak (Ctrl-C to stop)")
            await session.run(mic.frames(), clock)
    finally:
        pa.terminate()
        if out_dir is not None and session is not None:
            console.info(f"\nsession transcript saved: {out_dir}/transcript.jsonl")
    return session
