"""The short-window guard (stages/whisper_window.py): what it rejects, what it repairs."""
from eval.wer import wer
from stages.whisper_window import guard, trim_repeat, token_limit


def test_guard_accepts_a_plain_sentence():
    assert guard("I am sure all schools would accept that.", 4.2, 12, token_limit(4.2 * 16000)) is None


def test_guard_rejects_loops_fast_speech_and_the_token_limit():
    assert guard(" ".join(["five"] * 10), 1.5, 12, 30) == "implausibly fast speech"
    # fast but real: 12 words in 2.5 s
    assert guard("The modern approach will also be reflected in the terms of address.", 2.5, 16,
                 40) is None
    assert guard("go forward ten meters go forward ten meters", 4.0, 12, 40) == "repeated phrase"
    assert guard("ten of clubs ten of clubs", 4.0, 9, 40) == "repeated words"
    assert guard("anything", 2.0, 24, 24) == "hit token limit"


def test_the_whole_utterance_said_again_keeps_its_first_copy():
    assert trim_repeat("Go forward 10 meters. Go forward 10 meters. Go forward 10 meters") \
        == "Go forward 10 meters."
    assert trim_repeat("That is a lot of writing. That is a lot of writing.") \
        == "That is a lot of writing."
    assert trim_repeat("We also need a small plastic snake and a big toy frog for the kids. "
                       "We also need a") == "We also need a small plastic snake and a big toy frog for the kids."


def test_other_repetitions_are_not_repaired():
    assert trim_repeat("5 5 5 5 5 5 5 5") is None  # no sentence to keep: fall back
    assert trim_repeat("10 of clubs 10 of clubs 10 of clubs") is None
    # a second sentence that is not a copy of the first stays
    assert trim_repeat("I came. I saw the house. I came.") is None
    # a one-word sentence said twice is left alone, and the guard lets it through
    assert trim_repeat("Stop. Stop.") is None
    assert guard("Stop. Stop.", 1.0, 4, 20) is None


def clip_of(corpus, cid):
    from pipeline.audio import read_wav
    clip = next(c for c in corpus if c.id == cid)
    return clip, read_wav(clip.path)


def test_the_token_limit_counts_new_tokens_and_its_guard_fires(asr, corpus, monkeypatch):
    """CTranslate2 stops a Whisper decode at half its max_length: asked for
    max_length=limit, the decode stopped at limit/2 tokens and the guard never fired."""
    from stages import whisper_window
    from stages.whisper_window import decode_window

    clip, audio = clip_of(corpus, "jfk_inaugural-1961")  # 23 tokens
    cfg = asr.config
    monkeypatch.setattr(whisper_window, "token_limit", lambda n: 6)
    res = decode_window(asr._model, asr._tokenizer, audio, cfg.window_margin_s,
                        cfg.window_floor_s, cfg.beam_size)
    assert res.rejected == "hit token limit"
    assert len(asr._tokenizer.encode(" " + res.text)) == 6, res.text  # And so my fellow Americans ask

    before = dict(asr.stats)
    text, _ = asr.transcribe(audio)  # the guard rejects the short window: the padded decode
    assert asr.stats["fallback"] == before["fallback"] + 1
    assert asr.stats["short"] == before["short"]
    assert wer([clip.text], [text]) < 0.1, text  # the whole sentence, not its first 6 tokens


def test_both_decodes_get_their_whole_token_limit(asr, corpus):
    """11.7 s of speech, 42 tokens, limit 81: asked for at most 81 tokens, the short
    window stopped at 40 ("... painful to") and the guard let it through; the padded
    decode stopped at 41, cutting the final full stop."""
    _, audio = clip_of(corpus, "librispeech_2412-153948-0000")
    before = dict(asr.stats)
    text, _ = asr.transcribe(audio)
    assert asr.stats["short"] == before["short"] + 1
    assert text.endswith("painful to myself."), text
    bounded, _ = asr.transcribe_padded(audio)
    unbounded, _ = asr.transcribe_padded(audio, bounded=False)
    assert bounded == unbounded and bounded.endswith("painful to myself."), bounded


def test_a_transcription_given_up_skips_its_decoder(asr, corpus, monkeypatch):
    """Speech resumed: the speculative turn's ASR is cancelled while CTranslate2's encoder
    runs (it cannot be stopped). The decoder is skipped, so the thread is free for the
    next pause's transcription sooner, and nothing is returned."""
    import asyncio
    import threading

    import numpy as np
    import pytest

    from pipeline.events import SpeechEnded
    from stages.whisper_window import Abandoned
    from tests.conftest import run

    audio = np.concatenate([clip_of(corpus, "librispeech_1272-141231-0002")[1],
                            clip_of(corpus, "librispeech_6081-41997-0014")[1]])  # 26 s
    before = dict(asr.stats)
    with pytest.raises(Abandoned):
        asr.transcribe(audio, lambda: True)  # the real model, told after its encoder
    assert asr.stats["abandoned"] == before["abandoned"] + 1
    assert asr.stats["short"] == before["short"] and asr.stats["fallback"] == before["fallback"]

    started, real = threading.Event(), asr.transcribe

    def transcribe(audio, abandoned=None, turn_id=None):
        started.set()
        return real(audio, abandoned, turn_id)

    monkeypatch.setattr(asr, "transcribe", transcribe)

    async def speech_resumes():
        task = asyncio.ensure_future(asr.recognize(SpeechEnded(1, 26.0, 26.0, audio)))
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 60)
        task.cancel()  # the 29 s window's encoder takes well over 100 ms
        with pytest.raises(asyncio.CancelledError):
            await task
        await asr.worker.call(lambda: None)  # the call still running on the thread is over

    before = dict(asr.stats)
    run(speech_resumes())
    assert asr.stats["abandoned"] == before["abandoned"] + 1
    assert asr.stats["short"] == before["short"] and asr.stats["fallback"] == before["fallback"]
    monkeypatch.undo()
    text, _ = asr.transcribe(audio)  # not given up: the whole transcript, as before
    assert len(text.split()) > 40, text


def test_a_short_window_the_guard_rejects_is_decoded_again_in_the_longer_one(asr, corpus,
                                                                             monkeypatch):
    """asr.window_floor_s (6 s) encodes a short utterance sooner; what its guard rejects
    there goes to the window_retry_s window (10 s, the real decode), not to the padded
    30 s one. The guard is told to reject every window under 10 s here."""
    from stages import asr_faster_whisper
    from stages.whisper_window import WindowResult

    clip, audio = clip_of(corpus, "cmusphinx_goforward")  # ~3 s: a 6 s window
    cfg = asr.config
    assert cfg.window_floor_s < cfg.window_retry_s
    real, floors = asr_faster_whisper.decode_window, []

    def decode_window(model, tokenizer, audio, margin_s, floor_s, *args, **kw):
        floors.append(floor_s)
        res = real(model, tokenizer, audio, margin_s, floor_s, *args, **kw)
        return WindowResult(res.text, "scripted" if floor_s < 10 else None)

    monkeypatch.setattr(asr_faster_whisper, "decode_window", decode_window)
    before = dict(asr.stats)
    text, _ = asr.transcribe(audio)
    assert floors == [cfg.window_floor_s, cfg.window_retry_s]
    assert asr.stats["retried"] == before["retried"] + 1
    assert asr.stats["fallback"] == before["fallback"] and asr.stats["short"] == before["short"]
    assert wer([clip.text], [text]) < 0.3, text

    # without a longer window to try: the padded decode, as before
    monkeypatch.setattr(asr, "config", cfg.model_copy(update={"window_retry_s": None}))
    floors.clear()
    text, _ = asr.transcribe(audio)
    assert floors == [cfg.window_floor_s]
    assert asr.stats["fallback"] == before["fallback"] + 1
    assert wer([clip.text], [text]) < 0.3, text
