"""Models shared by many sessions (the server).

The heavy models are loaded once: one Whisper, one LLM, one voice. Each session
gets its own VAD (its state is the stream's) and its own end-of-turn state, and
sees the shared stages through thin proxies whose start, warm-up and close do
nothing (the pool loads and closes the models once):

- ASR and TTS: each call is one job on the stage's own thread, so calls from
  different sessions queue there and never interleave inside a model;
- LLM: llama.cpp keeps one KV cache, so one session at a time may use it. A reply
  holds the model while it is being written, not while it plays: the tokens are
  drawn into a queue as fast as the model goes, and the next session's prompt
  runs as soon as the reply is written (or cancelled).
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, Iterator, Optional, TypeVar

from . import registry
from .config import CascadeConfig
from .events import LLMRequest, TextDelta
from .reply import run_ahead
from .stages import Stages, build_stages

T = TypeVar("T")


class Shared:
    """A loaded stage seen by one session: everything but its life cycle is the stage's."""

    load_s = 0.0

    def __init__(self, stage: Any):
        self._stage = stage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    async def start(self) -> None:
        pass

    async def warmup(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class _LockedWorker:
    """The LLM's worker thread, taken only while the session holds the model."""

    def __init__(self, worker: Any, lock: asyncio.Lock):
        self._worker, self._lock = worker, lock
        self.name = worker.name

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._lock:
            return await self._worker.call(fn, *args, **kwargs)

    async def iterate(self, make_iter: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        async with self._lock:
            async for item in self._worker.iterate(make_iter):
                yield item


class SharedLLM(Shared):
    """The LLM for one session: every call waits for the model (one session at a time).
    ``config`` is the session's own (its ``instructions`` become its system prompt)."""

    def __init__(self, stage: Any, lock: asyncio.Lock):
        super().__init__(stage)
        self._lock = lock
        self.worker = _LockedWorker(stage.worker, lock)
        self.config = stage.config

    async def _locked(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        async with self._lock:
            async with aclosing(self._stage.generate(request)) as deltas:
                async for delta in deltas:
                    yield delta

    def generate(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        # drawn in a task of its own, unbounded: the model is released once the reply is
        # written, however slowly it is played; closing the stream cancels the draw
        return run_ahead(self._locked(request), 0, f"llm-shared-{request.turn_id}")

    def set_system_prompt(self, text: str) -> None:
        self.config = self.config.model_copy(update={"system_prompt": text})


class ModelPool:
    """The models of one config, loaded once; ``stages()`` gives a session its view."""

    def __init__(self, config: CascadeConfig):
        self.config = config
        self.models: Stages = build_stages(config)
        self._llm_lock: Optional[asyncio.Lock] = None

    async def start(self) -> None:
        self._llm_lock = asyncio.Lock()
        heavy = (self.models.asr, self.models.llm, self.models.tts)
        try:
            await asyncio.gather(*(s.start() for s in heavy))
            if self.config.pipeline.warmup:
                for s in heavy:
                    await s.warmup()
        except BaseException:
            await self.aclose()
            raise

    def stages(self) -> Stages:
        """A new session's stages: its own VAD, the shared ASR, LLM and TTS."""
        vad_cls = next(b for b in registry.backends("vad").values()
                       if type(self.config.vad) is b.config_cls).factory
        return Stages(vad=vad_cls(self.config.vad), asr=Shared(self.models.asr),
                      llm=SharedLLM(self.models.llm, self._llm_lock), tts=Shared(self.models.tts))

    async def aclose(self) -> None:
        for s in (self.models.asr, self.models.llm, self.models.tts):
            await s.aclose()
