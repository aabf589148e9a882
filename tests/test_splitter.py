import random

import pytest

from pipeline.splitter import SentenceSplitter


def split_tokenwise(text, tokens=None, **kw):
    s = SentenceSplitter(**kw)
    out = []
    for tok in tokens if tokens is not None else list(text):
        out += list(s.feed(tok))
    return out + list(s.flush())


@pytest.mark.parametrize("text,expected", [
    ("It costs $29.99 today. Thanks!", ["It costs $29.99 today.", "Thanks!"]),
    ("Dr. Smith is here. Mr. Jones left.", ["Dr. Smith is here.", "Mr. Jones left."]),
    ("Use it, e.g. a hammer. Done.", ["Use it, e.g. a hammer.", "Done."]),
    ("Wait... what happened? Nothing... Really.", ["Wait... what happened?", "Nothing...",
                                                    "Really."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("The U.S. Army is big. J. K. Rowling wrote it.", ["The U.S. Army is big.",
                                                      "J. K. Rowling wrote it."]),
    ("Pi is 3.14159 roughly. Yes.", ["Pi is 3.14159 roughly.", "Yes."]),
    ("We sold 1,000 units, and more. Good.", ["We sold 1,000 units,", "and more.", "Good."]),
    ("Is it? Yes! No.", ["Is it?", "Yes!", "No."]),
    ("No final punctuation", ["No final punctuation"]),
])
def test_sentences_fed_character_by_character(text, expected):
    assert split_tokenwise(text) == expected


def test_first_chunk_may_be_a_clause_later_ones_are_sentences():
    text = "Well, I think that you are right, and it is fine. Then, we go on, later, fine."
    out = split_tokenwise(text, min_clause_words=3)
    assert out == ["Well, I think that you are right,", "and it is fine.",
                   "Then, we go on, later, fine."]
    assert split_tokenwise(text, first_clause=False) == [
        "Well, I think that you are right, and it is fine.", "Then, we go on, later, fine."]


def test_after_a_short_start_the_next_chunk_may_be_a_clause_too():
    text = "I'm glad! You're very kind and generous, and I'll do everything to help you."
    assert split_tokenwise(text, clause_words=8) == [
        "I'm glad!", "You're very kind and generous,", "and I'll do everything to help you."]
    assert split_tokenwise(text) == [  # clause_words=0: the first chunk only
        "I'm glad!", "You're very kind and generous, and I'll do everything to help you."]
    # once the chunks sent hold clause_words words, sentences are whole again
    long_start = "That is a very good idea for the weekend. " + text
    assert split_tokenwise(long_start, clause_words=8)[2] == (
        "You're very kind and generous, and I'll do everything to help you.")
    # a clause still needs min_clause_words words, and first_clause off turns all off
    assert split_tokenwise("Yes! Oh, well, it is fine, you see.", clause_words=8) == [
        "Yes!", "Oh, well, it is fine,", "you see."]
    assert split_tokenwise(text, first_clause=False, clause_words=8) == [
        "I'm glad!", "You're very kind and generous, and I'll do everything to help you."]


def test_after_a_short_start_a_long_sentence_without_punctuation_is_cut_too():
    # this session's slow run: the first chunk played, and the rest of the 17-word sentence,
    # written and synthesized whole, came 648 ms after it
    text = ('The word "old-sposed" is a metaphorical expression that means someone has '
            "become less kind over the years. It is rare.")
    tokens = [t + " " for t in text.split(" ")]  # word by word, as the LLM writes
    assert split_tokenwise(text, tokens, max_first_words=3, clause_words=8,
                           max_next_words=8) == [
        'The word "old-sposed"', "is a metaphorical expression that means someone has",
        "become less kind over the years.", "It is rare."]
    # null: punctuation only, as before
    assert split_tokenwise(text, tokens, max_first_words=3, clause_words=8) == [
        'The word "old-sposed"',
        "is a metaphorical expression that means someone has become less kind over the years.",
        "It is rare."]
    # a sentence that ends within max_next_words words stays whole, and once the chunks sent
    # hold clause_words words, long sentences are whole again
    text = "I'm glad! Let us meet at the station. It is a long way from here to the old town."
    assert split_tokenwise(text, max_first_words=3, clause_words=8, max_next_words=6) == [
        "I'm glad!", "Let us meet at the station.",
        "It is a long way from here to the old town."]


def test_boundary_waits_for_the_next_non_space_character():
    s = SentenceSplitter()
    assert list(s.feed("Hello there.")) == []
    assert list(s.feed("  ")) == []
    assert list(s.feed("H")) == ["Hello there."]
    assert list(s.flush()) == ["H"]


def test_llm_like_tokens_never_split_inside_a_word():
    text = ("Sure, the meeting with Dr. Brown is at 3.30 p.m. on Friday. It costs $12.50 per "
            "person... or so. \"Great!\" she said. Let's go.")
    rng = random.Random(7)
    for _ in range(50):
        tokens, i = [], 0
        while i < len(text):
            n = rng.randint(1, 6)
            tokens.append(text[i:i + n])
            i += n
        out = split_tokenwise(text, tokens)
        assert " ".join(out) == " ".join(text.split())  # nothing lost, nothing reordered
        for chunk in out:
            assert text.find(chunk) >= 0
            end = text.find(chunk) + len(chunk)
            assert end == len(text) or text[end].isspace()  # cut only at whitespace
        assert out[0] == "Sure, the meeting with Dr. Brown is at 3.30 p.m. on Friday."


def test_reset_between_turns():
    s = SentenceSplitter()
    list(s.feed("Half a sent"))
    s.reset()
    assert list(s.feed("New turn. Next")) == ["New turn."]


def test_long_first_sentence_is_cut_after_max_words_on_a_word_boundary():
    text = "She can sack these things into three red bags and we will meet her. Then more."
    out = split_tokenwise(text, max_first_words=8)
    assert out == ["She can sack these things into three red", "bags and we will meet her.",
                   "Then more."]
    # later sentences are never cut by word count
    assert split_tokenwise("Hi. " + text, max_first_words=3)[1:] == [
        "She can sack these things into three red bags and we will meet her.", "Then more."]
    # the cut waits for the next word to begin, so a word is never split
    s = SentenceSplitter(max_first_words=2)
    assert list(s.feed("one two")) == [] and list(s.feed(" t")) == ["one two"]
