"""The adaptive end of turn: how much silence ends this utterance.

At each pause the speculative turn asks :class:`EndOfTurn` for a verdict. Two
signals vote that the user is done:
- acoustic: Smart Turn v3.2 on the audio so far (:mod:`stages.eot_smart_turn`),
  started with the ASR, on its own thread;
- semantic: the LLM's log-probability that the user's sentence ends right after the
  transcript, read without its final punctuation (Whisper ends fragments with a
  period too): its chat template's end-of-turn token or a ".", "?" or "!" next
  (with ``eot_sentence_end`` off, or for answers shorter than
  ``eot_sentence_min_words``, "No.", "Ten of clubs.": the end-of-turn token after the
  punctuated text).
  The tokens are the reply's prompt, which is prefilled anyway.
A transcript that trails off ("and we...", "four of f-", a final comma) is never
complete. Two votes: ``complete_silence_ms``; one: ``unsure_silence_ms``; none:
``max_silence_ms`` (where the VAD closes the utterance). With one signal enabled,
its vote alone decides between the complete and the maximal silence.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from . import clock
from .config import PipelineSettings
from .errors import CascadeError
from .events import ChatMessage
from .worker import Worker


def unfinished_text(text: str) -> bool:
    """Whisper marks speech that trails off: "He was not an ill...", "four of f-"."""
    return text.rstrip().endswith(("...", "…", "-", ",", ":"))


def without_final_punctuation(text: str) -> str:
    """"Go forward." -> "Go forward" (also "?" and "!"); "four of..." is kept."""
    bare = text.rstrip()
    if bare.endswith(("...", "…")):
        return bare
    return bare.rstrip(".?!").rstrip()


@dataclass(frozen=True)
class Verdict:
    silence_s: float  # silence after the last voiced sample that ends the turn
    acoustic: Optional[float]  # Smart Turn's P(complete)
    semantic: Optional[float]  # log P(end of the user's message)
    reason: str
    # how long the verdict waited for Smart Turn once the transcript was known
    acoustic_wait_s: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"silence_ms": round(self.silence_s * 1000), "reason": self.reason,
                "acoustic_wait_ms": round(self.acoustic_wait_s * 1000, 1),
                "smart_turn": None if self.acoustic is None else round(self.acoustic, 3),
                "eot_logprob": None if self.semantic is None else round(self.semantic, 3)}


class EndOfTurn:
    def __init__(self, pc: PipelineSettings, llm: Any, fixed_s: float):
        """``fixed_s``: the silence used when no signal is on (vad.min_silence_ms)."""
        self.pc, self.llm, self.fixed_s = pc, llm, fixed_s
        self.semantic = pc.semantic_eot and hasattr(llm, "end_of_turn_logprob")
        self.smart_turn = None
        if pc.acoustic_eot:
            from stages.eot_smart_turn import SmartTurn
            self.smart_turn = SmartTurn(pc.smart_turn_model)
            self._worker = Worker("smart-turn")

    @property
    def signals(self) -> list[str]:
        return [name for name, on in (("Smart Turn", self.smart_turn is not None),
                                      ("LLM end-of-turn", self.semantic)) if on]

    async def start(self) -> None:
        if self.smart_turn is not None:
            await self._worker.call(self.smart_turn.load)
            await self._worker.call(self.smart_turn.probability, np.zeros(16000, np.float32))
            self.smart_turn.cpu_ms.clear()  # the warm-up is not a turn's

    def aclose(self) -> None:
        if self.smart_turn is not None:
            self._worker.shutdown()

    def acoustic(self, audio: np.ndarray) -> Optional["asyncio.Future[float]"]:
        """Start the acoustic estimate (it runs beside the ASR)."""
        if self.smart_turn is None:
            return None
        return asyncio.ensure_future(self._worker.call(self.smart_turn.probability, audio))

    async def verdict(self, text: str, messages: Sequence[ChatMessage],
                      acoustic: Optional["asyncio.Future[float]"]) -> Verdict:
        pc = self.pc
        t0 = clock.now()
        if unfinished_text(text):
            p = await acoustic if acoustic is not None else None
            return Verdict(pc.max_silence_ms / 1000, p, None, "trails off")
        # the LLM reads its probability while Smart Turn, started with the ASR, ends
        sentence_end = pc.eot_sentence_end and len(text.split()) >= pc.eot_sentence_min_words
        semantic = (asyncio.ensure_future(self.llm.worker.call(
            self.llm.end_of_turn_logprob, messages, sentence_end=sentence_end))
            if self.semantic else None)
        try:
            p = await acoustic if acoustic is not None else None
            waited = clock.now() - t0
            try:
                lp = await semantic if semantic is not None else None
            except Exception as err:  # noqa: BLE001 - a template without an end token
                raise CascadeError(f"llm: end-of-turn probability: {err}") from err
        finally:
            if semantic is not None and not semantic.done():
                semantic.cancel()  # the turn was cut: the LLM's worker finishes the call
            elif semantic is not None and not semantic.cancelled():
                semantic.exception()  # retrieved: Smart Turn's error is the one raised
        votes = [v for v in ((p >= pc.smart_turn_complete) if p is not None else None,
                             (lp >= pc.eot_complete_logprob) if lp is not None else None)
                 if v is not None]
        if not votes:
            return Verdict(self.fixed_s, p, lp, "no signal", waited)
        yes = sum(votes)
        if yes == len(votes):
            return Verdict(pc.complete_silence_ms / 1000, p, lp, "complete", waited)
        if yes:
            return Verdict(pc.unsure_silence_ms / 1000, p, lp, "unsure", waited)
        return Verdict(pc.max_silence_ms / 1000, p, lp, "unfinished", waited)
