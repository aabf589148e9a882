"""Orchestration with fake stages and scripted latencies: exact timelines and
barge-in at a given moment."""

import pytest

from pipeline.console import Console
from pipeline.orchestrator import Orchestrator, Stages
from pipeline.session_log import SessionLog
from pipeline.sinks import FileSink
from tests.fakes import FakeASR, FakeLLM, FakeTTS, ScriptedVAD, run_session


def session(default_config, script, seconds, **cfg):
    config = default_config.replace(pipeline=cfg) if cfg else default_config
    stages = Stages(vad=ScriptedVAD(script), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())
    sink = FileSink(16000)
    log = SessionLog(None)
    orch = Orchestrator(config, stages, sink, log, Console(quiet=True))
    run_session(orch, seconds)
    return orch, stages, sink, log


def test_timeline_phases_follow_the_scripted_latencies(default_config):
    orch, stages, sink, log = session(default_config, [(1.0, 2.0)], 8.0, speculative=False)
    [rec] = log.timeline
    assert rec["status"] == "answered"
    assert rec["user_speech_end"] == 2.0
    assert rec["endpoint"] == pytest.approx(2.3, abs=0.04)
    assert rec["asr_final"] - rec["endpoint"] == pytest.approx(0.10, abs=0.03)
    assert rec["llm_first_token"] - rec["asr_final"] == pytest.approx(0.05, abs=0.03)
    # "Sure thing." is the first sentence: two tokens, so one per-token delay, and the
    # boundary is known when the next word arrives (another per-token delay)
    assert rec["first_sentence"] - rec["llm_first_token"] == pytest.approx(0.04, abs=0.03)
    assert rec["tts_first_audio"] - rec["first_sentence"] == pytest.approx(0.04, abs=0.03)
    assert rec["playback_start"] == pytest.approx(rec["tts_first_audio"], abs=0.01)
    assert rec["v2v_ms"] == pytest.approx((rec["playback_start"] - 2.0) * 1000, abs=0.2)
    assert stages.tts.texts[0][1] == "Sure thing."
    # TTS got its first sentence while the LLM was still writing the rest
    assert stages.tts.texts[0][0] < orch.log.timeline[0]["playback_start"] + 0.5
    assert [p.text for p in sink.placed] == ["Sure thing.", "I can help with that.",
                                             "Here is a third sentence."]
    assert log.transcript[0]["assistant"] == "Sure thing. I can help with that. Here is a third sentence."


def test_naive_mode_waits_for_the_whole_reply(default_config):
    _, stages, sink, log = session(default_config, [(1.0, 2.0)], 8.0, stream_tts=False)
    [rec] = log.timeline
    assert len(sink.placed) == 1 and sink.placed[0].text.startswith("Sure thing. I can")
    # all 12 words generated before synthesis: ~11 per-token delays after the first token
    assert rec["first_sentence"] - rec["llm_first_token"] == pytest.approx(0.22, abs=0.05)


def test_barge_in_cuts_playback_and_keeps_only_played_text(default_config):
    # reply to turn 1 starts ~2.5 s and lasts ~3.6 s; the user speaks again at 3.5 s
    orch, stages, sink, log = session(default_config, [(1.0, 2.0), (3.5, 4.0)], 9.0)
    first, second = log.transcript
    assert first["status"] == "interrupted" and first["interrupted"] is True
    # "Sure thing." (0.6 s) then "I can help with that." (1.5 s) started before 3.5 s
    assert first["assistant"] == "Sure thing. I can help with that."
    assert second["status"] == "answered"
    # nothing of turn 1 is heard after the barge-in
    t1_end = max(p.end(16000) for p in sink.placed if p.turn_id == 1)
    assert t1_end == pytest.approx(3.5, abs=0.04)
    # the history holds the interrupted, partial reply, and the next prompt saw it
    assert orch.history[1].content == "Sure thing. I can help with that."
    assert orch.history[1].interrupted
    prompt = stages.llm.requests[1].messages
    assert prompt[2].content.startswith("Sure thing. I can help with that.")
    assert prompt[2].content != orch.history[1].content  # marked as interrupted


def test_speech_during_processing_cancels_the_turn(default_config):
    # the second utterance starts 0.1 s after the first endpoint: turn 1 never speaks
    orch, stages, sink, log = session(default_config, [(1.0, 2.0), (2.4, 3.0)], 8.0,
                                      speculative=False)
    assert log.transcript[0]["status"] == "interrupted"
    assert log.transcript[0]["user"] == "hello 1"  # what the user said is kept
    assert log.transcript[0]["assistant"] == ""
    assert [m.role for m in stages.llm.requests[-1].messages] == ["system", "user", "user"]
    assert all(p.turn_id == 2 for p in sink.placed)
    assert log.transcript[1]["status"] == "answered"


def test_history_carried_between_turns(default_config):
    orch, stages, sink, log = session(default_config, [(1.0, 1.5), (7.0, 7.5)], 12.0)
    assert [t["status"] for t in log.transcript] == ["answered", "answered"]
    second_prompt = stages.llm.requests[1].messages
    assert [m.role for m in second_prompt] == ["system", "user", "assistant", "user"]
    assert second_prompt[1].content == "hello 1"


def test_fast_mode_skips_idle_time_but_times_turns(default_config):
    import time
    t0 = time.monotonic()
    _, _, _, log = session(default_config, [(10.0, 11.0)], 30.0)
    assert time.monotonic() - t0 < 10  # 30 s of input, mostly skipped
    assert log.timeline[0]["v2v_ms"] > 300  # endpoint 0.3 s + scripted processing


def test_speculative_turn_starts_at_the_pause_and_plays_at_the_endpoint(default_config):
    orch, stages, sink, log = session(default_config, [(1.0, 2.0)], 8.0)
    [rec] = log.timeline
    assert rec["speculative"] is True
    # ASR started at the pause (2.064 s), before the endpoint (2.3 s)
    assert rec["asr_start"] == pytest.approx(2.064, abs=0.04)
    assert rec["asr_final"] < rec["endpoint"]
    # everything was ready before the endpoint: playback starts right at it
    assert rec["playback_start"] == pytest.approx(rec["endpoint"], abs=0.02)
    assert orch.stats["speculative_committed"] == 1 and orch.stats["speculative_discarded"] == 0


def test_speculative_work_is_discarded_when_speech_resumes(default_config):
    # a pause at 1.5 s inside the utterance, speech back at 1.7 s
    config = default_config
    stages = Stages(vad=ScriptedVAD([(1.0, 2.0)], resumes=[(1.5, 1.7)]), asr=FakeASR(),
                    llm=FakeLLM(), tts=FakeTTS())
    sink, log = FileSink(16000), SessionLog(None)
    orch = Orchestrator(config, stages, sink, log, Console(quiet=True))
    run_session(orch, 8.0)
    assert orch.stats["speculative_started"] == 2
    assert orch.stats["speculative_discarded"] == 1
    assert orch.stats["speculative_committed"] == 1
    assert 0.1 < orch.stats["speculative_wasted_s"] < 0.2  # from 1.564 to 1.7 s
    assert len(log.transcript) == 1 and log.transcript[0]["status"] == "answered"
    assert all(p.start >= 2.29 for p in sink.placed)  # nothing played before the endpoint


def test_without_speculation_work_starts_at_the_endpoint(default_config):
    _, _, _, log = session(default_config, [(1.0, 2.0)], 8.0, speculative=False)
    [rec] = log.timeline
    assert rec["speculative"] is False
    assert rec["asr_start"] == pytest.approx(rec["endpoint"], abs=0.01)
    assert rec["asr_final"] - rec["endpoint"] == pytest.approx(0.10, abs=0.03)
