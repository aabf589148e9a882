"""Compute while the user speaks (issue 12): partial transcripts prefill the LLM
(``pipeline.listen_ahead``), and the LLM's thread budget (two threads until the
reply's first chunk goes to the TTS, then ``llm.n_threads``). Real models."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipeline.audio import read_wav, write_wav
from pipeline.console import Console
from pipeline.conversation import Conversation
from pipeline.events import AudioFrame, ChatMessage, SpeechEnded, SpeechProgress, stream_of
from pipeline.filemode import run_file

LONG = "librivox_sense-and-sensibility-01-0890"  # ~6 s of one sentence


@pytest.fixture(scope="module")
def listening(default_config):
    """Listen-ahead on (as in the default profile, whatever it says)."""
    return default_config.replace(pipeline={"listen_ahead": True}, asr={"partials": True})


@pytest.fixture(scope="module")
def partial_asr(listening):
    from stages.asr_faster_whisper import FasterWhisperASR

    stage = FasterWhisperASR(listening.asr)
    asyncio.run(stage.start())
    yield stage
    asyncio.run(stage.aclose())


def clip(corpus, cid):
    return next(c for c in corpus if c.id == cid)


def test_the_vad_reports_the_utterance_so_far_while_speech_goes_on(default_config, corpus):
    from stages.vad_silero import FRAME, SileroVAD

    vad = SileroVAD(default_config.vad)
    asyncio.run(vad.start())
    vad.progress_ms = 640
    audio = np.concatenate([np.zeros(8000, np.float32), read_wav(clip(corpus, LONG).path),
                            np.zeros(16000, np.float32)])
    frames = [AudioFrame(0, (i + 1) * FRAME / 16000, audio[i * FRAME:(i + 1) * FRAME])
              for i in range(len(audio) // FRAME)]

    async def events():
        return [ev async for ev in vad.process(stream_of(*frames))]
    try:
        evs = asyncio.run(events())
    finally:
        asyncio.run(vad.aclose())
    progress = [ev for ev in evs if isinstance(ev, SpeechProgress)]
    ended = [ev for ev in evs if isinstance(ev, SpeechEnded)]
    assert ended and progress
    # one every 20 frames of the utterance, each longer than the one before it
    sizes = [len(p.audio) for p in progress]
    assert all(b - a == 20 * FRAME for a, b in zip(sizes, sizes[1:])), sizes
    assert len(progress) >= int(len(ended[0].audio) / 16000 / 0.64) - 2
    assert all(p.turn_id == ended[0].turn_id for p in progress)


def test_a_partial_transcript_is_mostly_the_final_ones_beginning(partial_asr, corpus):
    """Whisper tiny may hear the cut audio a little differently ("I'd less" for
    "Unless"): the prefill then keeps only the common prefix, which is why listen-ahead
    is an optimisation and never the transcript."""
    asr = partial_asr
    assert asr.has_partials
    audio = read_wav(clip(corpus, LONG).path)
    final = asyncio.run(asr.recognize(SpeechEnded(1, 0.0, 0.0, audio))).text
    counted = dict(asr.stats)
    partial = asyncio.run(asr.partial(audio[:len(audio) // 2]))
    assert asr.stats == counted  # partials are not the ASR paths the report counts
    kept = partial.split()[:-1]  # what listen-ahead prefills: less the last word
    assert len(kept) >= 3, partial
    plain = [w.strip(".,;!?").lower() for w in final.split()]
    kept = [w.strip(".,;!?").lower() for w in kept]
    # past its first words, the partial runs on in the final transcript word for word
    assert " ".join(kept[2:]) in " ".join(plain), (partial, final)


def test_prefilling_a_partial_message_leaves_the_verdict_unchanged_and_cuts_its_prefill(
        llm, default_config):
    conv = Conversation(llm, 640, max_turns=4)
    final = "I am going to the store to buy some apples and a loaf of bread."
    partial = "I am going to the store to buy some"

    def prompt(text):
        return asyncio.run(conv.prompt(text, "en"))

    def logprob_and_prefilled(prefill_first: bool):
        llm._llm.reset()
        llm.prefill(list(conv.system("en")))  # the head, as after any turn
        if prefill_first:
            assert llm.prefill_user(prompt(partial)) > 5
        before = llm._llm.n_tokens
        return llm.end_of_turn_logprob(prompt(final)), llm._llm.n_tokens - before

    cold, cold_new = logprob_and_prefilled(False)
    warm, warm_new = logprob_and_prefilled(True)
    assert warm == pytest.approx(cold, abs=0.05)
    # only the message's tail is evaluated at the pause
    assert warm_new <= cold_new - 8, (warm_new, cold_new)
    assert llm._threads[1] == default_config.llm.n_threads_batch  # the budget is restored


def test_a_pause_stops_a_partial_decode_after_its_encoder(partial_asr, corpus):
    """The user paused: the partial's words would be dropped, and the turn's own ASR
    needs the CPU. Told so after its encoder, the partial skips its decoder: None."""
    audio = read_wav(clip(corpus, LONG).path)
    assert len(asyncio.run(partial_asr.partial(audio)).split()) >= 5
    assert asyncio.run(partial_asr.partial(audio, lambda: True)) is None


def test_the_llm_generates_with_two_threads_until_its_first_chunk_goes_out(default_config):
    from stages.llm_llama_cpp import LlamaCppLLM

    # the one-core budget (llm.n_threads: 1) with first-chunk threads
    cfg = default_config.replace(llm={"n_threads": 1, "first_chunk_threads": 2}).llm
    assert cfg.first_chunk_threads == 2 and cfg.n_threads == 1
    llm = LlamaCppLLM(cfg)
    asyncio.run(llm.start())
    try:
        messages = (ChatMessage("system", cfg.system_prompt),
                    ChatMessage("user", "How many legs does a spider have?"))
        seen = []
        stream = llm._stream(messages)
        for i, text in enumerate(stream):
            seen.append((text, llm._threads[0]))
            if i == 2:
                llm.first_chunk_sent()
            if i == 8:
                break
        stream.close()
        assert [n for _, n in seen[:3]] == [2, 2, 2]
        assert {n for _, n in seen[4:]} == {1}, seen  # from the token after the call on
    finally:
        asyncio.run(llm.aclose())


def test_listen_ahead_prefills_during_a_long_utterance_in_file_mode(tmp_path, corpus,
                                                                   listening):
    audio = read_wav(clip(corpus, LONG).path)
    silence = np.zeros(16000, np.float32)
    wav = tmp_path / "long.wav"
    write_wav(wav, np.concatenate([silence, audio, silence, silence]), 16000)
    # in real time: the partials are taken while the user is still speaking
    session = asyncio.run(run_file(listening, wav, tmp_path / "out", fast=False,
                                   console=Console(quiet=True)))
    stats = session.orchestrator.stats
    assert stats["listen_ahead_prefills"] >= 2, stats
    assert stats["listen_ahead_tokens"] > 0
    answered = [t for t in session.log.transcript if t["status"] == "answered"]
    assert len(answered) == 1 and answered[0]["assistant"], session.log.transcript


def test_listen_ahead_is_on_in_the_default_profile_and_off_where_a_profile_is_silent(
        default_config, asr):
    from pipeline.config import load_config
    from stages.asr_faster_whisper import FasterWhisperASR
    from tests.conftest import ROOT

    assert default_config.pipeline.listen_ahead and default_config.asr.partials
    assert asr.has_partials
    # the keys' own defaults are off: a profile that does not ask (a large Whisper, a
    # server LLM) loads no second decoder replica
    fast = load_config(ROOT / "configs" / "fast.yaml")
    assert not fast.pipeline.listen_ahead and not fast.asr.partials
    stage = FasterWhisperASR(fast.asr)
    asyncio.run(stage.start())
    try:
        assert not stage.has_partials
    finally:
        asyncio.run(stage.aclose())


def test_the_end_of_turn_batch_prefills_the_whole_reply_prompt(default_config):
    """llm.eot_prefills_reply: the end-of-turn probability comes out of the batch that
    evaluates the reply prompt to its end, so the reply samples at once; same
    probability, same reply as in two steps."""
    import itertools

    from stages.llm_llama_cpp import LlamaCppLLM

    got = {}
    for fused in (True, False):
        llm = LlamaCppLLM(default_config.llm.model_copy(update={"eot_prefills_reply": fused}))
        asyncio.run(llm.start())
        try:
            conv = Conversation(llm, 640, max_turns=4)
            messages = asyncio.run(conv.prompt("Who wrote Romeo and Juliet?", "en"))
            llm.prefill(list(conv.system("en")))
            lp = llm.end_of_turn_logprob(messages)
            whole = llm._llm.n_tokens == len(llm.tokens(messages))
            stream = llm._stream(messages)
            text = "".join(itertools.islice(stream, 10))
            stream.close()
            got[fused] = (lp, whole, text)
        finally:
            asyncio.run(llm.aclose())
    assert got[True][0] == pytest.approx(got[False][0], abs=1e-3)
    assert got[True][1] and not got[False][1]  # the whole prompt was in the cache
    assert got[True][2] == got[False][2] and got[True][2].strip()
