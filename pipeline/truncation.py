"""Prompt truncation: keep prefill short with a token budget for the history.

Tokens are counted by the LLM backend's own tokenizer on the fully rendered
prompt. The system prompt is always kept; the oldest whole turns (a user message
and the assistant's reply) are dropped first. If the system prompt and the new
user message alone exceed the budget, the user message keeps its newest words.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from .events import ChatMessage

Counter = Callable[[Sequence[ChatMessage]], int]
# What every prompt starts with: the system prompt, alone or with the primer's example
# exchanges after it; never truncated.
Head = Union[str, Sequence[ChatMessage]]
INTERRUPTED_MARK = "…"  # the reply was cut off where the user spoke


def as_prompt_message(msg: ChatMessage) -> ChatMessage:
    """What the LLM sees: an interrupted reply is marked as such."""
    if msg.role == "assistant" and msg.interrupted:
        return ChatMessage(msg.role, msg.content + INTERRUPTED_MARK)
    return msg


def head_messages(system: Head) -> tuple[ChatMessage, ...]:
    return (ChatMessage("system", system),) if isinstance(system, str) else tuple(system)


def group_turns(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Split a history into whole turns, each starting at a user message."""
    turns: list[list[ChatMessage]] = []
    for msg in history:
        if msg.role == "user" or not turns:
            turns.append([msg])
        else:
            turns[-1].append(msg)
    return turns


def build_prompt(system: Head, history: Sequence[ChatMessage], user_text: str,
                 count: Counter, budget: int | None) -> tuple[ChatMessage, ...]:
    """System prompt + the newest whole turns that fit in ``budget`` tokens + the
    new user message. ``budget=None`` keeps everything."""
    head = head_messages(system)
    user_msg = ChatMessage("user", user_text)
    turns = [[as_prompt_message(m) for m in t] for t in group_turns(history)]

    def assemble(kept: list[list[ChatMessage]], user: ChatMessage) -> tuple[ChatMessage, ...]:
        return (*head, *(m for t in kept for m in t), user)

    if budget is None:
        return assemble(turns, user_msg)
    # Drop oldest turns first. Find how many newest turns fit (count is monotone in it).
    lo, hi = 0, len(turns)  # number of newest turns kept
    if count(assemble(turns, user_msg)) <= budget:
        return assemble(turns, user_msg)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(assemble(turns[len(turns) - mid:], user_msg)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo > 0 or count(assemble([], user_msg)) <= budget:
        return assemble(turns[len(turns) - lo:], user_msg)
    # Even alone, the user message is too long: keep its newest words.
    words = user_text.split()
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(assemble([], ChatMessage("user", " ".join(words[-mid:])))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return assemble([], ChatMessage("user", " ".join(words[-lo:])))


def _flatten(turns: list[list[ChatMessage]]) -> list[ChatMessage]:
    return [m for t in turns for m in t]


class HistoryWindow:
    """Cache-friendly truncation: the history's kept part only ever loses whole turns
    at its start, and when it must, it drops down to ``low_water`` x budget rather
    than just under the budget. The prompt's prefix (system prompt + kept history)
    then stays the same for several turns, so the LLM's KV cache stays valid and can
    be prefilled ahead of the next turn (see :meth:`prefix`)."""

    def __init__(self, budget: int | None, low_water: float = 0.6, reserve: int = 64,
                 max_turns: Optional[int] = None):
        self.budget = budget
        self.max_turns = max_turns  # most whole turns kept, whatever their tokens
        self.low_water = low_water
        self.reserve = reserve  # tokens kept free for the next user message
        self.dropped = 0  # whole turns dropped from the start of the history

    def _kept(self, history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
        turns = group_turns(history)
        if self.max_turns is not None:
            self.dropped = max(self.dropped, len(turns) - self.max_turns)
        return turns[min(self.dropped, len(turns)):]

    @staticmethod
    def _with_system(system: Head, turns: list[list[ChatMessage]]) -> tuple[ChatMessage, ...]:
        """System prompt (and primer) + these turns, as the LLM sees them."""
        return (*head_messages(system), *map(as_prompt_message, _flatten(turns)))

    def _shrink(self, system: Head, history: Sequence[ChatMessage], count: Counter,
                extra_tokens: int) -> None:
        turns = self._kept(history)
        target = self.low_water * self.budget
        while turns and count(self._with_system(system, turns)) + extra_tokens > target:
            turns.pop(0)
            self.dropped += 1

    def build(self, system: Head, history: Sequence[ChatMessage], user_text: str,
              count: Counter) -> tuple[ChatMessage, ...]:
        """The prompt for a turn (like :func:`build_prompt`, from the kept history)."""
        if self.budget is None:
            return build_prompt(system, _flatten(self._kept(history)), user_text, count, None)
        kept = _flatten(self._kept(history))
        msgs = build_prompt(system, kept, user_text, count, self.budget)
        if len(msgs) - len(head_messages(system)) - 1 < len(kept):  # it dropped turns:
            # drop to the low-water mark
            self._shrink(system, history, count, count((ChatMessage("user", user_text),)))
            msgs = build_prompt(system, _flatten(self._kept(history)), user_text, count,
                                self.budget)
        return msgs

    def prefix(self, system: Head, history: Sequence[ChatMessage],
               count: Counter) -> tuple[ChatMessage, ...]:
        """What the next turn's prompt will start with; if the next turn would not fit
        (with ``reserve`` tokens for its message), the drop happens now."""
        kept = self._with_system(system, self._kept(history))
        if self.budget is not None and count(kept) + self.reserve > self.budget:
            self._shrink(system, history, count, self.reserve)
            kept = self._with_system(system, self._kept(history))
        return kept
