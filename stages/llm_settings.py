"""Generation settings shared by every LLM backend (written once)."""
from __future__ import annotations

from typing import Sequence

from pydantic import Field

from pipeline.config import Strict
from pipeline.events import ChatMessage

DEFAULT_SYSTEM_PROMPT = (
    "You are a voice assistant. Answer briefly: one sentence, under twenty words, "
    "friendly and clear."
)


class GenerationSettings(Strict):
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, min_length=1,
                               description="System prompt, always kept by truncation.")
    max_tokens: int = Field(48, ge=1, description="Most tokens in one reply.")
    temperature: float = Field(0.2, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling.")


def as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Chat messages as the role/content dicts of chat templates and OpenAI's API."""
    return [{"role": m.role, "content": m.content} for m in messages]
