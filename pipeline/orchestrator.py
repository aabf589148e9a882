"""The one orchestrator: owns the order of things, cancellation and timing.

Audio frames go through the VAD, whose events drive one turn at a time:
- ``SpeechPaused``: a candidate end of turn; with ``pipeline.speculative`` a turn
  starts on the audio so far, and waits at its gate before playing. With
  ``pipeline.endpointing: adaptive`` it also asks :mod:`pipeline.endpoint` how much
  silence ends this utterance, and commits itself (an early endpoint) once that
  silence has passed. A provisional pause (``vad.early_pause_drop``: the speaker's
  level fell while noise holds the VAD above its threshold) starts the turn's work
  too, but its silence is counted only from the pause that confirms it;
- ``SpeechResumed``: the candidate was not the end; its work is cancelled. After an
  early endpoint the turn is reopened: its reply is cut the barge-in way, kept in
  the log but not in the history, and the utterance goes on, to be answered once;
- ``SpeechEnded``: the VAD closes the utterance; the turn's gate opens (or the turn
  starts now), unless an early endpoint already committed it;
- ``SpeechStarted``: the user speaks; a turn still working or playing is cut
  (barge-in): the sink drops what was not heard and the turn is recorded with
  what was. With ``pipeline.resume_false_interruptions`` a reply that had started
  playing is only held: if the new utterance has no words, or only a backchannel
  ("mm-hmm"), the reply resumes from the chunk it was cut in; with words, it is
  recorded as interrupted before the new turn's prompt is built. With
  ``pipeline.ignore_own_words``, words that are the reply's own (what the speaker was
  playing then: its echo got past the echo canceller) do not take the turn either.

A turn (:mod:`pipeline.turn`) runs ASR, then the reply chain (:mod:`pipeline.reply`)
into the sink, and is recorded once its reply has played out, or when it is cut.
The conversation (:mod:`pipeline.conversation`) keeps the history; observers
(:mod:`pipeline.observers`) show and log what happens. Stages never see each
other; phases are stamped here.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from contextlib import aclosing
from typing import AsyncIterator, Optional

from . import clock, edges
from .audio import PIPELINE_RATE
from .config import CascadeConfig
from .console import Console
from .conversation import Conversation
from .endpoint import EndOfTurn
from .errors import CascadeError
from .events import (AudioFrame, ChatMessage, LLMRequest, SpeechEnded, SpeechPaused,
                     SpeechProgress, SpeechResumed, SpeechStarted, Transcript)
from .observers import ConsoleObserver, LogObserver, Observer, Observers
from .reply import ReplyChain, naming
from .session_log import SessionLog
from .sinks import AudioSink
from .stall import WordStall
from .stages import Stages, start_stages
from .turn import NOT_TAKEN, Turn

OWN_WORDS_SLACK_S = 1.0


class Orchestrator:
    def __init__(self, config: CascadeConfig, stages: Stages, sink: AudioSink,
                 log: SessionLog, console: Console, observers: tuple[Observer, ...] = (),
                 end_of_turn: Optional[EndOfTurn] = None):
        self.config = config
        self.stages = stages
        self.sink = sink
        self.log = log
        shown = ConsoleObserver(console)
        self.observers = Observers(shown, LogObserver(log, shown.error), *observers)
        pc = config.pipeline
        self.conversation = Conversation(stages.llm, pc.history_token_budget
                                         if pc.truncate_prompt else None, self.observers.error,
                                         pc.history_max_turns)
        self.reply = ReplyChain(stages.llm, stages.tts, pc)
        self.end_of_turn: Optional[EndOfTurn] = None
        if pc.endpointing == "adaptive" and pc.speculative:
            self.end_of_turn = end_of_turn or EndOfTurn(
                pc, stages.llm, stages.vad.config.min_silence_ms / 1000)
            stages.vad.end_silence_ms = pc.max_silence_ms  # the VAD closes the utterance there
        self._listen_ahead = (pc.listen_ahead and hasattr(stages.llm, "prefill_user")
                              and getattr(stages.asr.config, "partials", False))
        if self._listen_ahead:
            stages.vad.progress_ms = pc.listen_ahead_ms
        self._stall = (WordStall(pc.words_stall_s, pc.listen_ahead_ms / 1000)
                       if self._listen_ahead and pc.words_stall_s is not None
                       and hasattr(stages.vad, "end_speech") else None)
        self._ahead: Optional[asyncio.Future] = None  # the listen-ahead job in flight
        self._ahead_stop = threading.Event()  # set at a pause: that job stops early
        self._turn: Optional[Turn] = None  # the newest committed turn, not yet recorded
        self._spec: Optional[Turn] = None  # a speculative turn waiting for its endpoint
        self._held: Optional[Turn] = None  # a reply stopped by speech that may be no words
        # an utterance taken as no words (or echo, a backchannel) at its early endpoint,
        # before the VAD closed it: that close is not a turn of its own
        self._resolved_early: Optional[int] = None
        self._superseded: list[asyncio.Future] = []  # turns being ended by ``_open``
        self._rehearing: Optional[asyncio.Future] = None  # see _hear_again
        self._last_reply: Optional[Turn] = None  # the newest recorded turn that spoke
        self._backchannels = {_plain(b) for b in pc.backchannels}
        self.ready_s: Optional[float] = None
        self._stop_requested = False
        self.stats = {"speculative_started": 0, "speculative_committed": 0,
                      "speculative_discarded": 0, "speculative_wasted_s": 0.0,
                      "early_endpoints": 0, "reopened": 0, "resumed": 0,
                      "listen_ahead_prefills": 0, "listen_ahead_tokens": 0,
                      "listen_ahead_abandoned": 0, "superseded": 0,
                      "deferred_replies": 0, "deferred_discarded": 0,
                      "speculative_reply_wasted_s": 0.0, "speculative_provisional": 0,
                      "provisional_heard_again": 0, "words_stalled": 0,
                      # the reply's first chunk: from the audio cache, or synthesized
                      "first_audio_cached": 0, "first_audio_synthesized": 0}
        # verdict -> first audio of recent turns: how early a deferred reply must start
        self._reply_compute_s: collections.deque[float] = collections.deque(maxlen=10)

    @property
    def history(self) -> list[ChatMessage]:
        return self.conversation.history

    # ---- life cycle -------------------------------------------------------------
    async def start(self) -> None:
        t0 = time.perf_counter()
        backends = self.config.to_dict()
        self.observers.notice("loading models: " + ", ".join(
            f"{s.kind}={backends[s.kind]['backend']}" for s in self.stages.all()))
        await start_stages(self.stages.all())
        if self.end_of_turn is not None:
            await self.end_of_turn.start()
            self.observers.notice("end of turn: adaptive (" + ", ".join(
                self.end_of_turn.signals or ["no signal: fixed silence"]) + ")")
        if self.config.pipeline.warmup:
            for s in self.stages.all():
                await s.warmup()
            # the prompt's head (system prompt and primer) into the LLM's KV cache, so
            # that the first turn prefills only its own message, like every later one
            self.conversation.prefill()
            await self.conversation.prefilled()
        self.ready_s = time.perf_counter() - t0
        loads = ", ".join(f"{s.kind} {s.load_s:.2f}s" for s in self.stages.all())
        self.observers.notice(f"ready in {self.ready_s:.2f} s (load: {loads}; then warm-up)")

    async def aclose(self) -> None:
        if self._ahead is not None and not self._ahead.done():
            self._ahead.cancel()
            await asyncio.wait([self._ahead])
        await self.conversation.aclose()
        if self.end_of_turn is not None:
            self.end_of_turn.aclose()
        for s in self.stages.all():
            await s.aclose()

    @property
    def busy(self) -> bool:
        """A turn is being computed (not just played)."""
        return any(t is not None and t.computing for t in (self._turn, self._spec, self._held))

    def request_stop(self) -> None:
        """Stop the reply now, the barge-in way, without new speech (a client's
        ``response.cancel``). Done at the next input frame, in order with the VAD's events."""
        self._stop_requested = True

    # ---- main loop --------------------------------------------------------------
    async def run(self, frames: AsyncIterator[AudioFrame]) -> None:
        self.observers.status("listening")
        ended = False
        try:
            async for ev in self.stages.vad.process(self._watch(frames)):
                if isinstance(ev, SpeechStarted):
                    self.observers.status("hearing you")
                    self.observers.speech_started(ev.speech_start)
                    await self._barge_in(ev)
                elif isinstance(ev, SpeechProgress):
                    self._listen(ev)
                elif isinstance(ev, SpeechPaused):
                    if self.config.pipeline.speculative and not await self._confirm(ev):
                        self._speculate(ev)
                elif isinstance(ev, SpeechResumed):
                    self.observers.speech_resumed(ev.t)
                    if self._stall is not None:  # its times now span a pause
                        self._stall.forget(since=ev.t)
                    await self._discard_speculative()
                    if self._resolved_early == ev.turn_id:
                        # the user goes on after words taken as none: new speech over
                        # the resumed reply, as at a speech start
                        self._resolved_early = None
                        await self._barge_in(ev)
                    else:
                        await self._reopen(ev)
                elif isinstance(ev, SpeechEnded):
                    await self._commit(ev)
            # the input is over: the last turn (or a reply it resumed) finishes
            while self._turn is not None and self._turn.computing:
                await asyncio.wait([self._turn.task])
            ended = True
        finally:
            if self._rehearing is not None:  # it may launch a turn: before the discard
                await asyncio.wait([self._rehearing])
            await self._discard_speculative()
            await self._drop_held()
            await self._close(stopped=not ended)

    async def _watch(self, frames: AsyncIterator[AudioFrame]) -> AsyncIterator[AudioFrame]:
        """Tell the VAD which frames were captured while the reply was playing, record
        a turn as soon as its reply has played out, and commit a speculative turn once
        the silence its end-of-turn verdict asked for has passed."""
        async for frame in frames:
            if self._stop_requested:
                self._stop_requested = False
                await self._drop_held()
                await self._end_turn(stop_playback=True)
            busy_until = self.sink.busy_until()
            if not frame.assistant_speaking and busy_until > frame.t:
                frame = dataclasses.replace(frame, assistant_speaking=True)
            turn = self._turn
            if (turn is not None and turn.closed and not turn.computing
                    and busy_until <= frame.t):
                self._turn = None
                self._record(turn)
            spec = self._spec
            if spec is not None and spec.reply_at is not None and frame.t >= spec.reply_at:
                spec.go.set()
            if spec is not None and spec.commit_at is not None and frame.t >= spec.commit_at:
                self._commit_early(spec)
            yield frame

    def _listen(self, progress: SpeechProgress) -> None:
        """The user is speaking: prefill the LLM with the words so far (one job at a
        time, none while a reply is being computed: that has the CPU)."""
        if (not self._listen_ahead or self.busy or not self.stages.asr.has_partials
                or (self._ahead is not None and not self._ahead.done())):
            return
        self._ahead = asyncio.ensure_future(self._prefill_partial(progress))

    def _still_speaking(self, turn_id: int) -> bool:
        return self._spec is None and not self.busy and self.stages.vad.turns == turn_id

    async def _prefill_partial(self, progress: SpeechProgress) -> None:
        """A partial transcript of the utterance so far, less its last word (it may be
        cut), prefilled after the history; skipped once the user paused (the turn's own
        prompt then has the LLM) or a reply is being computed."""
        llm, asr = self.stages.llm, self.stages.asr
        # a pause sets it: a partial decode then skips its decoder (its words would be
        # dropped), and the turn's own ASR gets the CPU sooner. A prefill runs on: its
        # tokens are the verdict's, if this pause ends the turn
        stop = self._ahead_stop = threading.Event()
        try:
            if not self._still_speaking(progress.turn_id):
                return
            partial = await asr.partial(progress.audio, stop.is_set)
            if partial is None:
                self.stats["listen_ahead_abandoned"] += 1
                return
            self._words_so_far(progress, partial)
            words = partial.split()[:-1]
            if not words or not self._still_speaking(progress.turn_id):
                return
            messages = await self.conversation.prompt(" ".join(words), self.conversation.language)
            if not self._still_speaking(progress.turn_id):
                return
            self.stats["listen_ahead_tokens"] += await llm.worker.call(llm.prefill_user, messages)
            self.stats["listen_ahead_prefills"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - an optimisation: the turn itself reports
            self.observers.notice(f"  (listen-ahead skipped: {type(err).__name__}: {err})")

    def _words_so_far(self, progress: SpeechProgress, partial: str) -> None:
        """A partial transcript's words: if they stopped growing while the VAD still
        hears speech (a noisy room), the VAD ends the utterance where they stopped."""
        if self._stall is None or not self._still_speaking(progress.turn_id):
            return
        end = self._stall.heard(progress.turn_id, progress.t, len(partial.split()))
        if end is not None:
            self.stages.vad.end_speech(progress.turn_id, end, progress.t)

    def _stop_listening_ahead(self) -> None:
        """The user paused: a partial decode still in its encoder skips its decoder."""
        self._ahead_stop.set()

    def _launch(self, ended: SpeechEnded, speculative: bool) -> Turn:
        turn = Turn(ended.turn_id, ended, speculative, started_at=clock.now())
        turn.launch(self._run_turn)
        return turn

    def _speculate(self, paused: SpeechPaused) -> None:
        """Silence began: start the turn's work now, on the audio so far."""
        self._stop_listening_ahead()
        self._spec = self._launch(SpeechEnded(paused.turn_id, paused.t, paused.speech_end,
                                              paused.audio), speculative=True)
        self._spec.soft = paused.provisional
        self.stats["speculative_started"] += 1
        if paused.provisional:
            self.stats["speculative_provisional"] += 1

    async def _confirm(self, paused: SpeechPaused) -> bool:
        """The absolute end of speech after a provisional pause (vad.early_pause_drop): the
        speculative turn goes on with its work, its silence counted from here. Its audio
        stops where the speaker's level fell, which may be inside the last word: only a
        "complete" verdict is kept; any other is heard again, on the audio up to here."""
        spec = self._spec
        if (paused.provisional or spec is None or not spec.provisional
                or spec.turn_id != paused.turn_id):
            return False
        spec.confirmed_by = paused
        if spec.verdict is not None and spec.verdict.reason != "complete":
            await self._hear_again(spec)
        elif spec.commit_after is not None:
            self._schedule_commit(spec, spec.commit_after)
        return True

    async def _hear_again(self, turn: Turn) -> None:
        """A provisional turn whose verdict was not "complete", its end of speech now
        confirmed: its work again, on the audio up to the confirmed end."""
        if self._spec is not turn or turn.confirmed_by is None:
            return
        await self._discard_speculative()
        current = self._turn
        if current is not None and current.turn_id == turn.turn_id:
            return  # the utterance was closed meanwhile (the input ended): it has its turn
        self.stats["provisional_heard_again"] += 1
        self._speculate(turn.confirmed_by)

    async def _discard_speculative(self) -> None:
        """Speech resumed (or the session ends): the speculative work is void."""
        spec, self._spec = self._spec, None
        if spec is not None:
            await spec.cancel()
            self.stats["speculative_discarded"] += 1
            if spec.reply_at is not None and not spec.go.is_set():
                self.stats["deferred_discarded"] += 1  # a reply never computed
            if spec.reply_started is not None:  # LLM and TTS work for nothing
                self.stats["speculative_reply_wasted_s"] += clock.now() - spec.reply_started
            self.stats["speculative_wasted_s"] += clock.now() - spec.started_at

    def _schedule_commit(self, turn: Turn, silence_s: float) -> None:
        """The end-of-turn verdict: ``turn`` commits itself once the silence after its
        speech reaches ``silence_s``, now if it already has; a provisional turn's silence
        is not counted until its end of speech is confirmed (:meth:`_confirm`)."""
        if self._spec is not turn:
            return
        if turn.provisional:
            turn.commit_after = silence_s
            return
        if turn.soft and turn.verdict is not None and turn.verdict.reason != "complete":
            # (called from the turn's own task, which this cancels: in a task of its own)
            self._rehearing = asyncio.ensure_future(self._hear_again(turn))
            return
        at = turn.silence_start + silence_s
        if clock.now() >= at:
            self._commit_early(turn)
        else:
            turn.commit_at = at  # checked on every frame

    def _commit_early(self, turn: Turn) -> None:
        """An early endpoint: the speculative turn plays, the utterance stays open."""
        self._spec = None
        self.stats["speculative_committed"] += 1
        self.stats["early_endpoints"] += 1
        turn.early = True
        self._open(turn, turn.ended)

    async def _reopen(self, resumed: SpeechResumed) -> None:
        """Speech resumed after an early endpoint: the user was not done (or coughed:
        a reply already playing is held until the utterance's words are known)."""
        turn = self._turn
        if turn is not None and turn.early and not turn.closed and turn.turn_id == resumed.turn_id:
            self.stats["reopened"] += 1
            if self._holdable(turn):
                await self._hold(turn, resumed.t)
            else:
                await self._end_turn(stop_playback=True, speech_started=resumed.t, reopened=True)

    async def _commit(self, ended: SpeechEnded) -> None:
        """The VAD closed the utterance: open the speculative turn's gate, or start now
        (or, after an early endpoint, only mark the turn closed)."""
        current = self._turn
        if current is not None and current.early and current.turn_id == ended.turn_id:
            current.closed = True
            return
        if self._resolved_early == ended.turn_id:
            self._resolved_early = None
            return
        if ended.forced:
            self.observers.notice(f"  (turn {ended.turn_id} cut at vad.max_utterance_s="
                                  f"{self.stages.vad.config.max_utterance_s:g})")
        if ended.stalled:
            self.stats["words_stalled"] += 1
            self.observers.notice(
                f"  (turn {ended.turn_id}: no new words for "
                f"{self.config.pipeline.words_stall_s:g} s while the VAD still heard speech "
                f"(noise?): ended at {ended.speech_end:.2f} s)")
        spec = self._spec
        if (spec is not None and spec.turn_id == ended.turn_id and not ended.forced
                and not ended.stalled
                and (not spec.soft or (spec.verdict is not None
                                       and spec.verdict.reason == "complete"))):
            self._spec = None
            turn = spec
            self.stats["speculative_committed"] += 1
        else:  # none, or one on a provisional pause's audio, which may stop inside a word
            await self._discard_speculative()
            self._stop_listening_ahead()
            turn = self._launch(ended, speculative=False)
        turn.closed = True
        self._open(turn, ended)

    def _open(self, turn: Turn, ended: SpeechEnded) -> None:
        """The turn is the endpoint's: it may play."""
        previous = self._turn
        if previous is not None and previous is not turn:
            # every path records the current turn (or holds it) before another opens; one
            # that did not would lose it without a record: it ends, interrupted, instead
            self._turn = None
            self.stats["superseded"] += 1
            self.observers.notice(f"  (turn {previous.turn_id} superseded by turn "
                                  f"{turn.turn_id}: recorded as interrupted)")
            self._superseded.append(asyncio.ensure_future(
                self._finish(previous, stop_playback=True)))
        turn.go.set()
        turn.ended = ended
        turn.timeline.mark("user_speech_end", ended.speech_end)
        turn.timeline.mark("endpoint", clock.now() if turn.early else ended.t)
        turn.gate.set()
        self._turn = turn
        self.observers.endpoint(turn)
        self.observers.status("thinking")

    async def _barge_in(self, started: SpeechStarted) -> None:
        """New user speech: cut the previous turn if it is still working or playing (or
        hold it, if its reply has started: the speech may be no words)."""
        turn = self._turn
        if turn is not None and turn.closed and self._holdable(turn):
            await self._hold(turn, started.t)
        else:
            await self._end_turn(stop_playback=True, speech_started=started.t)

    def _holdable(self, turn: Turn) -> bool:
        """A reply that has started playing, and is still playing or being written."""
        return (self.config.pipeline.resume_false_interruptions and self._held is None
                and bool(turn.queued)
                and (turn.computing or self.sink.busy_until() > clock.now() + 1e-3))

    async def _hold(self, turn: Turn, speech_t: float) -> None:
        """Silence the reply now and keep it, until the new speech's words are known."""
        if self._turn is turn:
            self._turn = None
        turn.gate.clear()  # its next chunk waits; nothing more reaches the sink
        turn.played = await self.sink.stop(turn.turn_id)
        if turn.played.stopped_at is not None and not turn.played.complete:
            turn.barge_in_stop_ms = (turn.played.stopped_at - speech_t) * 1000
        self._held = turn

    def _over_held(self, turn: Turn, text: str) -> Optional[str]:
        """With a reply held, what ``turn``'s utterance says over it: all its words, or,
        when the user went on with the utterance the held reply answers, those past what
        it answered ("" if none). None when no reply is held."""
        held = self._held
        if held is None:
            return None
        return text if held.turn_id != turn.turn_id else _beyond(held.user_text, text)

    def _own_words(self, turn: Turn, said: str, reply: Optional[Turn] = None) -> bool:
        """Are the words said over the held reply (or ``reply``) its own (its echo), not
        the user's? They must match, in order, the chunks the speaker was playing while
        the utterance was spoken (from ``OWN_WORDS_SLACK_S`` before it: the echo path
        and the VAD's padding)."""
        reply = reply or self._held
        if reply is None or not self.config.pipeline.ignore_own_words:
            return False
        end = turn.ended.speech_end
        start = _began(turn) - OWN_WORDS_SLACK_S
        playing = " ".join(q.text for q in reply.queued if q.start < end and q.end > start)
        return _echoes(said, playing)

    def _tail_echo(self, turn: Turn, text: str) -> bool:
        """Is ``turn``'s utterance the echo of the end of the reply before it, heard as
        speech once that reply had played out? The microphone hears a reply later than
        the speaker plays it; echo that began under the reply (too faint, or judged echo,
        to be a barge-in then) ends after it, where it then starts an utterance whose
        pre-roll reaches back over it (seen live, half-duplex: 2 whole-file runs in 7)."""
        last = self._last_reply  # recorded, so not ``turn``; it has chunks
        if last is None or last.status != "answered":
            return False
        # the utterance's audio (with its pre-roll) began while the reply was playing:
        # words said after it are the user's, even the reply's own ("the capital of...")
        return _began(turn) < last.queued[-1].end and self._own_words(turn, text, last)

    async def _drop_held(self) -> None:
        """The user said something: the held reply ends, interrupted (or, if the user
        went on with the utterance it answered, reopened: logged, not in the history)."""
        held, self._held = self._held, None
        if held is not None:
            cut = await held.cancel()
            if not held.closed:
                held.finish("reopened")
            self._record(held, cut, prefill=False)

    async def _resume_held(self, turn: Turn) -> None:
        """``turn``'s utterance had no words (or a backchannel): it is logged, not
        answered, and the held reply plays again from the chunk it was cut in."""
        held, self._held = self._held, None
        self._record(turn, prefill=False)
        self.stats["resumed"] += 1
        if turn.early and not turn.closed:  # the VAD will still close this utterance
            self._resolved_early = turn.turn_id
        for chunk in held.unheard(clock.now()):
            with naming("output"):
                held.add(chunk, await self.sink.play(chunk))
        held.gate.set()
        self._turn = held
        self.observers.notice(f"  (turn {turn.turn_id}: no words, the reply goes on)")
        self.observers.status("speaking")

    async def _close(self, stopped: bool) -> None:
        """The session ends. At the end of the input a finished reply may play out;
        when the session is stopped (Ctrl-C, SIGTERM, an error), playback stops too."""
        await self._end_turn(stop_playback=stopped, prefill=False)
        await self._settle_superseded()

    async def _settle_superseded(self) -> None:
        """Wait until every superseded turn is recorded (shielded: a turn cancelled
        while it waits does not cancel the recording)."""
        while self._superseded:
            pending = list(self._superseded)
            await asyncio.shield(asyncio.wait(pending))
            self._superseded = [f for f in self._superseded if f not in pending]
            for done in pending:
                if not done.cancelled() and done.exception() is not None:
                    raise done.exception()

    async def _end_turn(self, stop_playback: bool, speech_started: Optional[float] = None,
                        prefill: bool = True, reopened: bool = False) -> None:
        """Record the newest turn now: work still running is cut, playback is silenced
        first if ``stop_playback``, and a turn cut before its transcript is transcribed,
        so that what the user said is kept. A ``reopened`` turn (the user went on after
        an early endpoint) is logged, not added to the history: its words come back
        in the whole utterance."""
        turn, self._turn = self._turn, None
        if turn is not None:
            await self._finish(turn, stop_playback, speech_started, prefill, reopened)

    async def _finish(self, turn: Turn, stop_playback: bool,
                      speech_started: Optional[float] = None, prefill: bool = True,
                      reopened: bool = False) -> None:
        """End and record ``turn``, no longer the current one (see ``_end_turn``)."""
        cut = turn.computing
        if cut:
            turn.task.cancel()  # takes effect at its next await, after the stop below
        if cut or (stop_playback and self.sink.busy_until() > clock.now() + 1e-3):
            turn.played = await self.sink.stop(turn.turn_id)  # silence it first
            if (speech_started is not None and turn.played.stopped_at is not None
                    and not turn.played.complete):
                # from the detected speech start to the last reply sample output
                turn.barge_in_stop_ms = (turn.played.stopped_at - speech_started) * 1000
        if cut:
            await turn.cancel()
            if not turn.user_text and not reopened:
                await self._recognize_cut(turn)
        if reopened:
            turn.finish("reopened")
        self._record(turn, cut, prefill and not reopened)

    # ---- one turn -----------------------------------------------------------------
    async def _recognize(self, turn: Turn) -> Transcript:
        with naming("asr"):
            transcript = await self.stages.asr.recognize(turn.ended)
        turn.user_text, turn.language = transcript.text, transcript.language
        return transcript

    async def _recognize_cut(self, turn: Turn) -> None:
        try:
            await self._recognize(turn)
        except CascadeError as err:
            turn.fail(str(err))

    async def _run_turn(self, turn: Turn) -> None:
        pc = self.config.pipeline
        try:
            async with asyncio.timeout(pc.turn_timeout_s):
                await self._answer(turn)
        except TimeoutError:
            turn.fail(f"turn exceeded pipeline.turn_timeout_s={pc.turn_timeout_s:g}")
        except CascadeError as err:
            turn.fail(str(err))

    async def _answer(self, turn: Turn) -> None:
        tl = turn.timeline
        deciding = self.end_of_turn is not None and turn.speculative and not turn.gate.is_set()
        acoustic = self.end_of_turn.acoustic(turn.ended.audio) if deciding else None
        messages = None
        try:
            transcript = await self._recognize(turn)
            tl.mark("asr_final", transcript.t)
            said = self._over_held(turn, transcript.text)
            if said is not None and self._own_words(turn, said):
                turn.echo = True  # the assistant heard itself: not the user's words
            elif said is not None and _takes_turn(said, self._backchannels):
                await self._drop_held()  # recorded before this turn's prompt is built
                said = None
            elif said is None and self._tail_echo(turn, transcript.text):
                turn.echo, said = True, transcript.text  # logged, not answered
            if said is None and transcript.text:
                await self._settle_superseded()  # in the history before this prompt
                with naming("llm", "building the prompt: "):  # the chat template, the tokenizer
                    messages = await self.conversation.prompt(transcript.text,
                                                              transcript.language)
                if deciding and not turn.gate.is_set():  # else the VAD closed it first
                    turn.verdict = await self.end_of_turn.verdict(transcript.text, messages,
                                                                  acoustic)
                    tl.mark("eot_decided")
                    self._schedule_commit(turn, turn.verdict.silence_s)
        finally:
            if acoustic is not None:
                acoustic.cancel()  # awaited by the verdict, or no longer needed
        if said is not None:  # a false interruption: resume once this utterance is over
            turn.finish("echo" if turn.echo else "backchannel" if said else "no_speech")
            if deciding:
                self._schedule_commit(turn, self.config.pipeline.complete_silence_ms / 1000)
            await turn.gate.wait()
            if self._held is not None:
                await self._resume_held(turn)
            return
        if messages is None:
            turn.finish("no_speech")
            return
        if turn.verdict is not None and self.config.pipeline.defer_replies:
            await self._defer(turn)
        decided = turn.reply_started = clock.now()
        request = LLMRequest(turn.turn_id, decided, messages)
        async with aclosing(self.reply.audio(request, tl.mark)) as chunks:
            async for chunk in chunks:
                await turn.gate.wait()  # a speculative turn plays from its endpoint on
                with naming("output"):
                    start = await self.sink.play(chunk)
                first = turn.add(chunk, start)
                if first:
                    self._reply_compute_s.append(chunk.t - decided)
                    turn.first_audio_cached = chunk.cached
                    self.stats["first_audio_cached" if chunk.cached
                               else "first_audio_synthesized"] += 1
                    tl.mark("playback_start", start)
                    tl.mark("first_sound", start + edges.leading_silence_s(
                        chunk.samples, chunk.sample_rate, self.config.pipeline.tts_silence_db))
                    self.observers.status("speaking")
                if not chunk.continues:  # a later piece of the same text has none
                    self.observers.assistant(turn, chunk.text, tl.v2v_ms if first else None)
        turn.generated = True
        if not turn.queued:
            turn.fail("llm: empty reply")
            return
        # the reply is all written (it may still be playing): ready the next prompt
        self.conversation.prefill(self.conversation.after(turn.user_text, turn.reply_text),
                                  turn.language)

    async def _defer(self, turn: Turn) -> None:
        """A long verdict: start the reply when the silence left is what it takes to
        compute (or at the endpoint, or never if the user goes on)."""
        lead = 1.2 * max(self._reply_compute_s, default=0.6)
        at = turn.silence_start + turn.verdict.silence_s - lead
        if clock.now() >= at or turn.gate.is_set():
            return
        turn.reply_at = at
        self.stats["deferred_replies"] += 1
        await turn.go.wait()

    def _record(self, turn: Turn, cut: bool = False, prefill: bool = True) -> None:
        """The turn is over: its one status, the history, the log lines."""
        turn.settle(cut)
        if turn.queued:
            self._last_reply = turn
        if turn.status not in NOT_TAKEN:
            self.conversation.record(turn.user_text, turn.reply_text, turn.language,
                                     interrupted=turn.status != "answered")
        timeline = turn.timeline.record(status=turn.status, speculative=turn.speculative,
                                        asr_start=round(turn.started_at, 4),
                                        sentence_gaps_ms=[round(g, 1)
                                                          for g in turn.sentence_gaps_ms()])
        if turn.barge_in_stop_ms is not None:
            timeline["barge_in_stop_ms"] = round(turn.barge_in_stop_ms, 1)
        if turn.verdict is not None:
            timeline["end_of_turn"] = turn.verdict.record()
        if turn.first_audio_cached is not None:
            timeline["first_audio_cached"] = turn.first_audio_cached
        transcript = {"turn_id": turn.turn_id, "user": turn.user_text,
                      "assistant": turn.reply_text, "status": turn.status,
                      "interrupted": turn.interrupted}
        if turn.error:
            transcript["error"] = timeline["error"] = turn.error
        self.observers.turn_ended(turn, transcript, timeline)
        if prefill:
            self.conversation.prefill()
        self.observers.status("listening")


def _began(turn: Turn) -> float:
    """When the audio of ``turn``'s utterance begins (its pre-roll included)."""
    return turn.ended.speech_end - len(turn.ended.audio) / PIPELINE_RATE


def _plain(text: str) -> str:
    """Lower case, letters, digits, spaces and inner hyphens: "Mm-hmm." -> "mm-hmm"."""
    kept = "".join(ch if ch.isalnum() or ch in " -" else " " for ch in text.lower())
    return " ".join(w.strip("-") for w in kept.split()).strip()


def _takes_turn(said: str, backchannels: set[str]) -> bool:
    """Words that are more than a listener's backchannel, or a run of them: a listener
    says "yeah, yeah" or "oh, okay", and Whisper writes a lone "Okay." over a reply
    as "Okay. Okay." at times (seen in CI)."""
    words = _plain(said).split()
    longest = max((len(b.split()) for b in backchannels), default=0)
    # ends[i]: the first i words are whole backchannels, one after the other
    ends = [True] + [False] * len(words)
    for i in range(1, len(words) + 1):
        ends[i] = any(ends[i - n] and " ".join(words[i - n:i]) in backchannels
                      for n in range(1, min(longest, i) + 1))
    return bool(words) and not ends[-1]


def _echoes(said: str, played: str, min_words: int = 2, share: float = 0.5,
            max_tail: int = 1) -> bool:
    """Whether ``said`` is a rendering of ``played``: at least ``min_words`` of its
    words, and ``share`` of them, appear in ``played`` in the same order (the longest
    common subsequence of words; the ASR of an echo drops and mangles some: "in terms of
    information" was heard for "of interest ... sensitive information"), and at most
    ``max_tail`` words follow the last of them. A user who speaks over the reply is
    heard after its echo: "example of the mover 10 meters" (live, for the reply's
    "...example of the modern..." and the user's "go forward ten meters") has half of
    its words in the reply, but ends with three of the user's."""
    s, p = _plain(said).split(), _plain(played).split()
    if len(s) < min_words or not p:
        return False
    row = [0] * (len(p) + 1)  # LCS lengths of the words of ``said`` so far and p[:j]
    upto = []  # the LCS of said[:k + 1] and played, for each k
    for w in s:
        diagonal = 0
        for j, q in enumerate(p, 1):
            above = row[j]
            row[j] = diagonal + 1 if w == q else max(above, row[j - 1])
            diagonal = above
        upto.append(row[-1])
    common = row[-1]
    tail = len(s) - (upto.index(common) + 1)  # words after the last one matched
    return common >= min_words and common >= share * len(s) and tail <= max_tail


def _beyond(before: str, after: str) -> str:
    """The words of ``after`` past as many as ``before`` has (the ASR of a longer stretch
    of the same utterance)."""
    return " ".join(_plain(after).split()[len(_plain(before).split()):])
