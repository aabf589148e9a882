"""The report's numbers are computed from the timelines: a known timeline gives a
known table."""
import pytest

from eval.stats import critical_path_ms, critical_path_table, critical_paths, durations_ms, \
    markdown_table, phase_table, under_share


def turn(v2v_ms, asr_ms=100.0):
    end = 10.0
    return {"speech_end": end, "endpoint": end + 0.3, "asr_start": end + 0.064,
            "asr_final": end + 0.064 + asr_ms / 1000, "llm_first_token": end + 0.25,
            "first_sentence": end + 0.27, "tts_first_audio": end + 0.29,
            "playback_start": end + v2v_ms / 1000}


def test_durations_of_one_turn():
    d = durations_ms(turn(350))
    assert d["endpoint delay"] == pytest.approx(300)
    assert d["ASR"] == pytest.approx(100)
    assert d["LLM time to first token"] == pytest.approx(250 - 164)
    assert d["first sentence"] == pytest.approx(20)
    assert d["TTS first audio"] == pytest.approx(20)
    assert d["V2V"] == pytest.approx(350)


def test_table_percentiles_and_share():
    turns = [turn(v) for v in (300, 400, 450, 600, 1000)] + [turn(350, asr_ms=500)]
    table = phase_table(turns)
    assert table["V2V"]["p50"] == pytest.approx(425)  # median of 300,350,400,450,600,1000
    assert table["V2V"]["max"] == pytest.approx(1000)
    assert table["V2V"]["p90"] == pytest.approx(800)  # numpy linear interpolation
    assert table["ASR"]["max"] == pytest.approx(500)
    assert under_share(turns) == pytest.approx(4 / 6)
    md = markdown_table(turns)
    assert "| V2V | 425 | 800 | 1000 |" in md
    assert "V2V under 500 ms: 67%" in md
    assert "| *500 ms ceiling* | 500 |" in md


def test_missing_phase_is_left_out_not_zero():
    t = turn(400)
    del t["tts_first_audio"]
    assert durations_ms(t)["TTS first audio"] is None
    assert phase_table([t])["TTS first audio"]["n"] == 0


@pytest.mark.parametrize("profile", ["default", "fast", "server", "multilingual", "gpu-vllm",
                                     "slow-llm"])
def test_every_ablation_variant_is_a_valid_config_of_every_profile(profile):
    """The ablation once crashed on the fast and server profiles, after minutes of runs:
    a switch whose key the profile's backend lacks (espeak has no thread count, the
    openai backend no KV cache) is left out, and every variant validates."""
    from eval.report import SWITCHES, applicable, apply, naive_overrides
    from pipeline.config import load_config
    from tests.conftest import ROOT

    base = load_config(ROOT / "configs" / f"{profile}.yaml")
    variants = [applicable(base, over) for over in SWITCHES.values()]
    for over in [*variants, naive_overrides(base)]:
        config = apply(base, over)
        for section, values in over.items():
            assert all(config.to_dict()[section][k] == v for k, v in values.items())
    skipped = [name for name, over in zip(SWITCHES, variants) if not over]
    if profile == "server":
        assert "KV-cache reuse" in skipped
    if profile == "default":
        assert skipped == []


def test_sentence_gaps_share_of_replies_with_an_audible_gap():
    from eval.report import sentence_gaps

    turns = [{"sentence_gaps_ms": [0.0, 20.0]}, {"sentence_gaps_ms": [400.0]},
             {"sentence_gaps_ms": []}, {}]
    g = sentence_gaps(turns)
    assert g["multi_chunk_replies"] == 2 and g["gapped_reply_share"] == 0.5
    assert g["sentence_gap_ms"]["p50"] == 20.0 and g["sentence_gap_ms"]["n"] == 3


def verdict_turn(reason, lag_ms, wait_ms):
    """A speculative turn's marks: lag, a 32 ms pause, ASR 140, verdict 50, the wait the
    verdict asks for, first sentence 60, TTS 35, then playback."""
    t, marks = 10.0, {}
    for mark, ms in (("user_speech_end", lag_ms), ("asr_start", 32), ("asr_final", 140),
                     ("eot_decided", 50), ("llm_first_token", wait_ms),
                     ("first_sentence", 60), ("tts_first_audio", 35), ("playback_start", 0)):
        t += ms / 1000
        marks[mark] = t
    return {"speech_end": 10.0, **marks, "end_of_turn": {"reason": reason}}


def test_the_critical_path_adds_up_to_each_turns_v2v():
    t = verdict_turn("complete", 60, 4)
    steps = critical_path_ms(t)
    assert [round(steps[k]) for k in ("VAD lag", "pause heard", "ASR", "end-of-turn verdict",
                                      "reply start, first token", "first sentence",
                                      "TTS first audio", "endpoint wait, output")] == \
        [60, 32, 140, 50, 4, 60, 35, 0]
    assert sum(steps.values()) == pytest.approx(durations_ms(t)["V2V"])
    # without a verdict (a fixed silence) its step joins the next one: still the V2V
    del t["eot_decided"], t["end_of_turn"]
    steps = critical_path_ms(t)
    assert steps["end-of-turn verdict"] is None
    assert steps["reply start, first token"] == pytest.approx(54)
    assert sum(v for v in steps.values() if v is not None) == pytest.approx(
        durations_ms(t)["V2V"])
    assert critical_path_ms({"speech_end": 1.0}) == {}  # no reply: no path


def test_the_critical_path_is_grouped_by_verdict():
    turns = [verdict_turn("complete", lag, 4) for lag in (20, 60, 100)] + \
        [verdict_turn("unsure", 60, 300)]
    paths = critical_paths(turns)
    assert list(paths) == ["complete", "unsure"]  # the most turns first
    assert paths["complete"]["turns"] == 3
    assert paths["complete"]["steps_p50_ms"]["VAD lag"] == pytest.approx(60)
    assert paths["complete"]["v2v_p50_ms"] == pytest.approx(60 + 32 + 140 + 50 + 4 + 60 + 35)
    assert paths["unsure"]["steps_p50_ms"]["reply start, first token"] == pytest.approx(300)
    table = critical_path_table(paths)
    assert "| step, p50 ms | complete (3) | unsure (1) |" in table
    assert "| ASR | 140 | 140 |" in table and "| **V2V** | **381** | **677** |" in table
