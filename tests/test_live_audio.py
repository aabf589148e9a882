"""Live sessions through the real audio stack (PyAudio/PortAudio -> ALSA pulse
plugin -> PulseAudio null sinks), with corpus speech as the user."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from eval.speech_bounds import speech_span
from eval.wer import wer
from pipeline.audio import read_wav, write_wav
from pipeline.config import AudioSettings, PipelineSettings
from pipeline.turn import NOT_TAKEN
from stages import whisper_threads
from tests.conftest import DEFAULT_CONFIG, ROOT, rms
from eval.virtual_audio import PulseServer, VirtualRoom


@pytest.fixture
def room(pulse_server):
    r = VirtualRoom(pulse_server)
    yield r
    r.close()


def clip(corpus, cid):
    return next(c for c in corpus if c.id == cid).path


def records(out_dir, name):
    return [json.loads(l) for l in (out_dir / name).read_text().splitlines() if l.strip()]


def played_out(out_dir, turns, timeout):
    """Wait until ``turns`` turns are in the transcript: each is written when its reply
    has played out. Records of utterances not taken as turns (the reply's own echo, a
    backchannel, no new words: the reply goes on) do not count."""
    path, deadline = out_dir / "transcript.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len([t for t in records(out_dir, "transcript.jsonl")
                                  if t["status"] not in NOT_TAKEN]) >= turns:
            return
        time.sleep(0.1)
    raise AssertionError(f"{turns} turn(s) not played out in {timeout} s")


def storyteller_config(tmp_path, extra=""):
    """The default profile with long replies, so that there is something to interrupt
    (the default prompt's replies can be two words, played out before any cut-in)."""
    config = tmp_path / "storyteller.yaml"
    config.write_text(DEFAULT_CONFIG.read_text().replace(
        "model: smollm2-135m-instruct", "model: smollm2-135m-instruct\n  max_tokens: 40\n"
        "  system_prompt: You are a storyteller. Always answer with a long story of three "
        "sentences.\n  primer: []  # its examples are one short sentence") + extra)
    return config


def test_reply_reaches_the_speaker(room, tmp_path, corpus, asr):
    rec = room.record_speaker(tmp_path / "speaker.wav")
    s = room.session(ROOT, tmp_path / "out", DEFAULT_CONFIG)
    s.wait_for("listening: just speak")
    room.say(clip(corpus, "vctk_p238_165"))
    s.wait_for("V2V")
    time.sleep(6)  # let the reply play out
    out = s.stop()
    rec.send_signal(2)
    rec.wait(timeout=5)
    assert "session transcript saved" in out
    # the thread counts Whisper was timed fastest with at load, said before listening
    # (on a machine of two cores or more: one core has nothing to time)
    if whisper_threads.usable_cores() > 1:
        assert re.search(r"asr threads \(asr.cpu_threads: auto, timed at load\): encoder \d+, "
                         r"decoder \d+\n(.*\n)*listening: just speak", out)
    [turn] = records(tmp_path / "out", "transcript.jsonl")
    assert wer(["The arrangement will avoid any conflicts of interest."], [turn["user"]]) < 0.3
    assert turn["status"] == "answered" and turn["assistant"]
    heard = read_wav(tmp_path / "speaker.wav")
    assert rms(heard) > 0.003
    text, _ = asr.transcribe(heard)
    assert wer([turn["assistant"]], [text]) <= 0.3, (turn["assistant"], text)


def reply_words(s, turn_id) -> int:
    """How many words of turn ``turn_id``'s reply the console shows (sent to the speaker)."""
    line = re.search(rf"\[turn {turn_id}\] assistant \(V2V \d+ ms\): ([^\n]*)", s.output)
    return len(line.group(1).split()) if line else 0


def reply_went_on(s, turn_id, timeout=60.0):
    """Wait until a later chunk of turn ``turn_id``'s reply than its first has gone to the
    speaker: its console line holds more words than a first chunk may
    (``pipeline.max_first_words``). That chunk is queued whole: from now on the
    speaker plays for at least its length, however slowly the machine writes the next."""
    most = PipelineSettings().max_first_words
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reply_words(s, turn_id) > most:
            return
        time.sleep(0.02)
    raise AssertionError(f"turn {turn_id}'s reply did not go past its first chunk in "
                         f"{timeout} s; output so far:\n{s.output}")


def from_speech(corpus, cid, out_dir):
    """The clip from 50 ms before its speech (``eval.speech_bounds``) on, a copy in
    ``out_dir``: said into the microphone, it is heard at once."""
    audio = read_wav(clip(corpus, cid))
    start, _ = speech_span(audio)
    path = out_dir / f"{cid}-from-speech.wav"
    write_wav(path, audio[max(0, int((start - 0.05) * 16000)):], 16000)
    return path


def test_barge_in_stops_playback_and_keeps_the_partial_reply(room, tmp_path, corpus):
    s = room.session(ROOT, tmp_path / "out", storyteller_config(tmp_path))
    s.wait_for("listening: just speak")
    room.say(clip(corpus, "ljspeech_LJ001-0002"))
    # interrupt the assistant while it is speaking: a fixed wait after the first chunk
    # fell into a gap between chunks on a loaded machine (the next not yet written),
    # where there was no playback to stop
    barge = from_speech(corpus, "cmusphinx_goforward", tmp_path)
    reply_went_on(s, 1)
    # after the first seconds of this, the session's first reply: the echo gate learns
    # the echo level from them, and speech there becomes that level, its own frames then
    # taken for echo (README, fourteenth session); the reply is far longer
    time.sleep(AudioSettings().aec_converge_s)
    assert reply_words(s, 1) >= 20, s.output
    room.say(barge)
    s.wait_for("V2V", count=2)
    time.sleep(1.0)
    s.stop()
    transcript = records(tmp_path / "out", "transcript.jsonl")
    timeline = records(tmp_path / "out", "timeline.jsonl")
    first = transcript[0]
    assert first["status"] == "interrupted" and first["interrupted"] is True
    assert first["assistant"]  # the part that was played
    stop_ms = timeline[0]["barge_in_stop_ms"]
    print(f"barge-in: playback stopped {stop_ms:.0f} ms after the speech start was detected")
    assert 0 < stop_ms < 300  # it stopped (the measured figure is in the closing note)
    assert "go forward" in transcript[1]["user"].lower()


@pytest.mark.parametrize("echo_mode", ["aec", "half_duplex"])
def test_own_voice_does_not_interrupt_but_the_user_does(room, tmp_path, corpus, echo_mode):
    config = storyteller_config(tmp_path, f"audio:\n  echo: {echo_mode}\n")
    room.add_echo(latency_ms=60, volume_pct=50)  # speaker -> microphone, -6 dB, 60 ms + buffers
    s = room.session(ROOT, tmp_path / "out", config)
    s.wait_for("listening: just speak")
    room.say(clip(corpus, "vctk_p238_165"))
    s.wait_for("V2V")
    # the whole (long) reply plays, and echoes back into the microphone; the turn is
    # written once its reply has played out (a fixed 14 s wait was short for a reply
    # of max_tokens: the user then spoke over its end, and half-duplex dropped the words)
    played_out(tmp_path / "out", turns=1, timeout=40)
    time.sleep(1.0)
    room.say(clip(corpus, "ljspeech_LJ001-0002"))
    s.wait_for("V2V", count=2)
    time.sleep(1.0)
    room.say(clip(corpus, "cmusphinx_goforward"))  # real speech over the echo
    s.wait_for("V2V", count=3)
    time.sleep(1.0)
    s.stop()
    logged = records(tmp_path / "out", "transcript.jsonl")
    # echo the canceller let through, recognized by its words (pipeline.ignore_own_words):
    # logged, not answered, and the reply it stopped resumed
    echoes = [t for t in logged if t["status"] == "echo"]
    print(f"echo heard as words and ignored: {len(echoes)} time(s) {echoes}")
    # "go forward ... ten meters" may also end early at its inner pause and be reopened:
    # logged as "reopened", then answered once, whole (pipeline.endpointing: adaptive)
    reopened = [t for t in logged if t["status"] == "reopened"]
    print(f"early endpoints reopened: {len(reopened)} {reopened}")
    transcript = [t for t in logged if t["status"] not in NOT_TAKEN]
    statuses = [t["status"] for t in transcript]
    # the first reply was heard to its end despite its own echo, and no echo became a turn
    assert statuses[0] == "answered", logged
    assert len(transcript) == 3, transcript
    # the user talking over the second reply interrupted it, and that is the next turn
    assert statuses[1] == "interrupted", transcript
    if echo_mode == "aec":
        assert "go forward" in transcript[2]["user"].lower()
    else:  # no canceller: the recording of the user's words also holds the assistant's voice
        assert "forward" in transcript[2]["user"].lower(), transcript


def run_without_devices(tmp_path, env):
    return subprocess.run([sys.executable, "-m", "pipeline", "run", "--output-dir",
                           str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_no_sound_server_gives_a_clear_message(tmp_path):
    # PulseAudio is installed, but its server is not running (and there is no sound card)
    res = run_without_devices(tmp_path, {**os.environ, "PULSE_SERVER": "unix:/tmp/nonexistent"})
    assert res.returncode == 2, res.stderr
    assert ("error: no audio server or sound card: PulseAudio is installed but not running "
            "(start it with `pulseaudio --start`)") in res.stderr
    assert "python -m pipeline devices" in res.stderr and "--input" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_sound_server_without_sound_card_gives_a_clear_message(tmp_path, pulse_server):
    res = run_without_devices(tmp_path, pulse_server.env)  # no room: no sink, no source
    assert res.returncode == 2, res.stderr
    assert ("error: no audio server or sound card: PulseAudio runs but has no sound card"
            in res.stderr)
    assert "supports none of the usual rates" not in res.stderr
    assert "Traceback" not in res.stderr


def test_a_device_lost_mid_session_ends_it_and_keeps_the_transcript(tmp_path, corpus):
    with PulseServer() as server:  # its own server, to kill
        room = VirtualRoom(server)
        try:
            s = room.session(ROOT, tmp_path / "out", DEFAULT_CONFIG)
            s.wait_for("listening: just speak")
            room.say(clip(corpus, "vctk_p238_165"))
            s.wait_for("V2V")
            time.sleep(6)  # let the reply play out
            server.kill()  # the sound server crashes: both devices are gone
            killed = time.monotonic()
            rc = s.wait(timeout=20)
            took = time.monotonic() - killed
        finally:
            room.close()
    print(f"device lost: the session ended {took:.1f} s after the server was killed")
    assert rc == 2, s.output
    assert "error: audio device lost: the microphone" in s.output
    assert "Traceback" not in s.output
    assert took < 5
    [turn] = records(tmp_path / "out", "transcript.jsonl")
    assert turn["status"] == "answered" and turn["assistant"]
    assert wer(["The arrangement will avoid any conflicts of interest."], [turn["user"]]) < 0.3


def test_the_live_tests_leave_no_sound_server_running(tmp_path):
    """A test session starts its own PulseAudio server and stops it when it ends."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where that server's socket goes
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_live_audio.py", "-k", "without_sound_card"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout
    left = subprocess.run(["pgrep", "-af", f"pulseaudio.*{tmp_path}"], capture_output=True,
                          text=True)
    assert left.returncode == 1, left.stdout  # no such process
    assert not list(tmp_path.glob("cascade-pulse-*"))  # and its directory is gone
