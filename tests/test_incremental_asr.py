"""Incremental transcription (``asr.incremental``): real Silero VAD and real Whisper
tiny.en on real speech. The transcript of the audio a speculative turn had at an inner
pause is kept; at the next pause only the rest is decoded."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from eval.bench_vad import _events
from eval.wer import wer
from pipeline.audio import read_wav
from pipeline.events import SpeechEnded, SpeechPaused, SpeechResumed
from stages.whisper_window import join_segments

CLIP = "vctk-valentini_p287_005_clean"  # "...three red bags and we will go meet her..."


@pytest.fixture(scope="module")
def incremental_asr(default_config):
    from stages.asr_faster_whisper import FasterWhisperASR

    asr = FasterWhisperASR(default_config.asr.model_copy(update={"incremental": True,
                                                                 "partials": False}))
    asyncio.run(asr.start())
    yield asr
    asyncio.run(asr.aclose())


def vad_audio(config, corpus):
    """The audio the VAD hands over at an inner pause of the utterance (one the user
    went on after) and at its end."""
    from stages.vad_silero import SileroVAD

    clip = next(c for c in corpus if c.id == CLIP)
    vad = SileroVAD(config.vad)
    asyncio.run(vad.start())
    try:
        audio = np.concatenate([np.zeros(8000, np.float32), read_wav(clip.path),
                                np.zeros(16000, np.float32)])
        evs = asyncio.run(_events(vad, audio))
    finally:
        asyncio.run(vad.aclose())
    inner = [ev for ev, nxt in zip(evs, evs[1:])
             if isinstance(ev, SpeechPaused) and isinstance(nxt, SpeechResumed)]
    [ended] = [ev for ev in evs if isinstance(ev, SpeechEnded)]
    # the last inner pause with a second or more of speech before it and after it
    paused = [p for p in inner if len(p.audio) >= 16000 and len(ended.audio) - len(p.audio)
              >= 16000][-1]
    return clip, paused, ended


def test_only_the_rest_of_the_utterance_is_decoded_after_an_inner_pause(
        default_config, corpus, incremental_asr):
    asr = incremental_asr
    clip, paused, ended = vad_audio(default_config, corpus)
    whole, _ = asr.transcribe(ended.audio)  # no turn id: nothing kept, nothing used
    before = dict(asr.stats)
    asr.transcribe(paused.audio, turn_id=7)
    text, _ = asr.transcribe(ended.audio, turn_id=7)
    assert asr.stats["incremental"] == before["incremental"] + 1
    assert wer([clip.text], [text]) <= wer([clip.text], [whole]) + 0.1, (text, whole)
    # another utterance, or other audio, does not start with that transcript
    asr.transcribe(paused.audio, turn_id=8)
    asr.transcribe(ended.audio, turn_id=9)
    shifted = np.concatenate([np.zeros(160, np.float32), ended.audio])
    asr.transcribe(paused.audio, turn_id=10)
    asr.transcribe(shifted, turn_id=10)
    other = ended.audio.copy()
    other[:100] *= 0.5  # another session's utterance, its turn id and length the same
    asr.transcribe(paused.audio, turn_id=11)
    asr.transcribe(other, turn_id=11)
    assert asr.stats["incremental"] == before["incremental"] + 1


def test_a_cancelled_transcription_at_an_inner_pause_is_kept(default_config, corpus,
                                                             incremental_asr):
    """The user went on: the speculative turn is cancelled, but its transcription
    finishes, and the next pause decodes only what came after it."""
    asr = incremental_asr
    _, paused, ended = vad_audio(default_config, corpus)

    async def scenario():
        spec = asyncio.ensure_future(asr.recognize(SpeechEnded(21, paused.t, paused.speech_end,
                                                               paused.audio)))
        await asyncio.sleep(0.01)  # in the encoder: without incremental it would stop there
        spec.cancel()
        await asyncio.wait([spec])
        before = asr.stats["incremental"]
        final = await asr.recognize(SpeechEnded(21, ended.t, ended.speech_end, ended.audio))
        return before, final

    before, final = asyncio.run(scenario())
    assert asr.stats["incremental"] == before + 1
    assert "wednesday" in final.text.lower()


def test_joined_pieces_read_as_one_sentence():
    assert join_segments("and rather selfish.", "Is to be ill-disposed.") == \
        "and rather selfish is to be ill-disposed."
    assert join_segments("Ten of clubs,", "Four of hearts.") == "Ten of clubs, Four of hearts."
    assert join_segments("the immediate...", "Predecessors.") == "the immediate... Predecessors."
    assert join_segments("Ask NASA.", "NASA knows.") == "Ask NASA NASA knows."
    assert join_segments("", "Yes.") == "Yes."
