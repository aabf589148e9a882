"""The conversation: history, its token window, the system prompt in the user's
language, roles that alternate, and the prefill of the next prompt.

Roles always alternate (system, user, assistant, user, ...), as chat templates
such as Mistral's and Gemma's, and vLLM, require: a user message is added only
with the reply the user heard. What the user said in a turn that got no reply
(cut before any audio, or failed) is carried into the next user message, so the
model still sees it, once.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Optional

from .events import ChatMessage
from .languages import system_prompt
from .truncation import HistoryWindow


class Conversation:
    def __init__(self, llm, budget: Optional[int],
                 on_error: Callable[[str], None] = lambda message: None,
                 max_turns: Optional[int] = None):
        self.llm = llm
        self.window = HistoryWindow(budget, max_turns=max_turns)
        self.history: list[ChatMessage] = []
        self.carried = ""  # said in turns that got no reply: starts the next user message
        self.language: Optional[str] = None  # the user's language, from the newest turn
        self._prefill: Optional[asyncio.Future] = None
        self._on_error = on_error

    def system(self, language: Optional[str]) -> tuple[ChatMessage, ...]:
        """What every prompt starts with: the system prompt in the user's language, then
        the primer's example exchanges (if the LLM's settings have one)."""
        cfg = self.llm.config
        primer = cfg.primer_messages() if hasattr(cfg, "primer_messages") else ()
        return (ChatMessage("system", system_prompt(cfg.system_prompt, language)), *primer)

    def user_message(self, text: str) -> str:
        """The next user message: anything carried over, then ``text``."""
        return f"{self.carried} {text}".strip()

    async def prompt(self, text: str, language: Optional[str]) -> tuple[ChatMessage, ...]:
        """The LLM prompt for a new user message (tokens counted on the LLM's thread)."""
        run = getattr(self.llm, "run_tokenizer", None) or self.llm.worker.call
        return await run(self.window.build, self.system(language), self.history,
                         self.user_message(text), self.llm.count_tokens)

    def record(self, user_text: str, reply: str, language: Optional[str],
               interrupted: bool) -> None:
        """A turn is over: add it to the history, keeping roles alternating."""
        if not user_text:
            return
        if language is not None:
            self.language = language
        if not reply:
            self.carried = self.user_message(user_text)
            return
        self.history += [ChatMessage("user", self.user_message(user_text)),
                         ChatMessage("assistant", reply, interrupted=interrupted)]
        self.carried = ""

    # ---- prefill-ahead ------------------------------------------------------------------
    def prefill(self, history: Optional[list[ChatMessage]] = None,
                language: Optional[str] = None) -> None:
        """Off the critical path (while the reply plays, or the user thinks): bring the
        LLM's KV cache to the next prompt's prefix (the system prompt in the user's
        language, then the history), so that the next turn prefills only its new
        message. ``history``, ``language``: what they will be (default: what they are)."""
        llm = self.llm
        if not hasattr(llm, "prefill"):
            return
        system = self.system(language or self.language)
        messages = list(self.history if history is None else history)

        def work() -> int:
            return llm.prefill(self.window.prefix(system, messages, llm.count_tokens))

        def report(fut: asyncio.Future) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                self._on_error(f"llm: prefill of the next prompt failed: {fut.exception()}")
        if self._prefill is not None and not self._prefill.done():
            self._prefill.cancel()  # superseded: the cache goes to the newer prefix
        self._prefill = asyncio.ensure_future(llm.worker.call(work))
        self._prefill.add_done_callback(report)

    def after(self, user_text: str, reply: str) -> list[ChatMessage]:
        """The history as it will be once this reply is recorded whole."""
        return [*self.history, ChatMessage("user", self.user_message(user_text)),
                ChatMessage("assistant", reply)]

    async def prefilled(self) -> None:
        """Wait for the prefill-ahead in flight, if any (its errors are reported)."""
        if self._prefill is not None:
            await asyncio.wait([self._prefill])

    async def aclose(self) -> None:
        if self._prefill is not None and not self._prefill.done():
            self._prefill.cancel()
            await asyncio.wait([self._prefill])
