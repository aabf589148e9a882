"""The adaptive end of turn: the verdict on real clips (Smart Turn, the LLM's
end-of-turn probability, real ASR), early commit and reopen with scripted timings,
reopen and merge end to end in file mode, and the pauses benchmark's counting."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from eval.pauses import Item, score
from eval.scripted import UserTurn
from pipeline import clock
from pipeline.audio import read_wav, write_wav
from pipeline.console import Console
from pipeline.endpoint import EndOfTurn, Verdict, unfinished_text
from pipeline.events import ChatMessage, SpeechEnded, Transcript
from pipeline.filemode import run_file
from pipeline.stages import Stages
from tests.fakes import FakeASR, FakeLLM, FakeTTS, ScriptedVAD, fake_session, run_session

CLIP = "vctk-valentini_p287_005_clean"  # "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station."


def clip(corpus, cid):
    return next(c for c in corpus if c.id == cid)


def words(asr, audio):
    """Whisper's words with their times, from the ASR stage's own model."""
    segments, _ = asr._model.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
    return [w for s in segments for w in s.words]


def test_text_that_trails_off_is_unfinished():
    assert unfinished_text("three red bags and we...")
    assert unfinished_text("four of f-") and unfinished_text("When the sunlight strikes,")
    assert not unfinished_text("Please call Stella.") and not unfinished_text("ten of clubs")


def test_a_complete_sentence_gets_a_short_endpoint_and_the_same_sentence_cut_a_long_one(
        default_config, corpus, asr, llm):
    pc = default_config.pipeline
    audio = read_wav(clip(corpus, CLIP).path)
    ws = words(asr, audio)
    cut_at = ws[len(ws) // 2 - 1].end  # mid-clause, at a word boundary
    eot = EndOfTurn(pc, llm, fixed_s=0.288)

    async def verdict(heard):
        text = (await asr.recognize(SpeechEnded(1, 0.0, 0.0, heard))).text
        messages = (ChatMessage("system", default_config.llm.system_prompt),
                    ChatMessage("user", text))
        return text, await eot.verdict(text, messages, eot.acoustic(heard))

    asyncio.run(eot.start())
    try:
        # what a pause gives: the audio up to the last voiced sample plus the VAD's padding
        whole_text, whole = asyncio.run(verdict(audio[:int((ws[-1].end + 0.096) * 16000)]))
        cut_text, cut = asyncio.run(verdict(audio[:int((cut_at + 0.096) * 16000)]))
    finally:
        eot.aclose()
    assert whole.reason == "complete", (whole_text, whole)
    assert whole.silence_s == pytest.approx(pc.complete_silence_ms / 1000)
    assert whole.acoustic > 0.5 and cut.acoustic < 0.5, (whole, cut)
    assert cut.silence_s == pytest.approx(pc.max_silence_ms / 1000), (cut_text, cut)
    assert len(eot.smart_turn.cpu_ms) == 2  # one estimate per pause (not the warm-up)


def test_the_llm_reads_its_probability_while_smart_turn_is_still_running(default_config):
    """The semantic signal does not wait for the acoustic one: here Smart Turn's
    estimate is given only once the LLM has started (awaiting it first would hang)."""
    import threading

    from pipeline.worker import Worker

    llm_started = threading.Event()

    class LLM:
        worker = Worker("llm-test")

        def end_of_turn_logprob(self, messages, sentence_end=False):
            llm_started.set()
            return -0.1

    async def main():
        pc = default_config.pipeline.model_copy(update={"acoustic_eot": False})
        eot = EndOfTurn(pc, LLM(), fixed_s=0.288)
        acoustic = asyncio.get_running_loop().create_future()

        async def smart_turn_ends_after_the_llm_starts():
            await asyncio.to_thread(llm_started.wait, 10)
            await asyncio.sleep(0.05)
            acoustic.set_result(0.9)
        ender = asyncio.ensure_future(smart_turn_ends_after_the_llm_starts())
        v = await asyncio.wait_for(eot.verdict("Please call Stella.", (), acoustic), 10)
        await ender
        return v

    try:
        v = asyncio.run(main())
    finally:
        LLM.worker.shutdown()
    assert llm_started.is_set()
    assert v.reason == "complete" and v.acoustic == 0.9 and v.semantic == -0.1
    assert v.acoustic_wait_s >= 0.05  # the verdict did wait for Smart Turn


def test_short_answers_are_read_by_the_end_token_longer_ones_as_sentences(default_config):
    """eot_sentence_end reads a transcript as a sentence from eot_sentence_min_words
    words on; "No." or "Ten of clubs." is an elliptical answer, not a sentence."""
    from pipeline.worker import Worker

    readings = {}

    class LLM:
        worker = Worker("llm-test")

        def end_of_turn_logprob(self, messages, sentence_end=False):
            readings[messages] = sentence_end
            return -0.1

    async def main():
        pc = default_config.pipeline.model_copy(update={"acoustic_eot": False})
        eot = EndOfTurn(pc, LLM(), fixed_s=0.288)
        for text in ("No.", "Ten of clubs.", "The arrangement will avoid."):
            await eot.verdict(text, text, None)

    try:
        asyncio.run(main())
    finally:
        LLM.worker.shutdown()
    assert default_config.pipeline.eot_sentence_min_words == 4
    assert readings == {"No.": False, "Ten of clubs.": False,
                        "The arrangement will avoid.": True}


class ScriptedEndOfTurn:
    """Verdicts with a scripted silence and delay (no model)."""
    signals = ["scripted"]
    smart_turn = None

    def __init__(self, silence_s: float, delay_s: float = 0.02, reason: str = "scripted"):
        self.silence_s, self.delay_s, self.reason = silence_s, delay_s, reason
        self.calls: list[tuple[float, str]] = []

    async def start(self):
        pass

    def aclose(self):
        pass

    def acoustic(self, audio):
        return None

    async def verdict(self, text, messages, acoustic):
        await asyncio.sleep(self.delay_s)
        self.calls.append((clock.now(), text))
        return Verdict(self.silence_s, None, None, self.reason)


class SayingASR(FakeASR):
    """Transcripts in the order of the calls (the same utterance heard longer and longer)."""

    def __init__(self, texts, delay=0.1):
        super().__init__(delay=delay)
        self.sequence = list(texts)

    async def recognize(self, ended):
        await asyncio.sleep(self.delay)
        text = self.sequence.pop(0) if len(self.sequence) > 1 else self.sequence[0]
        self.calls.append((clock.now(), text))
        return Transcript(ended.turn_id, clock.now(), text=text)


def adaptive_session(default_config, script, resumes, seconds, eot, asr=None, **vad):
    stages = Stages(vad=ScriptedVAD(script, resumes=resumes, **vad), asr=asr or FakeASR(),
                    llm=FakeLLM(), tts=FakeTTS())
    s = fake_session(default_config, stages, end_of_turn=eot)
    run_session(s, seconds)
    return s


def test_a_complete_verdict_commits_before_the_vad_closes_the_utterance(default_config):
    # the VAD would close it 1 s after the speech; the verdict asks for 0.1 s
    eot = ScriptedEndOfTurn(silence_s=0.1)
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, endpoint_s=1.0)
    [rec] = s.log.timeline
    # the pause on the frame at 2.08 s, ASR 0.1 s, verdict 0.02 s: by then the silence
    # asked for (0.1 s) has passed, so the turn commits at once
    assert rec["endpoint"] == pytest.approx(2.08 + 0.1 + 0.02, abs=1e-3)
    assert rec["playback_start"] < 2.5 < 3.0  # long before the VAD's close
    assert s.orchestrator.stats["early_endpoints"] == 1
    assert [t["status"] for t in s.log.transcript] == ["answered"]


def test_a_long_verdict_waits_for_its_silence(default_config):
    eot = ScriptedEndOfTurn(silence_s=0.5)
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, endpoint_s=1.0)
    [rec] = s.log.timeline
    # committed on the first frame at or after 2.0 + 0.5 s of silence
    assert 2.5 <= rec["endpoint"] < 2.5 + 0.033
    assert rec["playback_start"] == pytest.approx(rec["endpoint"], abs=0.033)


def test_speech_after_an_early_endpoint_reopens_the_turn_and_answers_it_once(default_config):
    # a pause at 1.5 s judged complete: the reply starts; the user goes on at 2.2 s
    eot = ScriptedEndOfTurn(silence_s=0.1)
    asr = SayingASR(["I would like", "I would like a table for two"])
    s = adaptive_session(default_config, [(1.0, 3.0)], [(1.5, 2.2)], 10.0, eot, asr=asr)
    orch, log, sink = s.orchestrator, s.log, s.sink
    assert orch.stats["reopened"] == 1
    assert [t["status"] for t in log.transcript] == ["reopened", "answered"]
    assert log.transcript[0]["assistant"]  # the cut reply is kept in the log
    # the history: one user message, the whole utterance, answered once
    assert [m.role for m in orch.history] == ["user", "assistant"]
    assert orch.history[0].content == "I would like a table for two"
    assert not orch.history[1].interrupted
    # nothing of the reopened reply plays after the user went on
    resumed = 2.2 + 1e-6
    final = log.timeline[1]["playback_start"]
    assert log.timeline[0]["playback_start"] < resumed < final
    for p in sink.placed:
        assert p.end(sink.rate) <= resumed + 0.033 or p.start >= final - 1e-6


def test_a_provisional_pause_starts_the_work_but_not_the_silence(default_config):
    """vad.early_pause_drop: the speculative turn starts where the speaker's level fell
    (1.8 s), 0.2 s before the absolute end (2.0 s, noise after the words); its verdict's
    silence counts from the confirmed end, so the turn ends no sooner, and its work was
    done by then."""
    eot = ScriptedEndOfTurn(silence_s=0.1, reason="complete")
    asr = FakeASR()
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, asr=asr, endpoint_s=1.0,
                         early_s=0.2)
    [rec] = s.log.timeline
    assert len(asr.calls) == 1 and asr.calls[0][0] == pytest.approx(1.864, abs=0.033)
    assert eot.calls[0][0] < 2.064  # the verdict, before the absolute pause
    # committed on the first frame at or after 2.0 + 0.1 s: not before, and not 0.12 s
    # (ASR and verdict) after the absolute pause either
    assert 2.1 <= rec["endpoint"] < 2.1 + 0.033
    assert s.orchestrator.stats["speculative_provisional"] == 1
    assert s.orchestrator.stats["speculative_started"] == 1
    assert [t["status"] for t in s.log.transcript] == ["answered"]


def test_a_provisional_turn_without_its_verdict_when_the_vad_closes_is_heard_again(
        default_config):
    """The VAD closes the utterance (here 0.3 s after its end) before the verdict of a
    turn started at a provisional pause is in: that turn's audio stops where the level
    fell, maybe inside the last word, so the turn is computed again on the whole
    utterance instead of being committed as it is."""
    eot = ScriptedEndOfTurn(silence_s=0.1, delay_s=1.0, reason="complete")
    asr = FakeASR()
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, asr=asr, endpoint_s=0.3,
                         early_s=0.2)
    assert [t[1] for t in asr.calls] == [1, 1]
    assert asr.calls[0][0] == pytest.approx(1.864, abs=0.033)  # at the provisional pause
    assert asr.calls[1][0] == pytest.approx(2.3, abs=0.033)  # at the VAD's end, all of it
    assert s.orchestrator.stats["speculative_committed"] == 0
    assert [t["status"] for t in s.log.transcript] == ["answered"]


def test_speech_back_at_the_speakers_level_discards_a_provisional_turn(default_config):
    eot = ScriptedEndOfTurn(silence_s=0.1)
    asr = SayingASR(["I would like", "I would like a table for two"])
    s = adaptive_session(default_config, [(1.0, 3.0)], [(1.5, 1.9, True)], 10.0, eot, asr=asr,
                         endpoint_s=1.0)
    orch = s.orchestrator
    assert orch.stats["speculative_provisional"] == 1
    assert orch.stats["speculative_discarded"] == 1
    assert orch.stats["early_endpoints"] == 1  # at the utterance's end only
    assert [t["status"] for t in s.log.transcript] == ["answered"]
    assert [m.content for m in orch.history][0] == "I would like a table for two"


def test_the_verdict_is_not_computed_when_the_vad_closes_first(default_config):
    # the ASR takes longer than the VAD's whole silence: no verdict, no extra LLM work
    eot = ScriptedEndOfTurn(silence_s=0.1)
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0)], endpoint_s=0.2), asr=FakeASR(delay=0.4),
                    llm=FakeLLM(), tts=FakeTTS())
    s = fake_session(default_config, stages, end_of_turn=eot)
    run_session(s, 8.0)
    assert eot.calls == []
    assert [t["status"] for t in s.log.transcript] == ["answered"]


def test_the_pauses_score_counts_premature_split_and_late():
    class C:  # a clip's id is all the score reads
        def __init__(self, i):
            self.id = i

    items = [Item(C("a+800ms"), np.zeros(1), 3.0, "split", 800),
             Item(C("b"), np.zeros(1), 2.0, "short"),
             Item(C("c+300ms"), np.zeros(1), 3.0, "split", 300)]
    users = [UserTurn(items[0].clip, 0.0, 3.0), UserTurn(items[1].clip, 10.0, 12.0),
             UserTurn(items[2].clip, 20.0, 23.0)]
    records = [
        # a: reopened after its reply had started (premature), then answered once
        {"user_speech_end": 1.2, "status": "reopened", "playback_start": 1.8},
        {"user_speech_end": 3.0, "status": "answered", "playback_start": 3.4},
        # b: answered late
        {"user_speech_end": 12.0, "status": "answered", "playback_start": 13.3},
        # c: the fixed silence: the first half answered, then the rest (split)
        {"user_speech_end": 21.0, "status": "interrupted", "playback_start": None},
        {"user_speech_end": 23.0, "status": "answered", "playback_start": 23.5},
    ]
    r = score(users, items, records, 30.0)
    assert [row["premature"] for row in r["rows"]] == [True, False, False]
    assert [row["split"] for row in r["rows"]] == [False, False, True]
    assert [row["late"] for row in r["rows"]] == [False, True, False]
    assert r["premature_rate"] == pytest.approx(1 / 3) and r["split_utterances"] == 1
    assert r["late_endpoints"] == 1
    assert [row["v2v_ms"] for row in r["rows"]] == pytest.approx([400, 1300, 500])
    assert r["utterances_pauses_upto_1s"] == 3


def test_the_pauses_set_up_to_1s_leaves_out_a_clip_with_a_longer_pause_of_its_own():
    """A natural clip whose own longest pause (measured) is over 1 s is not in the
    target's set; a split item counts by its inserted silence."""
    class C:
        def __init__(self, i):
            self.id = i

    items = [Item(C("digits"), np.zeros(1), 3.0, "natural", longest_pause_ms=1430),
             Item(C("read"), np.zeros(1), 2.0, "natural", longest_pause_ms=340),
             Item(C("c+1200ms"), np.zeros(1), 3.0, "split", 1200, longest_pause_ms=None),
             Item(C("d+800ms"), np.zeros(1), 3.0, "split", 800)]
    users = [UserTurn(it.clip, 10.0 * i, 10.0 * i + 3.0) for i, it in enumerate(items)]
    records = [  # the digits answered between their groups (premature), the rest once
        {"user_speech_end": 1.0, "status": "answered", "playback_start": 1.5},
        {"user_speech_end": 3.0, "status": "answered", "playback_start": 3.4},
        *({"user_speech_end": 10.0 * i + 3.0, "status": "answered",
           "playback_start": 10.0 * i + 3.4} for i in (1, 2, 3))]
    r = score(users, items, records, 40.0)
    assert [row["pause_class_ms"] for row in r["rows"]] == [1430, 340, 1200, 800]
    assert r["premature_rate"] == pytest.approx(1 / 4) and r["split_utterances"] == 1
    assert r["utterances_pauses_upto_1s"] == 2
    assert r["premature_rate_pauses_upto_1s"] == 0 and r["split_utterances_pauses_upto_1s"] == 0


def test_a_pause_after_a_complete_clause_is_reopened_and_merged_in_file_mode(
        tmp_path, corpus, default_config, asr):
    """Real models, file mode: "...and rather selfish" + 800 ms + "is to be ill-disposed":
    the first half sounds and reads complete, so its reply starts; the user goes on,
    and the utterance is answered once, whole."""
    c = clip(corpus, "librivox_sense-and-sensibility-01-0890")
    audio = read_wav(c.path)
    ws = words(asr, audio)
    i = len(ws) // 2 - 1
    at = int((ws[i].end + ws[i + 1].start) / 2 * 16000)
    silence = np.zeros(16000, np.float32)
    wav = tmp_path / "paused.wav"
    write_wav(wav, np.concatenate([silence, audio[:at], np.zeros(int(0.8 * 16000), np.float32),
                                   audio[at:], silence, silence]), 16000)
    session = asyncio.run(run_file(default_config, wav, tmp_path / "out", fast=True,
                                   console=Console(quiet=True)))
    history = session.orchestrator.history
    statuses = [t["status"] for t in session.log.transcript]
    assert [m.role for m in history] == ["user", "assistant"], statuses
    def tokens(text):
        return {"".join(ch for ch in w if ch.isalnum()) for w in text.lower().split()} - {""}

    said = tokens(history[0].content)
    for half in (ws[:i + 1], ws[i + 1:]):  # most words of each half, in the one message
        heard = tokens("".join(w.word for w in half))
        assert len(heard & said) >= len(heard) / 2, (history[0].content, heard)
    assert statuses.count("answered") == 1
    assert session.orchestrator.stats["early_endpoints"] >= 1


def test_a_backchannel_over_the_reply_does_not_lose_it(default_config, tts):
    """Real models: the user asks, and says "Okay." while the reply plays. The reply
    stops, the ASR hears a backchannel, and the reply resumes instead of being lost."""
    from pipeline.audio import FRAME_SAMPLES, resample
    from pipeline.clock import Clock
    from pipeline.events import AudioFrame, Sentence
    from pipeline.session import Session
    from pipeline.sinks import FileSink

    okay = asyncio.run(tts.speak(Sentence(0, 0.0, "Okay.", 0)))
    okay = resample(okay.samples, okay.sample_rate, 16000)
    # a request whose reply is long enough to be spoken over (a reply of one short
    # sentence may end before a backchannel can be heard over it)
    question = asyncio.run(tts.speak(Sentence(0, 0.0, "Tell me a fun fact about the moon.", 0)))
    question = resample(question.samples, question.sample_rate, 16000)
    session = Session(default_config, lambda st: FileSink(st.tts.sample_rate),
                      console=Console(quiet=True))

    async def main():
        async with session:
            clk = Clock()
            sink, sent = session.sink, [0]

            async def frame(x):
                sent[0] += len(x)
                await clk.sleep_until(sent[0] / 16000)
                return AudioFrame(-1, sent[0] / 16000, samples=x, sample_rate=16000)

            async def silence_until(done, limit_s=30.0):
                for _ in range(int(limit_s * 16000 / FRAME_SAMPLES)):
                    if done():
                        return
                    yield await frame(np.zeros(FRAME_SAMPLES, np.float32))

            async def frames():
                for audio in (np.zeros(16000, np.float32), question):
                    audio = np.pad(audio, (0, -len(audio) % FRAME_SAMPLES))
                    for i in range(0, len(audio), FRAME_SAMPLES):
                        yield await frame(audio[i:i + FRAME_SAMPLES])
                # the reply is playing, with more than a second of it still to come
                async for f in silence_until(lambda: sink.busy_until() > clk.now() + 1.2):
                    yield f
                said = np.pad(okay, (0, -len(okay) % FRAME_SAMPLES))
                for i in range(0, len(said), FRAME_SAMPLES):
                    yield await frame(said[i:i + FRAME_SAMPLES])
                async for f in silence_until(lambda: not session.busy
                                             and sink.busy_until() < clk.now() - 1.5):
                    yield f
            await session.run(frames(), clk)

    asyncio.run(main())
    statuses = [t["status"] for t in session.log.transcript]
    assert statuses in (["backchannel", "answered"], ["no_speech", "answered"]), \
        session.log.transcript
    assert session.orchestrator.stats["resumed"] == 1
    history = session.orchestrator.history
    assert [m.role for m in history] == ["user", "assistant"] and not history[1].interrupted
    reply = session.log.transcript[1]["assistant"]
    assert reply and history[1].content == reply


def test_a_cough_after_an_early_endpoint_does_not_lose_the_reply(default_config):
    # the user is done at 2.0 s; a cough at 2.5-2.7 s, inside the utterance's window,
    # stops the reply; the utterance heard again has no new words: the reply resumes
    eot = ScriptedEndOfTurn(silence_s=0.1)
    s = adaptive_session(default_config, [(1.0, 2.7)], [(2.0, 2.5)], 10.0, eot,
                         asr=SayingASR(["Book a table for two."]))
    orch, log = s.orchestrator, s.log
    assert orch.stats["reopened"] == 1 and orch.stats["resumed"] == 1
    assert [t["status"] for t in log.transcript] == ["no_speech", "answered"]
    assert [m.role for m in orch.history] == ["user", "assistant"]
    # the utterance heard again is the same words: the user's message is in it once
    assert orch.history[0].content == "Book a table for two."
    assert orch.history[1].content == "Sure thing. I can help with that. Here is a third sentence."
    assert len(s.stages.llm.requests) == 1  # written once
    assert log.transcript[0]["user"] == "Book a table for two."  # what was heard, logged


def test_a_reply_after_a_long_verdict_starts_only_when_its_silence_is_nearly_over(
        default_config):
    """pipeline.defer_replies: the verdict asks for 1.0 s of silence. The reply's LLM
    request waits until the silence left is 1.2x the compute of the turns before
    (0.6 s by default on the first turn), and the reply still plays at the endpoint."""
    eot = ScriptedEndOfTurn(silence_s=1.0)
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, endpoint_s=1.5)
    [rec] = s.log.timeline
    llm = s.orchestrator.stages.llm
    [request] = llm.requests
    assert request.t == pytest.approx(2.0 + 1.0 - 1.2 * 0.6, abs=0.033)
    assert 3.0 <= rec["endpoint"] < 3.0 + 0.033
    assert rec["playback_start"] == pytest.approx(rec["endpoint"], abs=0.033)
    assert s.orchestrator.stats["deferred_replies"] == 1


def test_a_deferred_reply_is_never_computed_when_the_user_goes_on(default_config):
    # a pause at 1.5 s judged unfinished (1.5 s of silence); the user goes on at 2.0 s,
    # before the reply was due (3.0 - 0.72): no LLM work for that pause
    eot = ScriptedEndOfTurn(silence_s=1.5)
    asr = SayingASR(["I would like", "I would like a table for two"])
    s = adaptive_session(default_config, [(1.0, 3.0)], [(1.5, 2.0)], 10.0, eot, asr=asr,
                         endpoint_s=2.0)
    stats = s.orchestrator.stats
    assert stats["deferred_discarded"] == 1 and stats["speculative_reply_wasted_s"] == 0
    llm = s.orchestrator.stages.llm
    assert [r.messages[-1].content for r in llm.requests] == ["I would like a table for two"]
    assert [t["status"] for t in s.log.transcript] == ["answered"]


def test_without_deferral_the_reply_starts_at_the_verdict(default_config):
    eot = ScriptedEndOfTurn(silence_s=1.0)
    config = default_config.replace(pipeline={"defer_replies": False})
    s = adaptive_session(config, [(1.0, 2.0)], (), 8.0, eot, endpoint_s=1.5)
    [request] = s.orchestrator.stages.llm.requests
    assert request.t < 2.0 + 0.064 + 0.1 + 0.02 + 0.033  # pause, ASR, verdict
    assert s.orchestrator.stats["deferred_replies"] == 0


def test_a_backchannel_resolved_at_its_early_endpoint_is_not_taken_again(default_config):
    # "Okay." over the reply (3.0-3.3 s) ends early (the verdict asks for 0.1 s), is a
    # backchannel, and the reply resumes; the VAD closes the same utterance 1 s after
    # it. That close must not launch "Okay." again as a turn of its own: the resumed
    # reply was then replaced without being recorded (seen live, half-duplex, 2026-11-30)
    eot = ScriptedEndOfTurn(silence_s=0.1)
    s = adaptive_session(default_config, [(1.0, 2.0), (3.0, 3.3)], (), 10.0, eot,
                         asr=SayingASR(["Book a table for two.", "Okay."]), endpoint_s=1.0)
    orch, log = s.orchestrator, s.log
    assert orch.stats["resumed"] == 1
    assert [(t["turn_id"], t["status"]) for t in log.transcript] == \
        [(2, "backchannel"), (1, "answered")], log.transcript
    assert log.transcript[1]["assistant"] == \
        "Sure thing. I can help with that. Here is a third sentence."
    assert [m.role for m in orch.history] == ["user", "assistant"]
    assert len(s.stages.llm.requests) == 1  # "Okay." was never answered


def test_words_after_a_backchannel_taken_at_its_early_endpoint_are_a_new_turn(default_config):
    # "Okay." at 3.0 s is taken as a backchannel at its early endpoint and the reply
    # resumes; the user goes on at 3.6 s within the same utterance: that is new speech
    # over the reply, which ends interrupted, and the whole utterance is the next turn
    eot = ScriptedEndOfTurn(silence_s=0.1)
    asr = SayingASR(["Book a table for two.", "Okay.", "Okay. Make it three."])
    s = adaptive_session(default_config, [(1.0, 2.0), (3.0, 4.2)], [(3.3, 3.6)], 12.0, eot,
                         asr=asr, endpoint_s=1.0)
    statuses = [(t["turn_id"], t["status"]) for t in s.log.transcript]
    assert statuses == [(2, "backchannel"), (1, "interrupted"), (2, "answered")], \
        s.log.transcript
    assert s.log.transcript[2]["user"] == "Okay. Make it three."
    assert [m.role for m in s.orchestrator.history] == ["user", "assistant"] * 2


def test_a_turn_replaced_by_a_path_that_forgot_it_is_recorded_not_lost(default_config,
                                                                        monkeypatch):
    # The safety net under the fix above: with that fix taken out, the VAD's close of
    # "Okay." launches it again as a turn, which opens while the resumed reply is the
    # current turn. The reply must still be recorded (interrupted), not dropped.
    from pipeline.orchestrator import Orchestrator
    commit = Orchestrator._commit

    async def forgetful_commit(self, ended):
        self._resolved_early = None
        await commit(self, ended)

    monkeypatch.setattr(Orchestrator, "_commit", forgetful_commit)
    eot = ScriptedEndOfTurn(silence_s=0.1)
    s = adaptive_session(default_config, [(1.0, 2.0), (3.0, 3.3)], (), 10.0, eot,
                         asr=SayingASR(["Book a table for two.", "Okay."]), endpoint_s=1.0)
    orch, log = s.orchestrator, s.log
    assert orch.stats["superseded"] == 1
    statuses = [(t["turn_id"], t["status"]) for t in log.transcript]
    assert statuses == [(2, "backchannel"), (1, "interrupted"), (2, "answered")], statuses
    # the interrupted reply is in the history before the prompt of the turn after it
    assert [m.role for m in orch.history] == ["user", "assistant"] * 2
    assert s.stages.llm.requests[1].messages[-3].content == "Book a table for two."


@pytest.mark.parametrize("heard, audio_s, status", [
    ("Here is a third sentence.", 1.4, "echo"),  # began under the reply: its echo
    ("What about tomorrow?", 1.4, "answered"),  # began under it, other words: the user's
    ("Here is a third sentence.", 0.3, "answered")])  # said after it: the user's
def test_the_echo_of_a_replys_end_heard_after_it_played_out_is_not_a_turn(
        default_config, heard, audio_s, status):
    # The microphone hears the reply later than the speaker plays it: the echo of its last
    # words, too faint to be a barge-in under the reply, can start an utterance just after
    # it played out, whose pre-roll reaches back under the reply (seen live, half-duplex).
    # Words that match what was playing then are logged as echo; other words are a turn.
    def session(script, texts, seconds, audio_s=0.1):
        stages = Stages(vad=ScriptedVAD(script, endpoint_s=1.0, audio_s=audio_s),
                        asr=SayingASR(texts), llm=FakeLLM(), tts=FakeTTS())
        s = fake_session(default_config, stages, end_of_turn=ScriptedEndOfTurn(silence_s=0.1))
        run_session(s, seconds)
        return s

    alone = session([(1.0, 2.0)], ["Book a table for two."], 12.0)
    played_out = alone.orchestrator._last_reply.queued[-1].end
    s = session([(1.0, 2.0), (played_out + 0.05, played_out + 0.35)],
                ["Book a table for two.", heard], played_out + 4.0, audio_s)
    statuses = [(t["turn_id"], t["status"]) for t in s.log.transcript]
    assert statuses == [(1, "answered"), (2, status)], statuses
    assert len(s.stages.llm.requests) == (1 if status == "echo" else 2)
    assert [m.role for m in s.orchestrator.history] == \
        ["user", "assistant"] * len(s.stages.llm.requests)


def test_a_provisional_turn_not_judged_complete_is_heard_again_on_the_confirmed_audio(
        default_config):
    """The audio of a provisional turn stops where the speaker's level fell, maybe inside
    the last word (Whisper then heard "...the true printed book," as trailing off): a
    verdict other than "complete" is computed again on the audio up to the confirmed end."""
    eot = ScriptedEndOfTurn(silence_s=0.5)  # "scripted": not complete
    asr = SayingASR(["the true printed book,", "the true printed book."])
    s = adaptive_session(default_config, [(1.0, 2.0)], (), 8.0, eot, asr=asr, endpoint_s=1.0,
                         early_s=0.2)
    orch = s.orchestrator
    assert orch.stats["speculative_provisional"] == 1
    assert orch.stats["provisional_heard_again"] == 1
    assert [text for _, text in asr.calls] == ["the true printed book,", "the true printed book."]
    assert [t["status"] for t in s.log.transcript] == ["answered"]
    assert orch.history[0].content == "the true printed book."
    [rec] = s.log.timeline
    assert 2.5 <= rec["endpoint"] < 2.5 + 0.033  # its silence, from the confirmed end
