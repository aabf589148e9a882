"""Every profile that can run on this machine passes `check` and an end-to-end
file-mode conversation; the GPU profile is validated and reports that no server
answers at its URL."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from eval.wer import wer
from pipeline.audio import read_wav, resample, write_wav
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.events import Sentence, SpeechEnded
from pipeline.languages import system_prompt
from tests.conftest import ROOT, aiter_of, collect, rms, run
from tests.llama_server import LlamaServer

CPU_PROFILES = ["default", "multilingual", "fast", "server", "quality"]


@pytest.fixture(scope="module")
def llama_server():
    s = LlamaServer(port=8080).start()  # configs/server.yaml points here
    yield s
    s.kill()


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("profile", CPU_PROFILES)
def test_profile_passes_check_and_a_conversation(profile, tmp_path, corpus, request):
    if profile == "server":
        request.getfixturevalue("llama_server")
    config = f"configs/{profile}.yaml"
    res = cli("check", "--config", config)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all stages ok" in res.stdout and res.stdout.count(" ok: load ") == 4

    clip = next(c for c in corpus if c.id == "vctk_p238_165")
    wav = tmp_path / "in.wav"
    write_wav(wav, np.concatenate([np.zeros(8000, np.float32), read_wav(clip.path)]), 16000)
    res = cli("run", "--config", config, "--input", str(wav), "--output-dir", str(tmp_path / "o"),
              "--fast")
    assert res.returncode == 0, res.stdout + res.stderr
    [turn] = [json.loads(l) for l in (tmp_path / "o" / "transcript.jsonl").read_text().splitlines()]
    assert turn["status"] == "answered" and turn["assistant"]
    assert wer([clip.text], [turn["user"]]) < 0.3


def test_gpu_profile_is_valid_and_says_no_server_answers():
    load_config(ROOT / "configs" / "gpu-vllm.yaml")
    res = cli("check", "--config", "configs/gpu-vllm.yaml")
    assert res.returncode == 1
    assert "no server answers at http://127.0.0.1:8000/v1" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_espeak_round_trip(default_config, asr):
    from stages.tts_espeak import EspeakConfig, EspeakTTS
    tts = EspeakTTS(EspeakConfig())
    run(tts.start())
    text = "Please call Stella and ask her to bring these things with her from the store."
    [chunk] = run(collect(tts.process(aiter_of([Sentence(1, 0.0, text, 0)]))))
    assert rms(chunk.samples) > 0.01
    heard, _ = asr.transcribe(resample(chunk.samples, chunk.sample_rate, 16000))
    assert wer([text], [heard]) <= 0.35, heard


def test_espeak_speaks_text_that_looks_like_an_option(asr):
    """As an argument, "-5 degrees" was an unknown option (an error) and "--help"
    gave the help text instead of a WAV; the text goes through stdin now."""
    from stages.tts_espeak import EspeakConfig, EspeakTTS
    tts = EspeakTTS(EspeakConfig())
    run(tts.start())
    audio = tts.synthesize("-5 degrees outside today.")
    heard, _ = asr.transcribe(resample(audio, tts.sample_rate, 16000))
    assert wer(["minus 5 degrees outside today"], [heard]) <= 0.25, heard
    assert rms(tts.synthesize("--help")) > 0.01


def test_espeak_that_hangs_times_out_with_a_clear_error(tmp_path):
    from stages.tts_espeak import EspeakConfig, EspeakTTS
    hung = tmp_path / "espeak-ng"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    tts = EspeakTTS(EspeakConfig(executable=str(hung), timeout_s=0.5))
    run(tts.start())
    t0 = time.perf_counter()
    with pytest.raises(StageError, match=r"tts: espeak-ng timed out after 0.5 s \(tts.timeout_s\)"):
        run(collect(tts.process(aiter_of([Sentence(1, 0.0, "Hello there.", 0)]))))
    assert time.perf_counter() - t0 < 5


def test_multilingual_base_detects_language_and_transcribes(corpus):
    from stages.asr_faster_whisper import FasterWhisperASR, FasterWhisperConfig
    asr = FasterWhisperASR(FasterWhisperConfig(model="base", language=None))
    run(asr.start())
    refs, hyps = [], []
    for clip in corpus[:10]:
        [t] = run(collect(asr.process(aiter_of([SpeechEnded(1, 0.0, 0.0, read_wav(clip.path))]))))
        assert t.language == "en"
        refs.append(clip.text)
        hyps.append(t.text)
    assert wer(refs, hyps) < 0.2


def test_split_model_is_assembled_once_with_its_size_checked(tmp_path):
    from stages.asr_faster_whisper import resolve_model
    folder = resolve_model("base", cache_dir=str(tmp_path), assemble=True)
    size = (folder / "model.bin").stat().st_size
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert size == 145217532
    again = resolve_model("base", cache_dir=str(tmp_path), assemble=True)
    assert again == folder and (folder / "model.bin").stat().st_mtime_ns == mtime  # reused
    (folder / "model.bin").write_bytes(b"truncated")
    resolve_model("base", cache_dir=str(tmp_path), assemble=True)  # a bad copy is redone
    assert (folder / "model.bin").stat().st_size == size


def test_reply_language_follows_the_user():
    assert system_prompt("Be brief.", "en") == "Be brief."
    assert system_prompt("Be brief.", "fr") == "Be brief. The user speaks French: reply in French."
