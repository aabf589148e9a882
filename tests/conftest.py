"""Shared fixtures: the real bundled models, loaded once per test session."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402,F401 - its thread settings (OpenBLAS), before numpy loads
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from eval.corpus import load_manifest  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.events import stream_of  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"


def run(coro):
    return asyncio.run(coro)


async def collect(aiter):
    return [x async for x in aiter]


def aiter_of(items):
    return stream_of(*items)


@pytest.fixture(scope="session")
def corpus():
    return load_manifest()


@pytest.fixture(scope="session")
def default_config():
    return load_config(DEFAULT_CONFIG)


def _started(stage):
    asyncio.run(stage.start())
    return stage


@pytest.fixture(scope="session")
def pulse_server():
    """The live tests' own PulseAudio server, stopped when they end: nothing is left
    running, and the user's sound server is never touched."""
    from eval.virtual_audio import PulseServer
    with PulseServer() as server:
        yield server


@pytest.fixture(scope="session")
def asr(default_config):
    from stages.asr_faster_whisper import FasterWhisperASR
    return _started(FasterWhisperASR(default_config.asr))


@pytest.fixture(scope="session")
def llm(default_config):
    from stages.llm_llama_cpp import LlamaCppLLM
    return _started(LlamaCppLLM(default_config.llm))


@pytest.fixture(scope="session")
def tts(default_config):
    from stages.tts_piper import PiperTTS
    return _started(PiperTTS(default_config.tts))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
