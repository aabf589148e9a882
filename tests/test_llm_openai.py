"""The `openai` backend against a real OpenAI-compatible server."""
import asyncio
import time

import numpy as np
import pytest

from pipeline import clock as clock_mod
from pipeline.console import Console
from pipeline.errors import StageError
from pipeline.events import ChatMessage, LLMRequest
from pipeline.orchestrator import Orchestrator, Stages
from pipeline.session_log import SessionLog
from pipeline.sinks import FileSink
from stages.llm_openai import OpenAIConfig, OpenAILLM
from tests.conftest import aiter_of, collect, run
from tests.fault_server import MODEL as FAULT_MODEL
from tests.fault_server import SLOW_TOKENS, FaultServer
from tests.fakes import FakeASR, FakeTTS, ScriptedVAD, run_session
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


def test_server_killed_mid_reply_session_goes_on(default_config, tmp_path):
    """Turn 1: the server dies while it is streaming the reply -> that turn ends
    with a clear error; the server comes back; turn 2 is answered; the
    transcript keeps both."""
    server = LlamaServer().start()

    class KillingTTS(FakeTTS):
        async def process(self, events):
            async for s in events:
                if s.turn_id == 1 and s.index == 0:
                    server.kill()  # mid-reply: the LLM is still writing
                    self.texts.append((0, s.text))
                    yield await self._chunk(s)
                    await asyncio.to_thread(server.start)  # back for the next turn
                else:
                    self.texts.append((0, s.text))
                    yield await self._chunk(s)

        async def _chunk(self, s):
            from pipeline.events import AudioChunk
            n = int(len(s.text.split()) * 0.3 * 16000)
            return AudioChunk(s.turn_id, clock_mod.now(), samples=np.full(n, 0.1, np.float32),
                              sample_rate=16000, sentence_index=s.index, text=s.text)

    config = default_config.replace(pipeline={"speculative": False})
    llm = stage(server.base_url, system_prompt=LONG, max_tokens=120)
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0), (30.0, 31.0)]), asr=FakeASR(), llm=llm,
                    tts=KillingTTS())
    log = SessionLog(tmp_path)
    orch = Orchestrator(config, stages, FileSink(16000), log, Console(quiet=True))
    try:
        run_session(orch, 40.0)
    finally:
        server.kill()
    first, second = log.transcript
    assert first["status"] == "error"
    assert "llm:" in first["error"] and "mid-reply" in first["error"]
    assert first["assistant"]  # what was spoken before the failure is kept
    assert first["user"] == "hello 1"
    assert second["status"] == "answered" and second["assistant"]
    lines = (tmp_path / "transcript.jsonl").read_text().splitlines()
    assert len(lines) == 2
