"""Stopping a session (Ctrl-C, SIGTERM) in every phase: the turn in progress is
recorded as cut, the transcript is complete, the exit code says what happened, and
no thread or child process is left behind."""
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.audio import read_wav, write_wav
from pipeline.clock import Clock
from pipeline.filemode import file_frames
from pipeline.stages import Stages
from tests.conftest import ROOT
from tests.fakes import FakeASR, FakeLLM, FakeTTS, ScriptedVAD, fake_session
from tests.virtual_time import run_virtual

# One utterance 1.0-2.0 s, no speculation: endpoint 2.304, ASR until 2.404, LLM first
# token 2.454, TTS 2.494-2.534, playback from 2.534 for about 3.6 s.
PHASES = {"listening": 0.5, "asr": 2.35, "llm": 2.44, "tts": 2.51, "playback": 3.5}


@pytest.mark.parametrize("phase", PHASES)
def test_a_session_cancelled_in_each_phase_records_what_happened(default_config, tmp_path,
                                                                 phase):
    config = default_config.replace(pipeline={"speculative": False})
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0)]), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())
    session = fake_session(config, stages, out_dir=tmp_path)
    threads_before = set(threading.enumerate())

    async def main():
        async def converse():
            async with session:
                clk = Clock(source=asyncio.get_running_loop().time)
                await session.run(file_frames(np.zeros(16000 * 8, np.float32), clk,
                                              lambda: session.busy), clk)
        task = asyncio.create_task(converse())
        await asyncio.sleep(PHASES[phase])
        task.cancel()  # what SIGTERM and Ctrl-C do
        await asyncio.wait([task])
        return task.cancelled()

    assert run_virtual(main())
    lines = [json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    if phase == "listening":
        assert lines == []
    else:
        [turn] = lines
        assert turn["status"] == "interrupted" and turn["interrupted"] is True
        assert turn["user"] == "hello 1"  # cut during its ASR: transcribed on the way out
        expected = {"asr": "", "llm": "", "tts": "", "playback": "Sure thing. I can help with that."}
        assert turn["assistant"] == expected[phase]
        history = session.orchestrator.history
        assert [m.role for m in history] == (["user", "assistant"] if expected[phase] else [])
    assert set(threading.enumerate()) <= threads_before  # every stage thread has ended


def two_clip_wav(tmp_path, corpus):
    a = read_wav(next(c for c in corpus if c.id == "ljspeech_LJ001-0002").path)
    b = read_wav(next(c for c in corpus if c.id == "cmusphinx_goforward").path)
    gap = np.zeros(int(4.0 * 16000), np.float32)
    wav = tmp_path / "in.wav"
    write_wav(wav, np.concatenate([gap[:16000], a, gap, b, gap]), 16000)
    return wav


def processes_marked(mark: str) -> list[int]:
    """Live processes whose environment holds CASCADE_TEST_MARK=mark: the session and
    anything it started, even once reparented."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = open(f"/proc/{entry}/environ", "rb").read()
            except OSError:
                continue
            if f"CASCADE_TEST_MARK={mark}".encode() in env.split(b"\0"):
                found.append(int(entry))
    return found


@pytest.mark.parametrize("sig,code,wait_for", [
    (signal.SIGTERM, 143, "loading models"),  # while the models load
    (signal.SIGTERM, 143, "replaying"),  # listening
    (signal.SIGTERM, 143, "V2V"),  # the first reply is playing
    (signal.SIGINT, 130, "V2V"),
])
def test_the_cli_stops_cleanly_on_a_signal(tmp_path, corpus, sig, code, wait_for):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--input",
                             str(two_clip_wav(tmp_path, corpus)), "--output-dir", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1",
                                 "CASCADE_TEST_MARK": tmp_path.name})
    chunks = []  # stdout as it comes, not line by line (the reply's line stays open)
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(
        proc.stdout.fileno(), 4096).decode(errors="replace"), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while wait_for not in "".join(chunks) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wait_for in "".join(chunks), "".join(chunks)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    reader.join(timeout=5)
    err = proc.stderr.read()
    assert proc.returncode == code, ("".join(chunks), err)
    assert "Traceback" not in err
    assert "stopped" in err
    assert processes_marked(tmp_path.name) == []  # nothing it started is left running
    if wait_for == "V2V":  # the turn being played is in the transcript, with its reply
        [turn] = [json.loads(line) for line in
                  (out / "transcript.jsonl").read_text().splitlines()]
        assert turn["user"] and turn["assistant"]
        assert turn["status"] in ("answered", "interrupted")
        assert (out / "conversation.wav").stat().st_size > 0


def test_sigusr1_prints_where_each_task_waits(capsys):
    # the diagnostics of a hang: a task suspended inside an ``async for`` over an async
    # generator shows the generator's own await, which the task's chain cannot reach
    from pipeline.__main__ import _print_tasks

    async def frames():
        await asyncio.Event().wait()  # never set: the generator waits here
        yield 1

    async def consume():
        async for _ in frames():
            pass

    async def main():
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)
        _print_tasks()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    err = capsys.readouterr().err
    assert "coro=<test_sigusr1_prints_where_each_task_waits.<locals>.consume()" in err, err
    # the generator's chain reaches the event it waits on
    assert re.search(r"--- a suspended async generator\n\s+\S+ frames\n\s+\S+locks.py:\d+ wait",
                     err), err


@pytest.mark.parametrize("ticks", range(6))
def test_a_cancel_as_a_frame_arrives_stops_the_frame_loop(ticks):
    # Ctrl-C cancels the session's task; with asyncio.wait_for (Python 3.11) around the
    # microphone queue, a cancel that came just as a frame was queued was lost and the
    # live session ran on (ticks 0-2 lost it there). ``get_within`` loses none.
    from pipeline.waits import get_within

    async def main():
        queue, got = asyncio.Queue(), []

        async def frame_loop():
            while True:
                with contextlib.suppress(TimeoutError):
                    got.append(await get_within(queue, 5.0))

        task = asyncio.ensure_future(frame_loop())
        await asyncio.sleep(0)
        queue.put_nowait("frame")
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        stopped = task.done() and task.cancelled()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stopped, got, queue.qsize()

    stopped, got, left = asyncio.run(main())
    assert stopped
    assert len(got) + left == 1  # the frame was taken or is still queued, never dropped


def test_the_time_limit_leaves_the_queue_as_it_was():
    from pipeline.waits import get_within

    async def main():
        queue = asyncio.Queue()
        with pytest.raises(TimeoutError):
            await get_within(queue, 0.01)
        queue.put_nowait(1)
        return await get_within(queue, 0.01)

    assert asyncio.run(main()) == 1
