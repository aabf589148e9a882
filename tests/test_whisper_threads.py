"""Whisper's thread count timed at load (``asr.cpu_threads: auto``,
stages/whisper_threads.py): the real model on each candidate count, and the rule that
keeps more threads only when they are clearly faster."""
import numpy as np
import pytest

from stages import whisper_threads
from stages.whisper_threads import MARGIN, TOKENS, candidates, choose, fewest


def test_one_core_loads_one_model_and_times_nothing(monkeypatch):
    monkeypatch.setattr(whisper_threads, "timed", lambda work: pytest.fail("timed"))
    models, choice = choose(lambda n: f"model-{n}", lambda model: None, [1])
    assert models == {1: "model-1"}
    assert (choice.encoder, choice.decoder, choice.encode_ms, choice.decode_ms) == (1, 1, {}, {})


def test_candidates_follow_the_cores():
    assert candidates(1) == [1]
    assert candidates(2) == [1, 2]
    assert candidates(3) == [1, 2, 3]
    assert candidates(16) == [1, 2, 4]


@pytest.mark.parametrize("ms, kept", [
    ({1: 100.0, 2: 95.0}, 1),  # 5% faster: not worth the other core
    ({1: 100.0, 2: 80.0}, 2),
    ({1: 100.0, 2: 120.0}, 1),
    ({1: 100.0, 2: 80.0, 4: 75.0}, 2),  # 4 is not 10% faster than 2
    ({1: 100.0, 2: 95.0, 4: 60.0}, 4),
])
def test_more_threads_only_when_clearly_faster(ms, kept):
    assert fewest(ms, MARGIN) == kept


def test_each_phase_keeps_its_own_count(monkeypatch):
    # scripted times: the encoder gains from two threads, the decoder loses
    times = {("enc", 1): 60.0, ("enc", 2): 40.0, ("dec", 1): 70.0, ("dec", 2): 90.0}
    calls = []

    def fake_timed(work):
        out = work()
        calls.append(out)
        return times[out], out

    monkeypatch.setattr(whisper_threads, "features", lambda model: None)
    monkeypatch.setattr(whisper_threads, "encode", lambda model, feats: ("enc", model))
    monkeypatch.setattr(whisper_threads, "forced_decode",
                        lambda model, tokenizer, encoded: ("dec", model))
    monkeypatch.setattr(whisper_threads, "timed", fake_timed)
    models, choice = choose(lambda n: n, lambda model: None, [1, 2])
    assert (choice.encoder, choice.decoder) == (2, 1)
    assert models == {1: 1, 2: 2}  # both kept: the encoder's and the decoder's
    assert choice.record() == {"encoder": 2, "decoder": 1,
                               "encode_ms": {"1": 60.0, "2": 40.0},
                               "decode_ms": {"1": 70.0, "2": 90.0}}
    # an untimed round, then REPEATS rounds, each taking both models in turn
    assert len(calls) == 2 * 2 * (whisper_threads.REPEATS + 1)
    assert calls[:4] == [("enc", 1), ("dec", 1), ("enc", 2), ("dec", 2)]


def test_the_fixed_decode_steps_through_its_forced_words(asr):
    # the timed work must not depend on what the audio says: CTranslate2 decodes a
    # forced prefix one step per token, so its result holds the forced tokens
    model = asr._model
    tokenizer = asr._tokenizer
    assert len(tokenizer.encode(whisper_threads.TEXT)) >= TOKENS  # enough words to force
    encoded = whisper_threads.encode(model, whisper_threads.features(model))
    result = whisper_threads.forced_decode(model, tokenizer, encoded)
    assert TOKENS <= len(result.sequences_ids[0]) <= TOKENS + 1
    assert result.sequences_ids[0][:TOKENS] == tokenizer.encode(whisper_threads.TEXT)[:TOKENS]


def test_the_asr_keeps_the_counts_it_timed_fastest(asr, corpus):
    # the session's ASR is the default profile's: auto
    assert asr.config.cpu_threads == "auto"
    choice = asr.thread_choice
    assert choice is not None
    if len(candidates()) == 1:  # one core: nothing to time
        assert (choice.encoder, choice.decoder, choice.encode_ms) == (1, 1, {})
    else:
        assert sorted(choice.encode_ms) == sorted(choice.decode_ms) == candidates()
        assert all(ms > 0 for ms in [*choice.encode_ms.values(), *choice.decode_ms.values()])
        assert choice.encoder == fewest(choice.encode_ms, MARGIN)
        assert choice.decoder == fewest(choice.decode_ms, MARGIN)
    # the decoder's model transcribes, with the encoder's model where they differ
    assert (asr._encoder is asr._model) == (choice.encoder == choice.decoder)
    clip = next(c for c in corpus if c.id == "cmusphinx_goforward")
    from pipeline.audio import read_wav
    text, _ = asr.transcribe(read_wav(clip.path))
    assert "forward" in text.lower() and "meters" in text.lower()


def test_an_encoder_on_other_threads_feeds_the_decoder(asr, corpus):
    # the encoder's output handed to a model of other threads gives the same words
    from faster_whisper import WhisperModel

    from stages.asr_faster_whisper import resolve_model
    from stages.whisper_window import decode_window

    other = WhisperModel(str(resolve_model("tiny.en")), device="cpu", compute_type="int8",
                         cpu_threads=2 if asr.thread_choice.encoder == 1 else 1)
    clip = next(c for c in corpus if c.id == "vctk_p301_102")
    from pipeline.audio import read_wav
    audio = read_wav(clip.path)
    alone = decode_window(asr._model, asr._tokenizer, audio, 3.0, 10.0, 1)
    handed = decode_window(asr._model, asr._tokenizer, audio, 3.0, 10.0, 1, encoder=other)
    assert alone.text and handed.text == alone.text


def test_a_fixed_count_is_not_timed(default_config):
    from stages.asr_faster_whisper import FasterWhisperASR

    asr = FasterWhisperASR(default_config.asr.model_copy(update={"cpu_threads": 1}))
    asr._load()
    assert asr.thread_choice is None
    assert asr.transcribe(np.zeros(16000, np.float32))[0] == ""


def test_the_report_names_both_counts_and_their_times():
    from eval.report import asr_threads_line

    assert asr_threads_line(whisper_threads.ThreadChoice(1, 1).record()) == (
        "- ASR threads (asr.cpu_threads: auto): 1 (one core: nothing timed)")

    record = whisper_threads.ThreadChoice(2, 1, {1: 60.04, 2: 40.0}, {1: 70.0, 2: 90.0}).record()
    assert asr_threads_line(record) == (
        "- ASR threads (asr.cpu_threads: auto, timed at load): encoder 2, decoder 1 (the "
        "fixed work's encoder 60 ms on 1, 40 ms on 2; its decoder 70 ms on 1, 90 ms on 2)")


def test_a_stage_that_times_its_load_loads_after_the_others():
    import asyncio

    from pipeline.stages import start_stages

    events = []

    class Stage:
        def __init__(self, name, alone=False):
            self.name, self.loads_alone = name, alone

        async def start(self):
            events.append(("begin", self.name))
            await asyncio.sleep(0.01)
            events.append(("end", self.name))

    asyncio.run(start_stages([Stage("vad"), Stage("asr", alone=True), Stage("llm"),
                              Stage("tts")]))
    # the others load together; the ASR begins once they have all ended
    assert events[-2:] == [("begin", "asr"), ("end", "asr")]
    assert {name for _, name in events[:6]} == {"vad", "llm", "tts"}


def test_only_auto_on_the_cpu_loads_alone(default_config):
    from stages.asr_faster_whisper import FasterWhisperASR

    def asr(**update):
        return FasterWhisperASR(default_config.asr.model_copy(update=update))

    assert asr().loads_alone  # the default: auto, on the CPU
    assert not asr(cpu_threads=2).loads_alone
    assert not asr(device="cuda").loads_alone  # the library's own count on a GPU
    import ctranslate2
    # device auto on a machine without CUDA is the CPU: timed
    assert asr(device="auto").loads_alone == (ctranslate2.get_cuda_device_count() == 0)


def test_the_candidates_follow_the_cores_this_process_may_use():
    import os

    assert whisper_threads.usable_cores() == len(os.sched_getaffinity(0))
    assert candidates() == candidates(len(os.sched_getaffinity(0)))
