"""Language model behind any OpenAI-compatible server (vLLM's `vllm serve`,
llama.cpp's server, Ollama), streamed token by token over HTTP (SSE).

A failure before the first token is retried: no connection, a server that stays
silent past the first-token timeout, an overloaded or restarting server (HTTP 429,
500, 502, 503, 504), a malformed stream, a stream closed without its [DONE]. After
the first token, part of the reply has been spoken and a retry would repeat it, so
the turn ends with an error and the session goes on. Any other HTTP status (a wrong
URL, model or key) is not retried. Cancelling the turn (barge-in) closes the HTTP
stream at once. Prompt truncation counts tokens approximately here (the server's
tokenizer is not local): about ``chars_per_token`` characters per token.
"""
from __future__ import annotations

import asyncio
import json
import os
from contextlib import aclosing
from typing import AsyncIterator, Optional, Sequence

from pydantic import Field, field_validator

from pipeline import clock
from pipeline.errors import MissingDependencyError, StageError
from pipeline.events import ChatMessage, LLMRequest, TextDelta
from pipeline.registry import register
from stages.base import LLMStage
from stages.llm_settings import GenerationSettings, as_dicts

RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})  # busy or restarting: try again
STATUS_HINTS = {401: "check llm.api_key_env", 403: "check llm.api_key_env",
                404: "check llm.base_url and llm.model"}


class _AttemptFailed(Exception):
    """One attempt failed in a way another attempt may fix; the message names the culprit."""


class OpenAIConfig(GenerationSettings):
    base_url: str = Field(..., description="Server URL up to /v1, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(..., description="Model name the server serves.")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding the "
                                       "API key (never the key itself), e.g. OPENAI_API_KEY; "
                                       "null = no key is sent.")
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
class OpenAILLM(LLMStage):
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
        async with aclosing(self._stream(msgs, max_tokens=1)) as texts:
            async for _ in texts:
                break

    async def generate(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        async with aclosing(self._stream(request.messages)) as texts:  # closes the HTTP stream
            async for text in texts:
                yield TextDelta(request.turn_id, clock.now(), text=text)

    async def _stream(self, messages: Sequence[ChatMessage],
                      max_tokens: Optional[int] = None) -> AsyncIterator[str]:
        import httpx

        cfg = self.config
        payload = {"model": cfg.model, "stream": True, "temperature": cfg.temperature,
                   "top_p": cfg.top_p, "max_tokens": max_tokens or cfg.max_tokens,
                   "messages": as_dicts(messages)}
        url = f"{cfg.base_url}/chat/completions"
        # The deadline bounds the whole wait for the first token (connecting, headers,
        # keep-alive comments, chunks without text); the read timeout bounds later stalls.
        timeout = httpx.Timeout(cfg.first_token_timeout_s, connect=cfg.connect_timeout_s)
        for attempt in range(cfg.retries + 1):
            started = False
            try:
                async with asyncio.timeout(cfg.first_token_timeout_s) as deadline:
                    async with self._client.stream("POST", url, json=payload, timeout=timeout,
                                                   headers=self._headers()) as resp:
                        await _check_status(resp, url)
                        async for line in resp.aiter_lines():
                            if not line.startswith("data:"):
                                continue
                            data = line[5:].strip()
                            if data == "[DONE]":
                                return  # the reply is complete (it may be empty)
                            text = _chunk_text(data, url)
                            if text:
                                if not started:
                                    started = True
                                    deadline.reschedule(None)
                                yield text
                        raise _AttemptFailed(f"{url} closed the stream without [DONE]")
            except (_AttemptFailed, httpx.HTTPError, TimeoutError) as err:
                if isinstance(err, (TimeoutError, httpx.ReadTimeout)):
                    what = (f"{url}: no {'further ' if started else ''}token within "
                            f"llm.first_token_timeout_s={cfg.first_token_timeout_s:g}")
                elif isinstance(err, _AttemptFailed):
                    what = str(err)
                else:
                    what = f"{url}: {type(err).__name__}: {err}"
                if started:
                    raise StageError("llm", f"{what} (mid-reply)") from None
                if attempt == cfg.retries:
                    tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                    raise StageError("llm", f"{what} (after {tries})") from None
                await asyncio.sleep(0.2 * (attempt + 1))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        await super().aclose()


async def _check_status(resp, url: str) -> None:
    """Not 200: a StageError, or an _AttemptFailed where another attempt may help."""
    if resp.status_code == 200:
        return
    body = (await resp.aread()).decode("utf-8", "replace")[:300]
    what = f"{url} answered HTTP {resp.status_code}: {body}"
    if resp.status_code in RETRIED_STATUS:
        raise _AttemptFailed(what)
    hint = STATUS_HINTS.get(resp.status_code)
    raise StageError("llm", f"{what} ({hint})" if hint else what)


def _chunk_text(data: str, url: str) -> Optional[str]:
    """The text in one streamed chunk. A chunk with empty ``choices`` (the usage chunk
    of vLLM and OpenAI) has none; anything not shaped like a chunk is an error."""
    def malformed(why: str) -> _AttemptFailed:
        return _AttemptFailed(f"malformed stream from {url}: {why}: {data[:120]!r}")

    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise malformed("not JSON") from None
    try:
        choices = chunk["choices"]
        text = (choices[0].get("delta") or {}).get("content") if choices != [] else None
    except (TypeError, LookupError, AttributeError):
        raise malformed("not a chat completion chunk") from None
    if text is not None and not isinstance(text, str):
        raise malformed("the content is not text")
    return text
