"""The `openai` backend against real servers: llama.cpp's OpenAI-compatible server, and
the scripted fault server (tests/fault_server.py) where the server's side must be
observed (a closed connection) or controlled (a kill at a known point)."""
import asyncio
import time

import numpy as np
import pytest

from pipeline.clock import Clock
from pipeline.errors import StageError
from pipeline.events import ChatMessage, LLMRequest
from pipeline.filemode import file_frames
from pipeline.stages import Stages
from stages.llm_openai import OpenAIConfig, OpenAILLM
from tests.conftest import aiter_of, collect, run
from tests.fault_server import MODEL as FAULT_MODEL
from tests.fault_server import SLOW_TOKENS, FaultServer
from tests.fakes import FakeASR, FakeTTS, ScriptedVAD, fake_session
from tests.llama_server import ALIAS, LlamaServer, free_port

LONG = "You are a storyteller. Always answer with a long story of three sentences."


@pytest.fixture(scope="module")
def server():
    s = LlamaServer().start()
    yield s
    s.kill()


def stage(base_url, **kw):
    return OpenAILLM(OpenAIConfig(base_url=base_url, model=ALIAS, **kw))


def test_streams_a_reply_token_by_token(server):
    async def main():
        llm = stage(server.base_url)
        await llm.start()
        msgs = (ChatMessage("system", llm.config.system_prompt),
                ChatMessage("user", "What is the capital of France?"))
        deltas = await collect(llm.process(aiter_of([LLMRequest(1, 0.0, msgs)])))
        await llm.aclose()
        return deltas
    deltas = run(main())
    assert len(deltas) > 2
    assert "paris" in "".join(d.text for d in deltas).lower()


def test_no_server_is_a_clear_error():
    port = free_port()
    with pytest.raises(StageError, match=f"no server answers at http://127.0.0.1:{port}/v1"):
        run(stage(f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.5).start())


def test_cancellation_closes_the_stream_at_once():
    """A barge-in cancels the turn's task: the server sees the client hang up at
    once, long before its (slow, 5 s) reply is over. Observed on the server side,
    before the client is closed (closing it would end every connection anyway)."""
    fault = FaultServer().start()

    async def main():
        llm = OpenAILLM(OpenAIConfig(base_url=fault.base_url, model=FAULT_MODEL))
        await llm.start()
        msgs = (ChatMessage("system", LONG), ChatMessage("user", "Tell me about the sea."))
        got = []

        async def consume():
            async for d in llm.process(aiter_of([LLMRequest(1, 0.0, msgs)])):
                got.append(d)
        fault.script("slow")
        task = asyncio.create_task(consume())
        async with asyncio.timeout(5.0):
            while len(got) < 3:
                await asyncio.sleep(0.005)
        cancelled_at = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        elapsed = time.monotonic() - cancelled_at
        [req] = fault.requests
        while req.hung_up_at is None and time.monotonic() < cancelled_at + 2.0:
            await asyncio.sleep(0.01)
        await llm.aclose()
        return cancelled_at, elapsed, req
    try:
        cancelled_at, elapsed, req = run(main())
    finally:
        fault.stop()
    assert elapsed < 0.5
    assert req.hung_up_at is not None, "the HTTP stream stayed open after cancellation"
    assert req.hung_up_at - cancelled_at < 0.5
    assert req.tokens_sent < SLOW_TOKENS


def run_real_time(session, seconds: float, tail_s: float = 0.5) -> None:
    """fakes.run_session on a real event loop (a fast clock that skips idle input): a
    real HTTP client's timeouts would fire at once on the virtual-time loop."""
    async def main():
        async with session:
            clk = Clock(fast=True)
            await session.run(file_frames(np.zeros(int(seconds * 16000), np.float32), clk,
                                          lambda: session.busy, tail_s=tail_s), clk)
    run(main())


def test_server_killed_mid_reply_session_goes_on(default_config, tmp_path):
    """Turn 1: the server goes down while it is streaming the reply -> that turn ends
    with a clear error; the server comes back on the same port; turn 2 is answered;
    the transcript keeps both. (The fault server's reply is slow, 5 s, so the kill
    is mid-reply however fast the rest of the pipeline runs.)"""
    fault = FaultServer().start().script("slow")

    class KillingTTS(FakeTTS):
        async def speak(self, s):
            if s.turn_id == 1 and s.index == 0:
                await asyncio.to_thread(fault.stop)  # mid-reply: the LLM is still writing
                fault.script("ok")
                await asyncio.to_thread(fault.start)  # back for the next turn
            return await super().speak(s)

    config = default_config.replace(pipeline={"speculative": False, "warmup": False})
    llm = OpenAILLM(OpenAIConfig(base_url=fault.base_url, model=FAULT_MODEL))
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0), (30.0, 31.0)]), asr=FakeASR(), llm=llm,
                    tts=KillingTTS())
    session = fake_session(config, stages, tmp_path)
    try:
        run_real_time(session, 40.0)
    finally:
        fault.stop()
    first, second = session.log.transcript
    assert first["status"] == "error"
    assert first["error"].startswith(f"llm: {fault.base_url}/chat/completions: ")
    assert first["error"].endswith("(mid-reply)")
    assert first["assistant"]  # what was spoken before the failure is kept
    assert first["user"] == "hello 1"
    assert second["status"] == "answered" and second["assistant"]
    assert [r.behaviour for r in fault.requests] == ["ok"]  # turn 2, after the restart
    lines = (tmp_path / "transcript.jsonl").read_text().splitlines()
    assert len(lines) == 2
