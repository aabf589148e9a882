"""The `openai` backend against a real HTTP server that misbehaves on purpose
(tests/fault_server.py): each fault ends in the exact outcome it should, and the
server's own record shows how many attempts were made and when the client hung up."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import pytest

from pipeline.errors import StageError
from pipeline.events import ChatMessage, LLMRequest
from stages.llm_openai import OpenAIConfig, OpenAILLM
from tests.conftest import aiter_of, run
from tests.fault_server import MODEL, REPLY, SLOW_TOKENS, FaultServer

MSGS = (ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello."))
FIRST_TWO = "Hello there, "  # what die_mid_reply and malformed_mid send before failing


@pytest.fixture(scope="module")
def server():
    s = FaultServer().start()
    yield s
    s.stop()


@pytest.fixture
def url(server):
    return f"{server.base_url}/chat/completions"


@dataclass
class Outcome:
    reply: str
    error: Optional[str]
    seconds: float


def ask(server: FaultServer, *behaviours: str, **config) -> Outcome:
    """One turn through a started backend while the server plays ``behaviours``."""
    server.script(*behaviours)
    llm = OpenAILLM(OpenAIConfig(base_url=server.base_url, model=MODEL,
                                 **{"first_token_timeout_s": 2.0, "retries": 1, **config}))
    texts, errors = [], []

    async def main():
        await llm.start()
        try:
            async for delta in llm.process(aiter_of([LLMRequest(1, 0.0, MSGS)])):
                texts.append(delta.text)
        except StageError as err:
            errors.append(str(err))
        finally:
            await llm.aclose()
    t0 = time.monotonic()
    run(main())
    return Outcome("".join(texts), errors[0] if errors else None, time.monotonic() - t0)


def wait_for_hang_ups(server: FaultServer, within_s: float = 2.0) -> list[Optional[float]]:
    deadline = time.monotonic() + within_s
    while any(r.hung_up_at is None for r in server.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [r.hung_up_at for r in server.requests]


def test_a_normal_stream_is_the_whole_reply(server):
    out = ask(server, "ok")
    assert (out.error, out.reply) == (None, REPLY)
    [req] = server.requests
    assert req.body["stream"] is True and req.body["model"] == MODEL
    assert req.body["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Say hello."}]


def test_chunks_with_empty_choices_are_skipped(server):
    out = ask(server, "empty_choices")  # a usage chunk first and one before [DONE]
    assert (out.error, out.reply) == (None, REPLY)
    assert len(server.requests) == 1


def test_done_without_content_is_an_empty_reply(server):
    out = ask(server, "empty")
    assert (out.error, out.reply) == (None, "")
    assert len(server.requests) == 1


@pytest.mark.parametrize("first", ["http_429", "http_500", "http_502", "http_503", "http_504",
                                   "malformed", "bad_shape", "close_after_headers",
                                   "abort_after_headers", "hang", "trickle"])
def test_a_failure_before_the_first_token_is_retried(server, first):
    out = ask(server, first, "ok", retries=1, first_token_timeout_s=0.5)
    assert (out.error, out.reply) == (None, REPLY)
    assert [r.behaviour for r in server.requests] == [first, "ok"]


def test_a_busy_server_is_given_up_after_the_retries(server, url):
    out = ask(server, "http_503", retries=2)
    assert out.error.startswith(f"llm: {url} answered HTTP 503: ")
    assert "scripted HTTP 503" in out.error  # the server's own words
    assert out.error.endswith("(after 3 attempts)")
    assert len(server.requests) == 3


@pytest.mark.parametrize("status,hint", [(400, None), (401, "(check llm.api_key_env)"),
                                         (404, "(check llm.base_url and llm.model)")])
def test_a_client_error_is_not_retried(server, url, status, hint):
    out = ask(server, f"http_{status}", "ok", retries=2)
    assert out.error.startswith(f"llm: {url} answered HTTP {status}: ")
    assert f"scripted HTTP {status}" in out.error
    if hint:
        assert out.error.endswith(hint)
    assert "attempt" not in out.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("behaviour,why", [("malformed", "not JSON"),
                                           ("bad_shape", "not a chat completion chunk")])
def test_a_malformed_stream_is_a_clear_error(server, url, behaviour, why):
    out = ask(server, behaviour, retries=1)
    assert out.error.startswith(f"llm: malformed stream from {url}: {why}: ")
    assert out.error.endswith("(after 2 attempts)")
    assert out.reply == ""
    assert len(server.requests) == 2


def test_a_malformed_stream_mid_reply_ends_the_turn(server, url):
    out = ask(server, "malformed_mid", retries=2)
    assert out.reply == FIRST_TWO
    assert out.error.startswith(f"llm: malformed stream from {url}: not JSON: ")
    assert out.error.endswith("(mid-reply)")
    assert len(server.requests) == 1  # never retried once a token is out


def test_a_stream_closed_after_its_headers_is_an_error_not_an_empty_reply(server, url):
    out = ask(server, "close_after_headers", retries=1)
    assert out.error == f"llm: {url} closed the stream without [DONE] (after 2 attempts)"
    assert len(server.requests) == 2


def test_a_connection_dropped_after_the_headers_is_an_error(server, url):
    out = ask(server, "abort_after_headers", retries=0)
    assert out.error.startswith(f"llm: {url}: RemoteProtocolError: ")
    assert out.error.endswith("(after 1 attempt)")
    assert len(server.requests) == 1


def test_a_server_dying_mid_reply_ends_the_turn(server, url):
    out = ask(server, "die_mid_reply", retries=2)
    assert out.reply == FIRST_TWO
    assert out.error.startswith(f"llm: {url}: RemoteProtocolError: ")
    assert out.error.endswith("(mid-reply)")
    assert len(server.requests) == 1


@pytest.mark.parametrize("behaviour", ["hang", "trickle"])
def test_a_silent_server_times_out_on_each_attempt(server, url, behaviour):
    """"trickle" keeps the connection busy with keep-alives and role-only chunks: a
    read timeout alone would never fire, the first-token deadline does."""
    out = ask(server, behaviour, retries=1, first_token_timeout_s=0.5)
    assert out.error == (f"llm: {url}: no token within llm.first_token_timeout_s=0.5 "
                         "(after 2 attempts)")
    assert 1.15 <= out.seconds < 4.0  # 2 x 0.5 s + 0.2 s of backoff, plus start-up
    assert len(server.requests) == 2
    assert None not in wait_for_hang_ups(server)  # the client let go of each attempt


def test_warmup_closes_its_stream_after_one_token(server):
    """Closed by the time warmup returns: the wait below blocks this event loop, so
    nothing left to a finalizer could close it meanwhile."""
    server.script("slow")
    llm = OpenAILLM(OpenAIConfig(base_url=server.base_url, model=MODEL))

    async def main():
        await llm.start()
        await llm.warmup()
        hung_up = wait_for_hang_ups(server)  # (blocking: the server has its own thread)
        await llm.aclose()
        return hung_up
    assert None not in run(main())
    assert server.requests[0].tokens_sent < SLOW_TOKENS


def test_no_key_is_sent_unless_the_config_names_its_variable(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leave")
    assert ask(server, "ok").error is None
    assert "authorization" not in server.requests[0].headers


def test_the_named_variable_gives_the_key(server, monkeypatch):
    monkeypatch.setenv("CASCADE_TEST_KEY", "sk-test")
    assert ask(server, "ok", api_key_env="CASCADE_TEST_KEY").error is None
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
