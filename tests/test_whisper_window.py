"""The short-window guard (stages/whisper_window.py): what it rejects, what it repairs."""
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
