"""The report's 'true end of speech' (eval/speech_bounds.py): noise after the last
word must not move it later, and on real clips it must agree with what a VAD hears."""
import asyncio

import numpy as np
import pytest

from eval.speech_bounds import speech_span
from pipeline.audio import frames, read_wav

RATE = 16000


def vowel(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * (np.sin(2 * np.pi * 500 * t) + 0.5 * np.sin(2 * np.pi * 1500 * t))
            ).astype(np.float32)


def test_rumble_and_clicks_after_the_speech_do_not_count():
    rng = np.random.default_rng(0)
    speech = np.concatenate([np.zeros(RATE // 2), vowel(1.0), np.zeros(RATE)]).astype(np.float32)
    noise = rng.normal(0, 3e-4, len(speech)).astype(np.float32)
    t = np.arange(len(speech)) / RATE
    rumble = np.where(t > 1.5, 0.05 * np.sin(2 * np.pi * 60 * t), 0).astype(np.float32)
    clicks = np.zeros(len(speech), np.float32)
    for at in (1.8, 2.1, 2.3):  # isolated 2 ms clicks in the silence
        clicks[int(at * RATE): int(at * RATE) + 32] = 0.05
    start, end = speech_span(speech + noise + rumble + clicks)
    assert start == pytest.approx(0.5, abs=0.03)
    assert end == pytest.approx(1.5, abs=0.03)


def test_a_quiet_last_sound_still_counts():
    speech = np.concatenate([np.zeros(RATE // 2), vowel(1.0), vowel(0.15, level=0.02),
                             np.zeros(RATE)]).astype(np.float32)  # -24 dB tail
    assert speech_span(speech)[1] == pytest.approx(1.65, abs=0.03)


def test_real_clips_end_where_silero_hears_the_end(corpus, default_config):
    """Silero decides later than the true end (it needs a frame or two), but on
    clean recordings not much later, and never much earlier."""
    from stages.vad_silero import FRAME, SileroVAD

    vad = SileroVAD(default_config.vad)
    asyncio.run(vad.start())
    lags = []
    for clip in corpus:
        if clip.duration_s > 7 or clip.id.endswith("_noisy"):
            continue
        audio = read_wav(clip.path)
        padded = np.concatenate([audio, np.zeros(RATE // 2, np.float32)])
        vad.reset()
        probs = [vad.probability(f) for _, f in frames(padded, FRAME)]
        silero_end = (max(i for i, p in enumerate(probs) if p >= 0.5) + 1) * FRAME / RATE
        lags.append(silero_end - speech_span(audio)[1])
    lags = np.array(lags)
    assert len(lags) >= 20
    assert lags.min() > -0.05, lags
    assert 0.0 < np.median(lags) < 0.1, lags


def test_the_longest_pause_inside_real_speech(corpus):
    """The pauses benchmark files a clip by its longest inner pause: the digit string
    is read with gaps of over a second, a read sentence has none; 800 ms of silence
    put between two words of a real clip measure as 800 ms plus the gap already there."""
    from eval.speech_bounds import longest_pause

    by_id = {c.id: c for c in corpus}
    digits = read_wav(by_id["cmusphinx_digits-10001-90210-01803"].path)
    assert longest_pause(digits) > 1.0
    sentence = read_wav(by_id["ljspeech_LJ001-0005"].path)
    assert 0.1 < longest_pause(sentence) < 0.6
    start, end = speech_span(sentence)
    middle = int((start + end) / 2 * RATE)
    quiet = middle + int(np.argmin([np.abs(sentence[i:i + 320]).mean()
                                    for i in range(middle - 8000, middle + 8000, 160)]) * 160) - 8000
    paused = np.concatenate([sentence[:quiet], np.zeros(int(0.8 * RATE), np.float32),
                             sentence[quiet:]])
    assert 0.8 <= longest_pause(paused) < 0.8 + longest_pause(sentence) + 0.05
