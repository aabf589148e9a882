"""The compute floor benchmark (eval/floor.py): the critical path's steps, each alone."""
import asyncio

from eval.floor import STEPS, render, run_floor, summarize


def test_the_floor_times_each_step_of_a_real_conversation(default_config):
    result = asyncio.run(run_floor(default_config, turns=2))
    rows = result["rows"]
    assert len(rows) == 2 and result["semantic_eot"] and result["listen_ahead"]
    for row in rows:
        assert row["user_text"], row  # the report's first clips are speech
        assert all(row[step] > 0 for step in STEPS), row
        assert abs(row["floor"] - default_config.vad.pause_ms
                   - sum(row[step] for step in STEPS)) < 1e-6
        # the chunk timed is the reply's own beginning, cut where the splitter cuts it
        assert row["first_text"] and row["reply"].startswith(row["first_text"].rstrip()), row
        assert len(row["first_text"].split()) <= len(row["reply"].split())


def test_the_summary_leaves_out_turns_without_words_and_the_table_names_the_target():
    rows = [{"clip": "a", "asr_final": 100.0, "eot_verdict": 60.0, "first_chunk": 70.0,
             "tts_first_audio": 40.0, "floor": 302.0},
            {"clip": "b", "asr_final": 120.0, "eot_verdict": 80.0, "first_chunk": 90.0,
             "tts_first_audio": 50.0, "floor": 372.0},
            {"clip": "c", "asr_final": 90.0, "user_text": "", "skipped": "no words heard"}]
    summary = summarize(rows)
    assert summary["turns"] == 2
    assert summary["floor"]["p50"] == 337.0 and summary["asr_final"]["p50"] == 110.0
    table = render(summary, 32, None)
    assert "| pause heard (vad.pause_ms) | 32 | 32 |" in table
    assert "p50 <= 250 / p90 <= 400 ms: the floor is 1.35x" in table
    assert "p50 <= 450 / p90 <= 650 ms" in render(summary, 32, 0.4)
