"""Language model behind any OpenAI-compatible server (vLLM's `vllm serve`,
llama.cpp's server, Ollama), streamed token by token over HTTP (SSE).

A connection that fails, or a server that stays silent past the first-token
timeout, is retried, but only before the first token: after that, part of the
reply has been spoken and a retry would repeat it, so the turn ends with an
error and the session goes on. Cancelling the turn (barge-in) closes the HTTP
stream at once. Prompt truncation counts tokens approximately here (the server's
tokenizer is not local): about ``chars_per_token`` characters per token.
"""
from __future__ import annotations

import asyncio
import json
import os
from typing import AsyncIterator, Optional, Sequence

from pydantic import Field, field_validator

from pipeline import clock
from pipeline.errors import MissingDependencyError, StageError
from pipeline.events import ChatMessage, LLMRequest, TextDelta
from pipeline.registry import register
from stages.base import Stage
from stages.llm_settings import GenerationSettings, as_dicts


class OpenAIConfig(GenerationSettings):
    base_url: str = Field(..., description="Server URL up to /v1, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(..., description="Model name the server serves.")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", description="Environment variable "
                                       "holding the API key (never the key itself); null = none.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Time to connect to the server.")
    first_token_timeout_s: float = Field(10.0, gt=0, description="Time from the request to "
                                         "the first token before the attempt is abandoned.")
    retries: int = Field(1, ge=0, description="Further attempts, only before the first token.")
    chars_per_token: float = Field(3.5, gt=0, description="Approximate token counting for "
                                   "prompt truncation.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


@register("llm", "openai", OpenAIConfig, "any OpenAI-compatible server (vLLM, llama.cpp, Ollama)")
class OpenAILLM(Stage[LLMRequest, TextDelta]):
    kind = "llm"

    def __init__(self, config: OpenAIConfig):
        super().__init__(config)
        self._client = None

    def _load(self) -> None:  # nothing to load in process
        pass

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def start(self) -> None:
        try:
            import httpx
        except ImportError as err:
            raise MissingDependencyError("llm.backend openai needs: pip install httpx==0.28.1") \
                from err
        cfg = self.config
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=cfg.connect_timeout_s))
        await self.ping()
        self.load_s = 0.0

    async def ping(self) -> None:
        """Fail early and clearly when no server answers at the URL."""
        import httpx

        url = f"{self.config.base_url}/models"
        try:
            resp = await self._client.get(url, headers=self._headers())
        except httpx.HTTPError as err:
            raise StageError("llm", f"no server answers at {self.config.base_url} ({type(err).__name__}"
                             f"); start one (make vllm-serve MODEL=..., or llama.cpp's server) or "
                             f"fix llm.base_url") from None
        if resp.status_code >= 400:
            raise StageError("llm", f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}")

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(int(len(m.content) / self.config.chars_per_token) + 4 for m in messages) + 3

    async def warmup(self) -> None:
        msgs = (ChatMessage("system", self.config.system_prompt), ChatMessage("user", "Hello."))
        async for _ in self._stream(msgs, max_tokens=1):
            break

    async def process(self, events: AsyncIterator[LLMRequest]) -> AsyncIterator[TextDelta]:
        async for req in events:
            async for text in self._stream(req.messages):
                yield TextDelta(req.turn_id, clock.now(), text=text)

    async def _stream(self, messages: Sequence[ChatMessage],
                      max_tokens: Optional[int] = None) -> AsyncIterator[str]:
        import httpx

        cfg = self.config
        payload = {"model": cfg.model, "stream": True, "temperature": cfg.temperature,
                   "top_p": cfg.top_p, "max_tokens": max_tokens or cfg.max_tokens,
                   "messages": as_dicts(messages)}
        url = f"{cfg.base_url}/chat/completions"
        # The read timeout bounds the wait for the first token (and any later stall).
        timeout = httpx.Timeout(cfg.first_token_timeout_s, connect=cfg.connect_timeout_s)
        for attempt in range(cfg.retries + 1):
            started = False
            try:
                async with self._client.stream("POST", url, json=payload, timeout=timeout,
                                               headers=self._headers()) as resp:
                    if resp.status_code != 200:
                        body = (await resp.aread()).decode("utf-8", "replace")[:300]
                        raise StageError("llm", f"{url} answered HTTP {resp.status_code}: {body}")
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        choice = json.loads(data)["choices"][0]
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            started = True
                            yield text
                if started:
                    raise StageError("llm", "the server closed the stream mid-reply (no [DONE])")
                return  # an empty reply
            except StageError:
                raise
            except (httpx.HTTPError, json.JSONDecodeError) as err:
                what = (f"no token within llm.first_token_timeout_s={cfg.first_token_timeout_s:g}"
                        if isinstance(err, httpx.ReadTimeout) else f"{type(err).__name__}: {err}")
                if started:
                    raise StageError("llm", f"the server failed mid-reply ({what})") from None
                if attempt == cfg.retries:
                    raise StageError("llm", f"{cfg.base_url}: {what} (after {attempt + 1} "
                                     "attempt(s))") from None
                await asyncio.sleep(0.2 * (attempt + 1))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        await super().aclose()
