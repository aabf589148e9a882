"""Models shared by many sessions (the server).

The heavy models are loaded once: one Whisper, one LLM, one voice. Each session
gets its own VAD (its state is the stream's) and its own end-of-turn state, and
sees the shared stages through thin proxies whose start, warm-up and close do
nothing (the pool loads and closes the models once):

- ASR and TTS: each call is one job on the stage's own thread, so calls from
  different sessions queue there and never interleave inside a model;
- LLM: llama.cpp keeps one KV cache, so one session at a time may use it (its
  "seat"). A reply holds the model while it is being written, not while it plays:
  the tokens are drawn into a queue as fast as the model goes, and the next
  session's prompt runs as soon as the reply is written (or cancelled). When the
  model changes hands, the leaving session's KV cache is saved and the arriving
  one's restored (a copy of a few MB), so that each session prefills only its new
  message, as it would alone. Prompts are built (templated, counted) on a thread
  of their own, never waiting for another session's reply.
"""
from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable, Optional, TypeVar

from . import registry
from .config import CascadeConfig
from .events import LLMRequest, TextDelta
from .reply import run_ahead
from .stages import Stages, build_stages, start_stages
from .worker import Worker

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


class LLMSeat:
    """Who holds the shared LLM: one lock, and the session whose KV cache it holds."""

    def __init__(self, stage: Any):
        self.stage = stage
        self.lock = asyncio.Lock()
        self.owner: Optional["SharedLLM"] = None
        self.switches = 0
        # prompts are built (templated and counted) off the model's thread, so that one
        # session's prompt never waits for another's reply to be written
        self.tokenizer = Worker("llm-tokenizer")

    async def take(self, session: "SharedLLM") -> None:
        """With the lock held: give ``session`` the model, with its own KV cache back (a
        backend that can save it, llama.cpp; others need nothing)."""
        owner = self.owner
        if owner is session:
            return
        self.owner = session
        if not hasattr(self.stage, "save_kv"):
            return

        def switch() -> None:
            if owner is not None:
                owner.saved_kv = self.stage.save_kv()
            self.stage.load_kv(session.saved_kv)
            session.saved_kv = None
        self.switches += 1
        await self.stage.worker.call(switch)

    def leave(self, session: "SharedLLM") -> None:
        session.saved_kv = None
        if self.owner is session:
            self.owner = None


class _SeatedWorker:
    """The LLM's worker thread, used only with the model taken."""

    def __init__(self, llm: "SharedLLM"):
        self._llm = llm
        self.name = llm.seat.stage.worker.name

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._llm.seat.lock:
            await self._llm.seat.take(self._llm)
            return await self._llm.seat.stage.worker.call(fn, *args, **kwargs)


class SharedLLM(Shared):
    """The LLM for one session: every call that uses the model waits for it (one
    session at a time) and finds this session's KV cache there. ``config`` is the
    session's own (its ``instructions`` become its system prompt)."""

    def __init__(self, seat: LLMSeat):
        super().__init__(seat.stage)
        self.seat = seat
        self.worker = _SeatedWorker(self)
        self.config = seat.stage.config
        self.saved_kv: Any = None

    async def _seated(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        async with self.seat.lock:
            await self.seat.take(self)
            async with aclosing(self._stage.generate(request)) as deltas:
                async for delta in deltas:
                    yield delta

    def generate(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        # drawn in a task of its own, unbounded: the model is released once the reply is
        # written, however slowly it is played; closing the stream cancels the draw
        return run_ahead(self._seated(request), 0, f"llm-shared-{request.turn_id}")

    async def run_tokenizer(self, fn: Callable[..., T], *args: Any) -> T:
        """Prompt building (the chat template, token counts): no model state is touched."""
        return await self.seat.tokenizer.call(fn, *args)

    def set_system_prompt(self, text: str) -> None:
        self.config = self.config.model_copy(update={"system_prompt": text})

    async def aclose(self) -> None:
        self.seat.leave(self)


class ModelPool:
    """The models of one config, loaded once; ``stages()`` gives a session its view."""

    def __init__(self, config: CascadeConfig):
        self.config = config
        self.models: Stages = build_stages(config)
        self.seat: Optional[LLMSeat] = None

    async def start(self) -> None:
        self.seat = LLMSeat(self.models.llm)
        heavy = (self.models.asr, self.models.llm, self.models.tts)
        try:
            await start_stages(heavy)
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
                      llm=SharedLLM(self.seat), tts=Shared(self.models.tts))

    async def aclose(self) -> None:
        for s in (self.models.asr, self.models.llm, self.models.tts):
            await s.aclose()
        if self.seat is not None:
            self.seat.tokenizer.shutdown()
