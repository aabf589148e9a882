"""The one orchestrator: owns the order of things, cancellation and timing.

Audio frames go through the VAD. At each endpoint (SpeechEnded) a turn task runs
ASR -> prompt truncation -> LLM tokens -> sentence splitter -> TTS -> sink, as a
chain of async iterators: each stage pulls from the previous one, so the first
sentence is synthesized while the LLM is still writing the rest. One turn at a
time: user speech during a turn or its playback (barge-in) cancels the turn,
stops the sink, and the history keeps only what was played, marked interrupted.
Stages never see each other or the clock's owner; phases are stamped here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Optional, TypeVar

from . import clock, registry
from .config import CascadeConfig
from .console import Console
from .errors import CascadeError, StageError
from .events import (AudioFrame, ChatMessage, LLMRequest, Sentence, SpeechEnded, SpeechPaused,
                     SpeechResumed, SpeechStarted, TextDelta, stream_of)
from .session_log import SessionLog
from .sinks import AudioSink, PlayedText
from .splitter import SentenceSplitter, split_stream
from .timeline import TurnTimeline
from .languages import system_prompt
from .truncation import HistoryWindow

T = TypeVar("T")


@dataclass
class Stages:
    vad: Any
    asr: Any
    llm: Any
    tts: Any

    def all(self) -> list[Any]:
        return [self.vad, self.asr, self.llm, self.tts]


def build_stages(config: CascadeConfig) -> Stages:
    """Construct (not load) each configured backend from the registry."""
    made = {}
    for kind in registry.KINDS:
        cfg = getattr(config, kind)
        backend = next(b for b in registry.backends(kind).values() if type(cfg) is b.config_cls)
        made[kind] = backend.factory(cfg)
    return Stages(**made)


@dataclass
class Turn:
    turn_id: int
    timeline: TurnTimeline
    user_text: str = ""
    reply: list[str] = field(default_factory=list)  # chunks handed to the sink
    status: str = "pending"  # answered | interrupted | no_speech | error
    error: Optional[str] = None
    played: Optional[PlayedText] = None
    task: Optional[asyncio.Task] = None
    ended: Optional[SpeechEnded] = None
    # Speculative turns start at a pause and wait at this gate before playing.
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    speculative: bool = False
    started_at: float = 0.0  # when its ASR got the audio
    shown: bool = False  # the user's text has been printed
    barge_in_stop_ms: Optional[float] = None


async def _guard(stage: str, events: AsyncIterator[T], on_first: Callable[[T], None]
                 ) -> AsyncIterator[T]:
    """Name the stage in any failure, and report the first item."""
    first = True
    try:
        async with aclosing(events) as it:
            async for item in it:
                if first:
                    on_first(item)
                    first = False
                yield item
    except (asyncio.CancelledError, StageError):
        raise
    except Exception as err:  # a backend failure becomes a StageError naming the stage
        raise StageError(stage, f"{type(err).__name__}: {err}") from err


async def _whole_reply(deltas: AsyncIterator[TextDelta]) -> AsyncIterator[Sentence]:
    """Naive hand-off: the whole LLM reply as one chunk."""
    parts, turn_id = [], None
    async for d in deltas:
        parts.append(d.text)
        turn_id = d.turn_id
    text = "".join(parts).strip()
    if text:
        yield Sentence(turn_id, clock.now(), text=text, index=0)


class Orchestrator:
    def __init__(self, config: CascadeConfig, stages: Stages, sink: AudioSink,
                 log: SessionLog, console: Console):
        self.config = config
        self.stages = stages
        self.sink = sink
        self.log = log
        self.console = console
        self.history: list[ChatMessage] = []
        pc = config.pipeline
        self.splitter = SentenceSplitter(pc.first_clause, pc.min_clause_words,
                                         pc.max_first_words if pc.first_clause else None)
        self._turn: Optional[Turn] = None  # newest committed turn not yet finalized
        self._spec: Optional[Turn] = None  # speculative turn waiting for its endpoint
        self.window = HistoryWindow(config.pipeline.history_token_budget
                                    if config.pipeline.truncate_prompt else None)
        self._prefill: Optional[asyncio.Task] = None
        self.ready_s: Optional[float] = None
        self.stats = {"speculative_started": 0, "speculative_committed": 0,
                      "speculative_discarded": 0, "speculative_wasted_s": 0.0}

    # ---- life cycle -------------------------------------------------------------
    async def start(self) -> None:
        t0 = time.perf_counter()
        self.console.info("loading models: " + ", ".join(
            f"{s.kind}={getattr(self.config, s.kind).__class__.__name__}" for s in self.stages.all()))
        await asyncio.gather(*(s.start() for s in self.stages.all()))
        if self.config.pipeline.warmup:
            for s in self.stages.all():
                await s.warmup()
        self.ready_s = time.perf_counter() - t0
        loads = ", ".join(f"{s.kind} {s.load_s:.2f}s" for s in self.stages.all())
        self.console.info(f"ready in {self.ready_s:.2f} s (load: {loads}; then warm-up)")

    async def aclose(self) -> None:
        if self._prefill is not None and not self._prefill.done():
            self._prefill.cancel()
            await asyncio.gather(self._prefill, return_exceptions=True)
        for s in self.stages.all():
            await s.aclose()

    @property
    def busy(self) -> bool:
        """A turn is being computed (not just played)."""
        return any(t is not None and t.task is not None and not t.task.done()
                   for t in (self._turn, self._spec))

    # ---- main loop --------------------------------------------------------------
    async def _mark_playback(self, frames: AsyncIterator[AudioFrame]) -> AsyncIterator[AudioFrame]:
        """Tell the VAD which frames were captured while the reply was playing."""
        async for frame in frames:
            if not frame.assistant_speaking and self.sink.busy_until() > frame.t:
                frame = dataclasses.replace(frame, assistant_speaking=True)
            yield frame

    async def run(self, frames: AsyncIterator[AudioFrame]) -> None:
        self.console.status("listening")
        try:
            async for ev in self.stages.vad.process(self._mark_playback(frames)):
                if isinstance(ev, SpeechStarted):
                    self.console.status("hearing you")
                    await self._settle_previous(detected_at=ev.t)
                elif isinstance(ev, SpeechPaused):
                    if self.config.pipeline.speculative:
                        self._start_speculative(ev)
                elif isinstance(ev, SpeechResumed):
                    await self._discard_speculative()
                elif isinstance(ev, SpeechEnded):
                    if ev.forced:
                        self.console.info(f"  (turn {ev.turn_id} cut at vad.max_utterance_s="
                                          f"{self.stages.vad.config.max_utterance_s:g})")
                    self._commit_turn(ev)
            if self._turn is not None and self._turn.task is not None:
                await asyncio.gather(self._turn.task, return_exceptions=True)
        finally:
            await self._discard_speculative()
            await self._settle_previous(final=True)

    def _launch(self, ended: SpeechEnded, speculative: bool) -> Turn:
        turn = Turn(ended.turn_id, TurnTimeline(ended.turn_id), ended=ended,
                    speculative=speculative, started_at=clock.now())
        turn.task = asyncio.create_task(self._run_turn(turn, ended), name=f"turn-{turn.turn_id}")
        return turn

    def _start_speculative(self, paused: SpeechPaused) -> None:
        """Silence began: start the turn's work now, on the audio so far."""
        self._spec = self._launch(SpeechEnded(paused.turn_id, paused.t, paused.speech_end,
                                              paused.audio), speculative=True)
        self.stats["speculative_started"] += 1

    async def _discard_speculative(self) -> None:
        """Speech resumed (or the session ends): the speculative work is void."""
        spec, self._spec = self._spec, None
        if spec is not None and spec.task is not None:
            spec.task.cancel()
            await asyncio.gather(spec.task, return_exceptions=True)
            self.stats["speculative_discarded"] += 1
            self.stats["speculative_wasted_s"] += clock.now() - spec.started_at

    def _commit_turn(self, ended: SpeechEnded) -> None:
        """The endpoint is confirmed: open the speculative turn's gate, or start now."""
        spec, self._spec = self._spec, None
        if spec is not None and spec.turn_id == ended.turn_id and not ended.forced:
            turn = spec
            self.stats["speculative_committed"] += 1
        else:
            if spec is not None and spec.task is not None:
                spec.task.cancel()
            turn = self._launch(ended, speculative=False)
        turn.ended = ended
        turn.timeline.mark("user_speech_end", ended.speech_end)
        turn.timeline.mark("endpoint", ended.t)
        turn.gate.set()
        self._turn = turn
        self.console.status("thinking")

    async def _settle_previous(self, final: bool = False,
                               detected_at: Optional[float] = None) -> None:
        """Before new user speech is handled: interrupt the previous turn if it is
        still running or playing (barge-in), then record it."""
        turn = self._turn
        if turn is None:
            return
        self._turn = None
        running = turn.task is not None and not turn.task.done()
        if running:
            turn.task.cancel()  # takes effect at the task's next await, after the stop below
        # At the end of the input a finished reply may still play out; otherwise
        # audio still playing when the user speaks is a barge-in: silence it first.
        if running or (not final and self.sink.busy_until() > clock.now() + 1e-3):
            turn.played = await self.sink.stop(turn.turn_id)
            if not turn.played.complete:
                turn.status = "interrupted"
                if detected_at is not None and turn.played.stopped_at is not None:
                    # from the detected speech start to the last reply sample output
                    turn.barge_in_stop_ms = (turn.played.stopped_at - detected_at) * 1000
        if running:
            await asyncio.gather(turn.task, return_exceptions=True)
            if not turn.user_text and turn.ended is not None and not final:
                # Cut before its transcript was ready: keep what the user said anyway.
                turn.user_text = await self._transcribe(turn.ended)
        self._finalize(turn, prefill_next=not final)

    async def _transcribe(self, ended: SpeechEnded) -> str:
        async with aclosing(self.stages.asr.process(stream_of(ended))) as it:
            return (await anext(it)).text

    # ---- one turn -----------------------------------------------------------------
    async def _run_turn(self, turn: Turn, ended: SpeechEnded) -> None:
        st, pcfg, tl = self.stages, self.config.pipeline, turn.timeline
        try:
            async with asyncio.timeout(pcfg.turn_timeout_s):
                async with aclosing(_guard("asr", st.asr.process(stream_of(ended)),
                                           lambda e: tl.mark("asr_final", e.t))) as asr:
                    transcript = await anext(asr)
                turn.user_text = transcript.text
                if not transcript.text:
                    turn.status = "no_speech"
                    return
                messages = await st.llm.worker.call(
                    self.window.build, system_prompt(st.llm.config.system_prompt,
                                                     transcript.language),
                    self.history, transcript.text, st.llm.count_tokens)
                request = LLMRequest(turn.turn_id, clock.now(), messages)
                deltas = _guard("llm", st.llm.process(stream_of(request)),
                                lambda e: tl.mark("llm_first_token", e.t))
                chunks = split_stream(deltas, self.splitter) if pcfg.stream_tts else _whole_reply(deltas)
                sentences = _guard("splitter", chunks, lambda e: tl.mark("first_sentence", e.t))
                audio = _guard("tts", st.tts.process(sentences),
                               lambda e: tl.mark("tts_first_audio", e.t))
                async with aclosing(audio) as it:
                    async for chunk in it:
                        if not turn.gate.is_set():  # speculative: hold until the endpoint
                            await turn.gate.wait()
                        if not turn.shown:
                            self._show_user(turn)
                        start = await self.sink.play(chunk)
                        first = not turn.reply
                        turn.reply.append(chunk.text)
                        if first:
                            tl.mark("playback_start", start)
                            self.console.status("speaking")
                        self.console.assistant(turn.turn_id, chunk.text,
                                               tl.v2v_ms if first else None)
                turn.status = "answered" if turn.reply else "error"
                if not turn.reply:
                    turn.error = "llm: empty reply"
                else:  # the reply is all generated (it may still be playing)
                    self._prefill_next([*self.history, ChatMessage("user", turn.user_text),
                                        ChatMessage("assistant", " ".join(turn.reply).strip())])
        except TimeoutError:
            turn.status = "error"
            turn.error = f"turn exceeded pipeline.turn_timeout_s={pcfg.turn_timeout_s:g}"
        except CascadeError as err:
            turn.status = "error"
            turn.error = str(err)
        self.console.status("listening")

    def _prefill_next(self, history: list[ChatMessage]) -> None:
        """Off the critical path (while the reply plays, or the user thinks): bring
        the LLM's KV cache to the next prompt's prefix, so that the next turn only
        prefills its new message. Called when a reply is complete, and again when
        the turn is recorded (a no-op unless a barge-in changed the history)."""
        llm = self.stages.llm
        if not hasattr(llm, "prefill"):
            return

        def work() -> int:
            prefix = self.window.prefix(llm.config.system_prompt, history, llm.count_tokens)
            return llm.prefill(prefix)

        def report(fut: asyncio.Future) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                self.console.error(f"llm: prefill of the next prompt failed: {fut.exception()}")
        self._prefill = asyncio.ensure_future(llm.worker.call(work))
        self._prefill.add_done_callback(report)

    def _show_user(self, turn: Turn) -> None:
        turn.shown = True
        self.console.user(turn.turn_id, turn.user_text)

    def _finalize(self, turn: Turn, prefill_next: bool = True) -> None:
        if turn.user_text and not turn.shown:
            self._show_user(turn)
        if turn.played is not None:
            reply = turn.played.text
        else:
            reply = " ".join(turn.reply).strip()
        interrupted = turn.status == "interrupted"
        if turn.status == "pending":  # cancelled before it had anything to say
            turn.status = "interrupted" if turn.user_text else "no_speech"
        if turn.user_text:
            self.history.append(ChatMessage("user", turn.user_text))
            if reply:
                self.history.append(ChatMessage("assistant", reply, interrupted=interrupted))
        record = turn.timeline.record(status=turn.status, speculative=turn.speculative,
                                      asr_start=round(turn.started_at, 4))
        if turn.barge_in_stop_ms is not None:
            record["barge_in_stop_ms"] = round(turn.barge_in_stop_ms, 1)
        transcript = {"turn_id": turn.turn_id, "user": turn.user_text, "assistant": reply,
                      "status": turn.status, "interrupted": interrupted}
        if turn.error:
            transcript["error"] = record["error"] = turn.error
        self.log.add(transcript, record)
        if prefill_next:  # not when the session is ending
            self._prefill_next(list(self.history))
        if turn.user_text or turn.error:
            self.console.turn_done(turn.turn_id, turn.status, turn.error)
