"""A model file that exists but cannot be loaded (garbage, the wrong kind of
model) gives a clear error naming the YAML key and the file, not a traceback
from the library that failed."""
import re
import subprocess
import sys

import pytest

from pipeline.errors import ModelNotFoundError
from pipeline.stages import build_stages
from tests.conftest import ROOT, run


def piper_voice():
    from stages.tts_piper import resolve_voice
    return resolve_voice("en_US-joe-medium")


def garbage(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 64)
    return path


# kind -> (the config's section pointing at a garbage file, the error it must give)
CASES = {
    "llm": (lambda p: {"model": str(p), "requantize": None}, "x.gguf",
            r"llm\.model: {path} could not be loaded by llama\.cpp \(.+\): is it a GGUF chat "
            r"model\?"),
    "tts": (lambda p: {"voice": str(p), "voice_config": f"{piper_voice()}.json"}, "voice.onnx",
            # tts.stream_decode reads the graph with the onnx package first
            r"tts\.voice: {path} could not be (loaded by ONNX Runtime|read as an ONNX graph) "
            r"\(.+\): is it a Piper \.onnx voice\?"),
    "vad": (lambda p: {"model": str(p)}, "vad.onnx",
            r"vad\.model: {path} could not be loaded by ONNX Runtime \(.+\): is it a Silero VAD "
            r"\.onnx model\?"),
}


def corrupt(default_config, tmp_path, kind):
    section, name, message = CASES[kind]
    path = garbage(tmp_path, name)
    config = default_config.replace(**{kind: section(path)})
    return config, message.format(path=re.escape(str(path)))


@pytest.mark.parametrize("kind", CASES)
def test_a_corrupt_model_file_names_its_key_and_file(default_config, tmp_path, kind):
    config, message = corrupt(default_config, tmp_path, kind)
    stage = getattr(build_stages(config), kind)
    with pytest.raises(ModelNotFoundError, match=message):
        run(stage.start())


def test_a_corrupt_gguf_to_requantize_names_its_key_and_file(default_config, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path / "cache"))
    path = garbage(tmp_path, "x.gguf")
    config = default_config.replace(llm={"model": str(path), "requantize": "q8_0"},
                                    pipeline={"warmup": False})
    with pytest.raises(ModelNotFoundError, match=(
            rf"llm\.model: {re.escape(str(path))} could not be converted to q8_0 by llama\.cpp "
            r"\(llm\.requantize; code \d+\): is it a GGUF chat model\?")):
        run(build_stages(config).llm.start())
    assert not list((tmp_path / "cache").rglob("*.gguf*"))  # no half-written copy left behind


def test_a_cache_that_cannot_be_written_names_the_key_and_the_way_out(tmp_path, monkeypatch):
    from stages.llm_llama_cpp import requantized, resolve_model

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache would have to be made inside a file
    monkeypatch.setenv("CASCADE_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelNotFoundError, match=r"llm\.requantize: cannot write the q8_0 copy "
                       r"of .+ \(.+\); set CASCADE_CACHE to a writable folder, or "
                       r"llm\.requantize: null"):
        requantized(resolve_model("smollm2-135m-instruct"), "q8_0")


def test_a_model_of_the_wrong_kind_for_the_vad(default_config):
    config = default_config.replace(vad={"model": str(piper_voice())})  # a valid ONNX, not Silero
    with pytest.raises(ModelNotFoundError, match=r"vad\.model: .*en_US-joe-medium\.onnx has the "
                       r"inputs \['input', 'input_lengths', 'scales'\], not those of Silero VAD"):
        run(build_stages(config).vad.start())


@pytest.mark.parametrize("kind", CASES)
def test_the_cli_reports_a_corrupt_model_without_a_traceback(default_config, tmp_path, corpus,
                                                             kind):
    import yaml

    config, message = corrupt(default_config, tmp_path, kind)
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(yaml.safe_dump(config.to_dict()))
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(yaml_path),
                          "--input", str(corpus[0].path), "--output-dir", str(tmp_path / "o"),
                          "--fast"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert re.search("error: " + message, res.stderr), res.stderr
    assert "Traceback" not in res.stderr
