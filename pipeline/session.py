"""One session's bootstrap, shared by live mode, file mode, the report and the
tests: build the stages, the sink, the log and the orchestrator; load and warm
up; run over a stream of frames on a session clock; close everything."""
from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Optional

from . import clock as clock_mod
from .clock import Clock
from .config import CascadeConfig
from .console import Console
from .endpoint import EndOfTurn
from .events import AudioFrame
from .observers import Observer
from .orchestrator import Orchestrator
from .session_log import SessionLog
from .sinks import AudioSink
from .stages import Stages, build_stages


class Session:
    def __init__(self, config: CascadeConfig, make_sink: Callable[[Stages], AudioSink],
                 out_dir: Optional[Path] = None, console: Optional[Console] = None,
                 stages: Optional[Stages] = None, observers: tuple[Observer, ...] = (),
                 end_of_turn: Optional[EndOfTurn] = None):
        self.config = config
        self.stages = stages if stages is not None else build_stages(config)
        self.sink = make_sink(self.stages)
        self.log = SessionLog(out_dir)
        self.orchestrator = Orchestrator(config, self.stages, self.sink, self.log,
                                         console or Console(), observers, end_of_turn)

    async def __aenter__(self) -> "Session":
        try:
            await self.orchestrator.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the models and the output; raises OutputError (with the lines) if
        records could not be written."""
        try:
            await self.orchestrator.aclose()
        finally:
            try:
                await self.sink.aclose()
            finally:
                self.log.close()

    async def run(self, frames: AsyncIterator[AudioFrame], clock: Clock) -> None:
        """The conversation, timed on ``clock`` (its time 0 is the start of the input)."""
        clock_mod.use(clock)
        await self.orchestrator.run(frames)

    @property
    def busy(self) -> bool:
        return self.orchestrator.busy
