"""A noise-robust end of speech (issue 11, item 4): ``vad.relative_drop``. Real
Silero VAD on real noisy clips (Valentini: VCTK speech with recorded noise added)."""
from __future__ import annotations

import asyncio

import numpy as np

from eval.bench_vad import LEAD_S, TAIL_S, _events, end_heard
from eval.speech_bounds import speech_end
from pipeline.audio import read_wav
from pipeline.events import SpeechEnded

NOISY = ["vctk-valentini_p287_001_noisy", "vctk-valentini_p287_002_noisy",
         "vctk-valentini_p287_005_noisy", "vctk-valentini_p287_006_noisy"]


def end_lag(config, corpus, cid, drop):
    from stages.vad_silero import SileroVAD

    vad = SileroVAD(config.vad.model_copy(update={"relative_drop": drop}))
    vad.end_silence_ms = config.pipeline.max_silence_ms  # as with adaptive endpointing
    asyncio.run(vad.start())
    try:
        clip = next(c for c in corpus if c.id == cid)
        audio = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), read_wav(clip.path),
                                np.zeros(int(TAIL_S * 16000), np.float32)])
        evs = asyncio.run(_events(vad, audio))
    finally:
        asyncio.run(vad.aclose())
    return (end_heard(evs) - LEAD_S - speech_end(clip, corpus),
            sum(isinstance(ev, SpeechEnded) for ev in evs))


def test_the_end_of_speech_in_noise_is_heard_sooner_with_the_relative_drop(default_config,
                                                                            corpus):
    assert default_config.vad.relative_drop is None  # off by default: see its description
    before, after = [], []
    for cid in NOISY:
        lag, utterances = end_lag(default_config, corpus, cid, 0.2)
        after.append(lag)
        assert utterances == 1, cid  # still one utterance
        before.append(end_lag(default_config, corpus, cid, None)[0])
    assert all(a <= b + 1e-6 for a, b in zip(after, before)), (after, before)
    assert np.median(after) < 0.2 < np.median(before), (after, before)


def test_a_clean_sentence_with_its_own_pauses_stays_one_utterance(default_config, corpus):
    lag, utterances = end_lag(default_config, corpus,
                                            "librivox_sense-and-sensibility-01-0890", 0.2)
    assert utterances == 1 and lag < 0.15
