"""Trimming the silence at the edges of synthesized chunks (pipeline.trim_tts_silence)."""
import numpy as np
import pytest

from pipeline import edges
from pipeline.config import PipelineSettings
from pipeline.events import AudioChunk

RATE = 22050
SETTINGS = PipelineSettings()


def chunk(text, lead_s, voiced_s, tail_s, rate=RATE):
    t = np.arange(int(voiced_s * rate)) / rate
    voiced = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    voiced[0] = voiced[-1] = 0.3  # audible up to both ends of the voiced stretch
    audio = np.concatenate([np.zeros(int(lead_s * rate), np.float32), voiced,
                            np.zeros(int(tail_s * rate), np.float32)])
    return AudioChunk(1, 0.0, samples=audio, sample_rate=rate, sentence_index=0, text=text)


def edges_ms(c):
    first, end = edges.audible_bounds(c.samples, SETTINGS.tts_silence_db)
    return first / c.sample_rate * 1000, (len(c.samples) - end) / c.sample_rate * 1000


@pytest.mark.parametrize("text, tail_ms", [
    ("That's a great", SETTINGS.pause_after_cut_ms),  # cut between two words
    ("Well, hello,", SETTINGS.pause_after_clause_ms),
    ("I hope so; then:", SETTINGS.pause_after_clause_ms),
    ("Rome is the capital of Italy.", SETTINGS.pause_after_sentence_ms),
    ('He said "yes!"', SETTINGS.pause_after_sentence_ms),  # a closing quote after the end
    ("Really?", SETTINGS.pause_after_sentence_ms),
])
def test_each_chunk_keeps_a_short_lead_and_the_pause_its_end_calls_for(text, tail_ms):
    c = chunk(text, 0.06, 0.5, 0.25)
    trimmed = edges.trim(c, SETTINGS)
    lead, tail = edges_ms(trimmed)
    assert lead == pytest.approx(SETTINGS.chunk_lead_ms, abs=0.1)
    assert tail == pytest.approx(tail_ms, abs=0.1)
    # the voiced stretch itself is untouched
    first, end = edges.audible_bounds(c.samples, SETTINGS.tts_silence_db)
    tfirst, tend = edges.audible_bounds(trimmed.samples, SETTINGS.tts_silence_db)
    np.testing.assert_array_equal(c.samples[first:end], trimmed.samples[tfirst:tend])
    assert trimmed.text == c.text and trimmed.sample_rate == c.sample_rate


def test_trimming_only_shortens():
    c = chunk("Fine.", 0.004, 0.3, 0.05)  # less silence than the settings allow
    trimmed = edges.trim(c, SETTINGS)
    assert trimmed is c


def test_a_chunk_with_nothing_audible_is_left_alone():
    c = AudioChunk(1, 0.0, samples=np.full(2205, 1e-4, np.float32), sample_rate=RATE,
                   sentence_index=0, text="Hm.")
    assert edges.trim(c, SETTINGS) is c
    assert edges.leading_silence_s(c.samples, RATE, SETTINGS.tts_silence_db) == \
        pytest.approx(0.1)


def test_cuts_are_ramped_so_they_do_not_click():
    audio = np.full(RATE, 0.002, np.float32)  # a quiet hum under the threshold...
    audio[RATE // 4:RATE // 2] = 0.3  # ...around the sound
    c = AudioChunk(1, 0.0, samples=audio, sample_rate=RATE, sentence_index=0, text="Cut")
    trimmed = edges.trim(c, SETTINGS)
    assert trimmed.samples[0] == 0.0 and trimmed.samples[-1] == 0.0
    assert len(trimmed.samples) < len(audio)


def test_settings_change_the_pauses():
    settings = PipelineSettings(chunk_lead_ms=0, pause_after_sentence_ms=50)
    trimmed = edges.trim(chunk("Done.", 0.06, 0.3, 0.3), settings)
    lead, tail = edges_ms(trimmed)
    assert lead == pytest.approx(0, abs=0.1) and tail == pytest.approx(50, abs=0.1)


def test_piper_pads_its_chunks_and_the_trimmed_seam_is_short(tts):
    """The real voice: its chunks start with tens of milliseconds of silence and end
    with more; trimmed, a first chunk cut between two words runs into the next with
    at most pause_after_cut_ms + chunk_lead_ms of silence, and no word is lost."""
    rate = tts.sample_rate
    parts = [AudioChunk(1, 0.0, samples=tts.synthesize(text), sample_rate=rate,
                        sentence_index=i, text=text)
             for i, text in enumerate(["That's a great", "idea for a weekend."])]
    raw_lead, raw_tail = edges_ms(parts[0])
    assert raw_lead > 2 * SETTINGS.chunk_lead_ms and raw_tail > 2 * SETTINGS.pause_after_cut_ms
    trimmed = [edges.trim(p, SETTINGS) for p in parts]
    assert edges.leading_silence_s(trimmed[0].samples, rate, SETTINGS.tts_silence_db) * 1000 \
        <= SETTINGS.chunk_lead_ms + 0.1
    seam = edges_ms(trimmed[0])[1] + edges_ms(trimmed[1])[0]
    assert seam <= SETTINGS.pause_after_cut_ms + SETTINGS.chunk_lead_ms + 0.2
    for p, t in zip(parts, trimmed):  # what is heard is all kept
        first, end = edges.audible_bounds(p.samples, SETTINGS.tts_silence_db)
        assert len(t.samples) >= end - first
