"""The whole pipeline on real speech with the real bundled models, in file mode."""
import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from eval.wer import wer
from pipeline.audio import read_wav, resample, write_wav
from pipeline.errors import AudioInputError
from pipeline.timeline import PHASES, phases_in_order
from tests.conftest import ROOT, rms

import pytest


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def clip(corpus, cid):
    return next(c for c in corpus if c.id == cid)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_two_utterances_give_two_answered_turns(tmp_path, corpus):
    a = read_wav(clip(corpus, "ljspeech_LJ001-0002").path)
    b = read_wav(clip(corpus, "cmusphinx_goforward").path)
    silence = np.zeros(int(1.5 * 16000), np.float32)
    gap = np.zeros(int(3.0 * 16000), np.float32)  # time for the first reply to start on a busy machine
    wav = tmp_path / "conversation_in.wav"
    write_wav(wav, np.concatenate([silence, a, gap, b]), 16000)
    out = tmp_path / "out"
    res = run_cli("--input", str(wav), "--output-dir", str(out), "--fast")
    assert res.returncode == 0, res.stderr
    assert "ready in" in res.stdout and "V2V" in res.stdout
    assert "error" not in res.stdout + res.stderr

    transcript = read_jsonl(out / "transcript.jsonl")
    timeline = read_jsonl(out / "timeline.jsonl")
    assert len(transcript) == 2 and len(timeline) == 2
    assert wer([clip(corpus, "ljspeech_LJ001-0002").text], [transcript[0]["user"]]) < 0.3
    assert wer([clip(corpus, "cmusphinx_goforward").text], [transcript[1]["user"]]) < 0.3
    for turn in transcript:
        # answered aloud; the first reply may be cut by the second utterance (barge-in)
        assert turn["status"] in ("answered", "interrupted")
        assert turn["assistant"].strip()
    assert transcript[1]["status"] == "answered"
    for rec in timeline:
        times = [rec[p] for p in PHASES]
        assert None not in times, rec
        assert phases_in_order(rec), rec
        assert rec["v2v_ms"] == pytest.approx((rec["playback_start"] - rec["user_speech_end"]) * 1000, abs=0.2)
    # the turns are where the utterances are
    assert 1.5 < timeline[0]["user_speech_end"] < 1.5 + len(a) / 16000 + 0.3
    assert timeline[1]["user_speech_end"] > 4.5 + len(a) / 16000

    stereo, rate = sf.read(out / "conversation.wav", dtype="float32")
    assert stereo.ndim == 2 and stereo.shape[1] == 2
    assert rms(stereo[:, 1]) > 0.005  # the assistant spoke
    # the right channel is silent before the first reply starts
    assert rms(stereo[: int(timeline[0]["playback_start"] * rate) - 10, 1]) == 0.0


def test_reply_audio_matches_reply_text(tmp_path, corpus, asr):
    wav = clip(corpus, "ljspeech_LJ001-0002").path
    out = tmp_path / "out"
    res = run_cli("--input", str(wav), "--output-dir", str(out), "--fast")
    assert res.returncode == 0, res.stderr
    turns = read_jsonl(out / "transcript.jsonl")
    assert len(turns) == 1, (turns, read_jsonl(out / "timeline.jsonl"))
    [turn] = turns
    assert turn["status"] == "answered" and turn["assistant"]
    stereo, rate = sf.read(out / "conversation.wav", dtype="float32")
    reply = resample(np.ascontiguousarray(stereo[:, 1]), rate, 16000)
    heard, _ = asr.transcribe(reply)
    assert wer([turn["assistant"]], [heard]) <= 0.25, (turn["assistant"], heard)


def test_input_of_any_rate_and_stereo_is_accepted(tmp_path, corpus):
    mono = read_wav(clip(corpus, "cmusphinx_goforward").path)
    stereo44 = np.stack([resample(mono, 16000, 44100)] * 2, axis=1)
    p = tmp_path / "s.wav"
    sf.write(p, stereo44, 44100)
    back = read_wav(p)
    assert abs(len(back) - len(mono)) < 50
    assert np.corrcoef(back[:len(mono) - 50], mono[:len(mono) - 50])[0, 1] > 0.99


def test_bad_audio_input_names_the_file(tmp_path):
    p = tmp_path / "four.wav"
    sf.write(p, np.zeros((1600, 4), np.float32), 16000)
    assert len(read_wav(p)) == 1600  # channels are averaged (tests/test_bad_input.py)
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    with pytest.raises(AudioInputError, match="junk.wav: not a readable audio file"):
        read_wav(junk)
    res = run_cli("--input", str(junk), "--output-dir", str(tmp_path / "o"))
    assert res.returncode == 2 and "junk.wav" in res.stderr and "Traceback" not in res.stderr


def test_silence_gives_no_turn(tmp_path):
    p = tmp_path / "silence.wav"
    write_wav(p, np.zeros(3 * 16000, np.float32), 16000)
    res = run_cli("--input", str(p), "--output-dir", str(tmp_path / "o"), "--fast")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "transcript.jsonl").read_text() == ""
    assert (tmp_path / "o" / "conversation.wav").is_file()


@pytest.mark.parametrize("profile", [[], ["--fast"]], ids=["piper", "espeak"])
def test_the_reply_is_heard_from_its_first_sample(tmp_path, corpus, asr, profile):
    """pipeline.trim_tts_silence: the voice's own lead-in silence is cut, so the reply's
    first audible sample (first_sound) comes within chunk_lead_ms of playback_start, as
    the output file shows; and the trimmed chunks, the first one cut after
    max_first_words, still say the whole reply."""
    from pipeline.config import PipelineSettings
    lead_ms, silence_db = PipelineSettings().chunk_lead_ms, PipelineSettings().tts_silence_db
    out = tmp_path / "out"
    res = run_cli("--input", str(clip(corpus, "cmusphinx_goforward").path),
                  "--output-dir", str(out), *profile)
    assert res.returncode == 0, res.stderr
    [rec] = read_jsonl(out / "timeline.jsonl")
    assert rec["status"] == "answered"
    assert 0 <= (rec["first_sound"] - rec["playback_start"]) * 1000 <= lead_ms + 0.2
    stereo, rate = sf.read(out / "conversation.wav", dtype="float32")
    loud = np.flatnonzero(np.abs(stereo[:, 1]) > 10 ** (silence_db / 20))
    assert abs(loud[0] / rate - rec["first_sound"]) < 0.002, (loud[0] / rate, rec)
    [turn] = read_jsonl(out / "transcript.jsonl")
    reply = resample(np.ascontiguousarray(stereo[:, 1]), rate, 16000)
    heard, _ = asr.transcribe(reply)
    assert wer([turn["assistant"]], [heard]) <= 0.25, (turn["assistant"], heard)
