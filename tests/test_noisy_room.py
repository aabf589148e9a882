"""A noisy room, where Silero hears the noise (babble, a cafe) as speech and never hears
the user stop: the words stall (``pipeline.words_stall_s``), the VAD closes the utterance
there and learns the room (``vad.room_margin_db``). Real Silero on real noisy clips
(Valentini: VCTK speech with recorded noise), real models end to end in file mode."""
from __future__ import annotations

import asyncio
import json

import numpy as np

from eval.room import rooms, score
from eval.speech_bounds import clip_noise, speech_span
from pipeline.audio import read_wav, write_wav
from pipeline.console import Console
from pipeline.events import AudioFrame, SpeechEnded, SpeechStarted
from pipeline.filemode import run_file
from pipeline.stall import WordStall

ROOM = "vctk-valentini_p287_001"  # "Please call Stella." in a room at 12.8 dB SNR


def test_the_words_stall_when_they_gain_at_most_one_over_the_set_speech():
    w = WordStall(2.5, 0.64)
    assert [w.heard(1, t, n) for t, n in ((1.0, 2), (1.64, 4), (2.28, 6), (2.92, 7))] == [None] * 4
    assert w.heard(1, 3.56, 7) is None and w.heard(1, 4.2, 7) is None
    # 2.5 s after the partial with 6 words, 7: stalled; the 7th word showed at 2.92
    assert w.heard(1, 4.84, 7) == 2.92 + 0.64
    # growing by two over the same speech is no stall
    w = WordStall(2.5, 0.64)
    for t, n in ((1.0, 3), (1.64, 4), (2.28, 4), (2.92, 5)):
        assert w.heard(1, t, n) is None
    assert w.heard(1, 3.56, 5) is None


def test_a_lagging_partial_a_guard_refusal_and_a_pause_are_not_a_stall():
    # the corpus's slowest partials (libritts 5895): four at 12 words over 1.92 s, then 19
    w = WordStall(2.5, 0.64)
    seq = [(3.07, 10), (3.71, 12), (4.35, 12), (4.99, 12), (5.63, 12), (6.27, 19)]
    assert [w.heard(7, t, n) for t, n in seq] == [None] * len(seq)
    # no words (the guard refused the partial): not counted, so 1 word is no stall
    w = WordStall(2.5, 0.64)
    assert w.heard(2, 1.0, 0) is None and w.heard(2, 3.6, 1) is None
    # speech resumed after a pause: the counts before it are forgotten, and a partial of
    # the audio before the resume, decoded late, is not counted either
    w = WordStall(2.5, 0.64)
    w.heard(3, 1.0, 5)
    w.forget(since=3.0)
    assert w.heard(3, 2.9, 5) is None
    assert w.heard(3, 4.0, 6) is None and w.heard(3, 5.0, 6) is None
    assert w.heard(3, 6.5, 6) == 4.0 + 0.64  # 2.5 s after 4.0, counted from the resume
    # a new utterance starts its own counts: 5 words 3 s after 5 words of another is none
    w = WordStall(2.5, 0.64)
    w.heard(3, 1.0, 5)
    assert w.heard(4, 4.0, 5) is None


def test_an_over_counted_partial_does_not_hide_the_words_growing():
    # one partial over-counts (12), then the words grow by two a partial: no stall
    w = WordStall(2.5, 0.64)
    seq = [(1.64, 12), (2.28, 4), (2.92, 6), (3.56, 8), (4.2, 10), (4.84, 12)]
    assert [w.heard(1, t, n) for t, n in seq] == [None] * len(seq)
    # then they stop at 12: the end is after the partial that first showed 12 since they
    # last had fewer (4.84), not after the over-counted one
    assert w.heard(1, 5.48, 12) is None and w.heard(1, 6.76, 12) is None
    assert w.heard(1, 7.4, 12) == 4.84 + 0.64


def _room(corpus, after_s: float):
    by_id = {c.id: c for c in corpus}
    noisy, clean = (read_wav(by_id[f"{ROOM}_{kind}"].path) for kind in ("noisy", "clean"))
    noise, _ = clip_noise(noisy, clean)
    n = len(noise)
    loop = np.tile(noise, int((1 + after_s) * 16000 / n) + 2)
    audio = np.concatenate([loop[:16000], noisy, loop[16000:16000 + int(after_s * 16000)]])
    start, end = (1.0 + t for t in speech_span(clean))
    return audio, clean[:n], start, end


def _vad_events(config, audio, stall_at=None):
    """The VAD on ``audio``; with ``stall_at`` = (when, at): at input time ``when`` the
    words of the open utterance are said to have stopped at ``at``."""
    from stages.vad_silero import FRAME, SileroVAD

    vad = SileroVAD(config.vad)
    vad.end_silence_ms = config.pipeline.max_silence_ms
    asyncio.run(vad.start())

    async def frames():
        for i in range(len(audio) // FRAME):
            t = (i + 1) * FRAME / 16000
            if stall_at is not None and abs(t - stall_at[0]) < FRAME / 32000:
                vad.end_speech(vad.turns, stall_at[1], stall_at[0])
            yield AudioFrame(0, t, audio[i * FRAME:(i + 1) * FRAME])

    async def run():
        return [ev async for ev in vad.process(frames())]
    try:
        return asyncio.run(run())
    finally:
        asyncio.run(vad.aclose())


def test_a_stalled_utterance_ends_where_its_words_stopped_and_the_room_starts_no_turn(
        default_config, corpus):
    audio, clean, start, end = _room(corpus, 6.0)
    # without the stall: Silero hears the room as speech to the input's end
    evs = _vad_events(default_config, audio)
    ended = [ev for ev in evs if isinstance(ev, SpeechEnded)]
    assert len(ended) == 1 and ended[0].t > len(audio) / 16000 - 0.1 and not ended[0].stalled
    # the words stopped at end + 0.3 s, found 2.5 s later: closed there, nothing after
    at = end + 0.3
    evs = _vad_events(default_config, audio, stall_at=(at + 2.5, at))
    ended = [ev for ev in evs if isinstance(ev, SpeechEnded)]
    assert ended[0].stalled and ended[0].speech_end == at
    assert abs(ended[0].t - (at + 2.5)) < 0.1
    pad = default_config.vad.speech_pad_ms / 1000
    first = next(ev for ev in evs if isinstance(ev, SpeechStarted))
    # its audio: from where speech began (in the noise) to the stall's end and the padding
    assert abs(len(ended[0].audio) / 16000 - (at + pad - first.speech_start)) < 0.15
    assert [ev for ev in evs if isinstance(ev, SpeechStarted) and ev.t > ended[0].t] == []
    # the user speaks again in the room, at the level they spoke before: a turn
    again = audio.copy()
    at2 = int((ended[0].t + 1.0) * 16000)
    again[at2:at2 + len(clean)] += clean
    evs = _vad_events(default_config, again, stall_at=(at + 2.5, at))
    later = [ev for ev in evs if isinstance(ev, SpeechStarted) and ev.t > ended[0].t]
    assert len(later) == 1 and abs(later[0].t - (at2 / 16000 + start - 1.0)) < 0.5


def test_the_room_is_forgotten_after_a_silence(default_config, corpus):
    audio, clean, _, end = _room(corpus, 4.0)
    at = end + 0.3
    noise = audio[-3 * 16000:]  # the room alone (the clip less its clean twin, looped)
    quiet = int(default_config.vad.room_forget_ms / 1000 * 16000) + 8000
    # the room's noise again after a silence: the room is forgotten, the noise starts speech
    after_quiet = np.concatenate([audio, np.zeros(quiet, np.float32), noise])
    evs = _vad_events(default_config, after_quiet, stall_at=(at + 2.5, at))
    stalled = next(ev for ev in evs if isinstance(ev, SpeechEnded) and ev.stalled)
    later = [ev for ev in evs if isinstance(ev, SpeechStarted) and ev.t > stalled.t]
    noise_at = (len(audio) + quiet) / 16000
    assert len(later) == 1 and noise_at < later[0].t < noise_at + 0.5
    # the same noise with no silence before it: still the known room, no speech
    evs = _vad_events(default_config, np.concatenate([audio, noise]), stall_at=(at + 2.5, at))
    stalled = next(ev for ev in evs if isinstance(ev, SpeechEnded) and ev.stalled)
    assert [ev for ev in evs if isinstance(ev, SpeechStarted) and ev.t > stalled.t] == []


def test_a_room_whose_noise_never_stops_is_answered_end_to_end(tmp_path, default_config, corpus):
    """Real models, file mode at real-time pace (the partials keep pace with the audio):
    the utterance is answered soon after the user stops, once, and the session goes on."""
    audio, _, _, end = _room(corpus, 7.0)
    wav = tmp_path / "room.wav"
    write_wav(wav, audio, 16000)
    session = asyncio.run(run_file(default_config, wav, tmp_path / "out",
                                   console=Console(quiet=True)))
    assert session.orchestrator.stats["words_stalled"] == 1
    records = [json.loads(line) for line in
               (tmp_path / "out" / "timeline.jsonl").read_text().splitlines()]
    answered = [r for r in records if r["status"] == "answered"]
    assert len(answered) == 1, records
    # the words stopped ~2.5 s before the endpoint, long before the input's end
    assert end < answered[0]["endpoint"] < end + 2.5 + 1.5
    assert answered[0]["user_speech_end"] < end + 1.0
    history = session.orchestrator.history
    assert [m.role for m in history] == ["user", "assistant"]
    assert "please call stell" in history[0].content.lower()  # Whisper: Stella, Steller


def test_the_room_benchmark_scores_answers_merges_and_other_turns():
    room = {"room": "r", "snr_db": 9.0, "utterances": [
        {"start": 1.0, "end": 3.0, "text": "Please call Stella."},
        {"start": 10.0, "end": 12.0, "text": "Ask her to bring these things."}]}
    records = [
        {"turn_id": 1, "status": "interrupted", "endpoint": 5.5, "first_sound": 5.9},
        {"turn_id": 2, "status": "no_speech", "endpoint": 8.0, "first_sound": None},
        {"turn_id": 3, "status": "answered", "endpoint": 14.0, "first_sound": 14.3}]
    texts = {1: "Please call Stella.", 2: "", 3: "Ask her to bring those things."}
    res = score(room, records, texts)
    first, second = res["utterances"]
    # a reply that started and was cut by the next utterance still answered
    assert first["answered"] and first["endpoint_delay_ms"] == 2500 and first["v2v_ms"] == 2900
    assert second["answered"] and second["wer"] == 0.167  # 1 of 6 words
    assert res["other_turns"] == 1 and res["their_statuses"] == ["no_speech"]
    # words heard too wrong (WER 0.5 or more) are no answer, though the reply played
    wrong = score(room, records, {1: "Please call Stella.", 2: "",
                                  3: "Ask the bell to ring."})
    assert not wrong["utterances"][1]["answered"] and wrong["utterances"][1]["wer"] >= 0.5
    # both utterances in one turn: neither answered on its own
    merged = score(room, [{"turn_id": 1, "status": "answered", "endpoint": 14.0,
                           "first_sound": 14.2}],
                   {1: "Please call Stella. Ask her to bring these things."})
    assert [u["answered"] for u in merged["utterances"]] == [False, False]
    assert any(u.get("merged") for u in merged["utterances"])


def test_the_rooms_are_built_from_the_corpus_noise(corpus):
    built = rooms()
    assert len(built) == 6
    for r in built:
        first, second = r["utterances"]
        assert first["end"] < second["start"] and second["end"] < len(r["audio"]) / 16000
        # the noise goes on to the end: no digital silence anywhere
        tail = r["audio"][-16000:]
        assert np.sqrt(np.mean(np.square(tail))) > 1e-3
