"""Generation settings shared by every LLM backend (written once)."""
from __future__ import annotations

from pydantic import Field

from pipeline.config import Strict

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
