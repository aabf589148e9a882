"""Generation settings shared by every LLM backend (written once)."""
from __future__ import annotations

from typing import Sequence

from pydantic import Field

from pipeline.config import Strict
from pipeline.events import ChatMessage

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Reply with one short sentence in your own words. "
    "Answer questions with the fact asked for. When the user tells you something, react to "
    "it briefly."
)

# A few example exchanges after the system prompt: a small model copies their form
# (answer with the fact; react to a statement, don't repeat it). They are always kept
# by truncation and sit in the KV cache with the system prompt, so they cost prefill
# once. None of them is in the reply-quality question set (eval/questions.py).
DEFAULT_PRIMER = (
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("I just got back from a long walk.", "Nice! I hope you enjoyed the fresh air."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("Turn left at the next corner.", "Okay. Have a safe trip!"),
    ("The meeting was moved to Friday.", "Thanks for letting me know."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
)


class Exchange(Strict):
    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class GenerationSettings(Strict):
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, min_length=1,
                               description="System prompt, always kept by truncation.")
    max_tokens: int = Field(48, ge=1, description="Most tokens in one reply.")
    temperature: float = Field(0.2, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling.")
    primer: list[Exchange] = Field(
        default_factory=lambda: [Exchange(user=u, assistant=a) for u, a in DEFAULT_PRIMER],
        description="Example exchanges ({user, assistant}) placed after the system prompt, "
        "always kept: they show a small model how to reply (default: the six of "
        "stages/llm_settings.py). [] for none.")

    def primer_messages(self) -> tuple[ChatMessage, ...]:
        return tuple(m for ex in self.primer for m in (ChatMessage("user", ex.user),
                                                       ChatMessage("assistant", ex.assistant)))


def as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Chat messages as the role/content dicts of chat templates and OpenAI's API."""
    return [{"role": m.role, "content": m.content} for m in messages]
