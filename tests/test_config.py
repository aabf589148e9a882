import subprocess
import sys
import textwrap

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelNotFoundError
from tests.conftest import DEFAULT_CONFIG, ROOT

BASE = DEFAULT_CONFIG.read_text()


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path, text):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return str(exc.value)


def test_default_config_loads():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.asr.model == "tiny.en" and cfg.pipeline.stream_tts is True


def test_unknown_key_names_it(tmp_path):
    msg = error_of(tmp_path, BASE + "  beam_sise: 3\n")
    assert "tts.beam_sise: unknown key" in msg


def test_unknown_section(tmp_path):
    assert "pipelin: unknown key" in error_of(tmp_path, BASE + "pipelin: {}\n")


def test_unknown_backend_lists_valid_names(tmp_path):
    msg = error_of(tmp_path, BASE.replace("backend: faster_whisper", "backend: whisperx"))
    assert "asr.backend" in msg and "'whisperx'" in msg and "faster_whisper" in msg


def test_missing_backend(tmp_path):
    assert "vad.backend: missing" in error_of(tmp_path, BASE.replace("backend: silero", ""))


def test_wrong_type_names_key_and_value(tmp_path):
    msg = error_of(tmp_path, BASE + "pipeline:\n  history_token_budget: lots\n")
    assert "pipeline.history_token_budget" in msg and "'lots'" in msg


def test_out_of_range(tmp_path):
    msg = error_of(tmp_path, BASE.replace("backend: silero", "backend: silero\n  threshold: 1.5"))
    assert "vad.threshold" in msg


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        load_config(write(tmp_path, BASE.replace("smollm2-135m-instruct", "/nope/model.gguf")))
    assert "llm.model" in str(exc.value) and "/nope/model.gguf" in str(exc.value)


def test_model_name_needing_download_says_how_to_provide_it(tmp_path):
    msg = error_of(tmp_path, BASE.replace("model: tiny.en", "model: large-v3"))
    assert "asr.model" in msg and "never downloads" in msg and "path" in msg


def test_piper_voice_without_json(tmp_path):
    onnx = tmp_path / "v.onnx"
    onnx.write_bytes(b"x")
    msg = error_of(tmp_path, BASE.replace("voice: en_US-joe-medium", f"voice: {onnx}"))
    assert "tts.voice_config" in msg


def test_malformed_yaml(tmp_path):
    msg = error_of(tmp_path, "asr: {backend: faster_whisper\nllm: [\n")
    assert "malformed YAML" in msg and "line" in msg


def test_top_level_not_a_mapping(tmp_path):
    assert "top level must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_history_budget_and_reply_must_fit_in_the_context_window(tmp_path):
    text = BASE.replace("backend: llama_cpp", "backend: llama_cpp\n  n_ctx: 512\n  max_tokens: 64")
    msg = error_of(tmp_path, text + "pipeline:\n  history_token_budget: 480\n")
    assert ("pipeline.history_token_budget (480) + llm.max_tokens (64) = 544 tokens do not fit "
            "in llm.n_ctx (512)") in msg
    assert "lower history_token_budget or max_tokens, or raise n_ctx" in msg
    assert load_config(write(tmp_path, text + "pipeline:\n  history_token_budget: 448\n"))
    # without truncation the budget bounds nothing
    assert load_config(write(tmp_path, text + "pipeline:\n  history_token_budget: 480\n"
                                              "  truncate_prompt: false\n"))
    # a backend without a context window of its own (a server) is not checked
    server = BASE.replace("backend: llama_cpp", "backend: openai").replace(
        "model: smollm2-135m-instruct", "model: any\n  base_url: http://127.0.0.1:8000/v1")
    assert load_config(write(tmp_path, server + "pipeline:\n  history_token_budget: 100000\n"))


@pytest.mark.parametrize("text", ["", "# nothing here yet\n\n# still nothing\n"])
def test_empty_config_file(tmp_path, text):
    path = write(tmp_path, text)
    msg = error_of(tmp_path, text)
    assert msg.startswith(f"{path}: the config file is empty; it needs the sections "
                          "vad, asr, llm, tts"), msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_validation_loads_no_model_or_heavy_package():
    code = ("import sys; from pipeline.config import load_config; "
            f"load_config({str(DEFAULT_CONFIG)!r}); "
            "heavy = [m for m in ('llama_cpp', 'faster_whisper', 'ctranslate2', 'piper', "
            "'onnxruntime') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_reports_config_error_cleanly(tmp_path):
    bad = write(tmp_path, BASE.replace("backend: piper", "backend: nope"))
    res = subprocess.run([sys.executable, "-m", "pipeline", "config", "--config", str(bad)],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert "tts.backend: unknown backend 'nope'; valid names: coqui, espeak, piper" in res.stderr
    assert "Traceback" not in res.stderr
