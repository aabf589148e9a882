"""File mode: replay a WAV through the pipeline as if it came from a microphone,
at real-time pace or, with ``fast``, skipping the waits while nothing is being
computed. Writes conversation.wav (user left, assistant right, one time line),
transcript.jsonl and timeline.jsonl."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable, Optional

import numpy as np

from .audio import FRAME_SAMPLES, PIPELINE_RATE, iter_wav_blocks
from .clock import Clock
from .config import CascadeConfig
from .console import Console
from .errors import OutputError
from .events import AudioFrame
from .session import Session
from .sinks import FileSink


async def file_frames(audio: np.ndarray, clock: Clock, busy: Callable[[], bool],
                      tail_s: float = 1.0) -> AsyncIterator[AudioFrame]:
    """Frames of ``audio`` (see :func:`stream_frames`)."""
    async for frame in stream_frames([audio], clock, busy, tail_s):
        yield frame


async def stream_frames(blocks: Iterable[np.ndarray], clock: Clock, busy: Callable[[], bool],
                        tail_s: float = 1.0, on_frame: Callable[[AudioFrame], None] = lambda f: None
                        ) -> AsyncIterator[AudioFrame]:
    """32 ms frames of the audio in ``blocks`` (16 kHz mono, any block sizes), each
    delivered when its last sample would have arrived, then ``tail_s`` of silence (the
    VAD also ends an utterance that the input ends in). ``on_frame`` sees each frame as it is delivered."""
    tail = np.zeros(int(tail_s * PIPELINE_RATE), np.float32)
    rest = np.zeros(0, np.float32)
    n = 0
    for block in itertools.chain(blocks, [tail]):
        rest = np.concatenate([rest, block])
        whole = len(rest) // FRAME_SAMPLES * FRAME_SAMPLES
        if block is tail and len(rest) > whole:  # pad the very last frame
            rest = np.pad(rest, (0, FRAME_SAMPLES - (len(rest) - whole)))
            whole = len(rest)
        for start in range(0, whole, FRAME_SAMPLES):
            n += FRAME_SAMPLES
            t = n / PIPELINE_RATE
            await clock.sleep_until(t, skippable=not busy())
            frame = AudioFrame(-1, t, samples=rest[start:start + FRAME_SAMPLES],
                               sample_rate=PIPELINE_RATE)
            on_frame(frame)
            yield frame
        rest = rest[whole:]


class ConversationWriter:
    """conversation.wav written as the session goes (user left, assistant right, one
    time line), so a long session holds only the last seconds: everything before the
    newest input frame is final (reply audio is only ever placed, or cut, from now
    on). A write that fails is reported once; the session goes on without it."""

    def __init__(self, path: Path, sink: FileSink, report: Callable[[str], None]):
        import soundfile as sf
        import soxr

        self.path, self.sink, self.report = path, sink, report
        self.rate = sink.rate
        self.error: Optional[str] = None
        try:
            self._file = sf.SoundFile(str(path), "w", samplerate=self.rate, channels=2,
                                      subtype="PCM_16")
        except Exception as err:  # soundfile's own error types
            raise OutputError(f"{path}: cannot write ({err})") from None
        self._resample = soxr.ResampleStream(PIPELINE_RATE, self.rate, 1, dtype="float32")
        self._user = np.zeros(0, np.float32)  # user audio at the sink's rate, not yet written
        self.written = 0  # frames in the file

    def add(self, frame: AudioFrame) -> None:
        self._user = np.concatenate([self._user, self._resample.resample_chunk(frame.samples)])
        self._write(len(self._user))

    def _write(self, n: int) -> None:
        if n <= 0 or self.error is not None:
            self._user = self._user[max(0, n):]
            return
        out = np.zeros((n, 2), np.float32)
        user = self._user[:n]
        out[:len(user), 0] = user
        a, b = self.written, self.written + n
        for p in self.sink.placed:
            i = int(round(p.start * self.rate))
            lo, hi = max(a, i), min(b, i + len(p.samples))
            if lo < hi:
                out[lo - a:hi - a, 1] += p.samples[lo - i:hi - i]
        try:
            self._file.write(np.clip(out, -1.0, 1.0))
        except Exception as err:  # soundfile's own error types (a full disk)
            self.error = f"{self.path}: cannot write ({err})"
            self.report(f"{self.error}; the session goes on without it")
        self.written = b
        self._user = self._user[n:]

    def close(self) -> None:
        """Write the rest: the reply may play on after the input's end."""
        self._user = np.concatenate([self._user, self._resample.resample_chunk(
            np.zeros(0, np.float32), last=True)])
        end = max([len(self._user) + self.written] +
                  [int(round(p.start * self.rate)) + len(p.samples) for p in self.sink.placed])
        self._write(end - self.written)
        try:
            self._file.close()
        except Exception as err:  # noqa: BLE001 - the last flush may hit a full disk too
            self.error = self.error or f"{self.path}: cannot write ({err})"


async def run_file(config: CascadeConfig, input_path: Path, out_dir: Optional[Path],
                   fast: bool = False, console: Optional[Console] = None) -> Session:
    """Replay ``input_path``, streamed block by block: an hour of audio takes no more
    memory than a minute."""
    import soundfile as sf

    console = console or Console()
    blocks = iter_wav_blocks(input_path, PIPELINE_RATE)
    first = next(blocks)  # what is wrong with the file is said before any model loads
    seconds = sf.info(str(input_path)).duration
    session = Session(config, lambda stages: FileSink(stages.tts.sample_rate, keep_s=60.0),
                      out_dir, console)
    writer = (ConversationWriter(out_dir / "conversation.wav", session.sink, console.error)
              if out_dir is not None else None)
    failed = True
    try:
        async with session:
            clock = Clock(fast=fast)
            vad = session.stages.vad
            # long enough for the VAD to close the last utterance (adaptive endpointing
            # closes it at pipeline.max_silence_ms, not vad.min_silence_ms)
            tail = (vad.closes_after_ms + vad.config.speech_pad_ms) / 1000 + 0.5
            console.info(f"replaying {input_path} ({seconds:.1f} s"
                         f"{', fast' if fast else ', real time'})")
            await session.run(stream_frames(itertools.chain([first], blocks), clock,
                                            lambda: session.busy, tail,
                                            writer.add if writer else lambda f: None), clock)
        failed = False
    finally:
        if writer is not None:
            writer.close()
            if writer.error is not None and not failed:
                raise OutputError(writer.error)
    return session
