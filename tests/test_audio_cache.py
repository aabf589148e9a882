"""The audio cache (pipeline.audio_cache_chunks): a short chunk whose exact text the
TTS synthesized before is replayed instead of synthesized again. With the bundled
Piper voice: the replayed audio is the audio made the first time, the TTS is not
asked again, a chunk cut before its end is not kept, and the switch turns it off;
with scripted fakes: the turn records where its first audio came from."""
import numpy as np
import pytest

from pipeline.audio_cache import AudioCache
from pipeline.config import PipelineSettings
from pipeline.events import LLMRequest
from pipeline.reply import ReplyChain
from pipeline.stages import Stages
from tests.conftest import collect, run
from tests.fakes import FakeASR, FakeLLM, FakeTTS, ScriptedVAD, fake_session, run_session

REPLY = "I'm glad to hear that. Have a lovely day with your family and friends."


def counting(tts, monkeypatch):
    """The texts the TTS (the bundled Piper voice) is asked to synthesize, in order."""
    asked = []
    pieces = tts.pieces

    def counted(text, first):
        asked.append(text)
        return pieces(text, first)
    monkeypatch.setattr(tts, "pieces", counted)
    return asked


def reply(chain, turn_id, marks=None):
    return run(collect(chain.audio(LLMRequest(turn_id, 0.0, []),
                                   (marks if marks is not None else {}).setdefault)))


def test_a_first_chunk_said_before_is_replayed_not_synthesized(tts, monkeypatch):
    asked = counting(tts, monkeypatch)
    chain = ReplyChain(FakeLLM(ttft=0.0, per_token=0.0, reply=REPLY), tts, PipelineSettings())
    first = reply(chain, 1)
    assert asked == ["I'm glad to", "hear that.", "Have a lovely day with your family and",
                     "friends."]
    assert not any(c.cached for c in first)
    # kept: the chunks of up to four words
    assert len(chain.cache) == 3
    asked.clear()
    marks = {}
    again = reply(chain, 2, marks)
    # only the long chunk is synthesized again
    assert asked == ["Have a lovely day with your family and"]
    assert [c.cached for c in again] == [True, True, False, True]
    assert again[0].text == "I'm glad to" and again[0].turn_id == 2
    assert marks["tts_first_audio"] == again[0].t
    # the replayed audio is the audio made the first time, trimmed the same way
    made = np.concatenate([c.samples for c in first if c.sentence_index == 0])
    assert np.array_equal(again[0].samples, made)
    assert np.array_equal(again[1].samples, first[-3].samples)  # "hear that."


def test_with_the_cache_off_every_chunk_is_synthesized(tts, monkeypatch):
    asked = counting(tts, monkeypatch)
    chain = ReplyChain(FakeLLM(ttft=0.0, per_token=0.0, reply=REPLY), tts,
                       PipelineSettings(audio_cache_chunks=0))
    assert chain.cache is None
    reply(chain, 1)
    again = reply(chain, 2)
    assert asked.count("I'm glad to") == 2
    assert not any(c.cached for c in again)


def test_a_chunk_cut_before_its_end_is_not_kept(tts):
    """A first chunk decoded in pieces, the reply cut after its first piece (a barge-in):
    its audio is not all there, so it is not kept; said whole later, it is."""
    text = "That sounds like a really wonderful plan!"
    settings = PipelineSettings(max_first_words=8, audio_cache_max_words=8)
    chain = ReplyChain(FakeLLM(ttft=0.0, per_token=0.0, reply=text), tts, settings)

    async def first_piece():
        stream = chain.audio(LLMRequest(1, 0.0, []), {}.setdefault)
        head = await anext(stream)
        await stream.aclose()
        return head
    head = run(first_piece())
    assert head.more  # more audio of that text was to come
    assert len(chain.cache) == 0
    whole = reply(chain, 2)
    assert not whole[0].cached and len(chain.cache) == 1
    assert reply(chain, 3)[0].cached


def test_the_cache_keeps_the_newest_short_chunks():
    cache = AudioCache(size=2, max_words=3)
    one, two, three = (np.full(10, v, np.float32) for v in (0.1, 0.2, 0.3))
    cache.put("Okay.", one)
    cache.put("I'm glad!", two)
    assert cache.get("Okay.") is not None  # now the newest
    cache.put("That's a great", three)
    assert cache.get("I'm glad!") is None  # the oldest went
    assert np.array_equal(cache.get("Okay."), one)
    cache.put("A chunk of five words.", one)  # too long
    cache.put("", one)
    assert len(cache) == 2 and cache.get("A chunk of five words.") is None
    got = cache.get("Okay.")
    got[:] = 0.0  # the caller's copy
    assert np.array_equal(cache.get("Okay."), one)
    assert cache.get("okay.") is None  # the exact text only: the voice reads case


def test_the_turn_records_whether_its_first_audio_was_replayed(default_config):
    """Two turns whose replies open the same way (scripted fakes): the first is
    synthesized, the second replayed, at once, and both are counted."""
    tts = FakeTTS(delay=0.2)
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0), (8.0, 9.0)]), asr=FakeASR(),
                    llm=FakeLLM(), tts=tts)
    s = fake_session(default_config, stages)
    run_session(s, 16.0)
    one, two = s.log.timeline
    assert one["first_audio_cached"] is False and two["first_audio_cached"] is True
    assert one["tts_first_audio"] - one["first_sentence"] == pytest.approx(0.2, abs=1e-6)
    assert two["tts_first_audio"] == pytest.approx(two["first_sentence"], abs=1e-6)
    assert [t for _, t in tts.texts].count("Sure thing.") == 1
    stats = s.orchestrator.stats
    assert stats["first_audio_cached"] == 1 and stats["first_audio_synthesized"] == 1
    assert [t["status"] for t in s.log.transcript] == ["answered", "answered"], s.log.transcript
