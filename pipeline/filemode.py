"""File mode: replay a WAV through the pipeline as if it came from a microphone,
at real-time pace or, with ``fast``, skipping the waits while nothing is being
computed. Writes conversation.wav (user left, assistant right, one time line),
transcript.jsonl and timeline.jsonl."""
from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Optional

import numpy as np

from .audio import FRAME_SAMPLES, PIPELINE_RATE, frames, read_wav
from .clock import Clock
from .config import CascadeConfig
from .console import Console
from .errors import OutputError
from .events import AudioFrame
from .session import Session
from .sinks import FileSink


async def file_frames(audio: np.ndarray, clock: Clock, busy: Callable[[], bool],
                      tail_s: float = 1.0) -> AsyncIterator[AudioFrame]:
    """Frames of ``audio`` delivered when their last sample would have arrived, then
    ``tail_s`` of silence so that the last utterance can end."""
    padded = np.concatenate([audio, np.zeros(int(tail_s * PIPELINE_RATE), np.float32)])
    for end, frame in frames(padded, FRAME_SAMPLES):
        t = end / PIPELINE_RATE
        await clock.sleep_until(t, skippable=not busy())
        yield AudioFrame(-1, t, samples=frame, sample_rate=PIPELINE_RATE)


async def run_file(config: CascadeConfig, input_path: Path, out_dir: Optional[Path],
                   fast: bool = False, console: Optional[Console] = None) -> Session:
    console = console or Console()
    audio = read_wav(input_path, PIPELINE_RATE)
    session = Session(config, lambda stages: FileSink(rate=stages.tts.sample_rate), out_dir,
                      console)
    failed = True
    try:
        async with session:
            clock = Clock(fast=fast)
            vad = session.stages.vad.config
            tail = (vad.min_silence_ms + vad.speech_pad_ms) / 1000 + 0.5
            console.info(f"replaying {input_path} ({len(audio) / PIPELINE_RATE:.1f} s"
                         f"{', fast' if fast else ', real time'})")
            await session.run(file_frames(audio, clock, lambda: session.busy, tail_s=tail), clock)
        failed = False
    finally:
        if out_dir is not None:
            _write_conversation(session, out_dir / "conversation.wav", audio, console, failed)
    return session


def _write_conversation(session: Session, path: Path, audio: np.ndarray, console: Console,
                        failed: bool) -> None:
    """Write what was heard; if the session is already failing, a failure here is
    only reported, so that the first error (and the records it carries) wins."""
    try:
        session.sink.write(path, audio, PIPELINE_RATE)
    except OSError as err:
        message = f"{path}: cannot write ({err.strerror or err})"
        if failed:
            console.error(message)
        else:
            raise OutputError(message) from None
