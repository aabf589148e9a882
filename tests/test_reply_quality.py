"""Reply quality: the scoring rules, the echo guard (rules and the real model), the
primer and history shaping in the prompt, the spoken benchmark through the real
pipeline, and the quality profile's bigger model answering."""
from types import SimpleNamespace

import pytest

from eval.questions import QUESTIONS, Question, score_reply, summarize
from pipeline.conversation import Conversation
from pipeline.events import ChatMessage, LLMRequest
from pipeline.truncation import HistoryWindow
from stages.echo_guard import EchoGuard, words
from stages.llm_settings import DEFAULT_PRIMER
from tests.conftest import aiter_of, collect, run


def reply_of(llm, messages):
    deltas = run(collect(llm.process(aiter_of([LLMRequest(1, 0.0, tuple(messages))]))))
    return "".join(d.text for d in deltas).strip()


def head(llm):
    return Conversation(llm, None).system(None)


# ---- scoring ------------------------------------------------------------------------------
def test_a_parrot_is_an_echo_and_an_answer_that_restates_the_question_is_not():
    fact = Question("What is the capital of France?", r"\bparis\b", "fact")
    said = Question("Go forward ten meters.", None, "statement")
    assert score_reply(fact, fact.text, "The capital of France is Paris.")["answered"]
    assert not score_reply(fact, fact.text, "The capital of France is Paris.")["echo"]
    assert score_reply(fact, fact.text, "The capital of France is France.")["echo"]
    assert not score_reply(fact, fact.text, "The capital of France is Lyon.")["echo"]  # wrong
    said_ = Question("It is raining outside.", None, "statement")
    assert score_reply(said_, said_.text, "Good evening! It is raining outside.")["echo"]
    assert score_reply(said, said.text, "Go forward ten meters.")["echo"]
    assert not score_reply(said, said.text, "Sorry, I can't move.")["echo"]
    rows = [score_reply(said, said.text, "Okay."), score_reply(said, said.text, "okay"),
            score_reply(fact, fact.text, None), score_reply(fact, fact.text, "Paris is")]
    s = summarize(rows)
    assert s["distinct_rate"] == 2 / 4  # "Okay." and "okay" are one reply; no reply is none
    assert s["empty_rate"] == 1 / 4 and s["cut_rate"] == 2 / 4  # "okay", "Paris is": no full stop
    assert s["answer_rate"] == 1 / 2 and s["questions_with_fact"] == 2


def test_the_question_set_has_facts_follow_ups_and_statements():
    kinds = [q.kind for q in QUESTIONS]
    assert {"fact", "follow-up", "statement", "open"} <= set(kinds)
    assert sum(q.expect is not None for q in QUESTIONS) >= 15
    # the primer's examples are not the questions it is measured on
    primed = {" ".join(words(u)) for u, _ in DEFAULT_PRIMER}
    assert not primed & {" ".join(words(q.text)) for q in QUESTIONS}


# ---- the echo guard's rules ---------------------------------------------------------------
def guard(user, replies=(), n=3):
    return EchoGuard(lambda ids: "", 0, user, replies, run_words=n)


def test_the_reply_may_not_start_with_the_users_first_word():
    g = guard("Go forward ten meters.")
    assert g.forbidden("Go") and g.forbidden(" G") and g.forbidden("Go ")  # "G" can only grow
    assert not g.forbidden("Good") and not g.forbidden("Sorry, go")  # another word; not first
    assert not guard("What is two plus three?").forbidden("Two plus three is five.")


def test_the_reply_may_not_copy_a_run_of_an_earlier_reply():
    g = guard("What do bees make?", ["The opposite of hot is cold."])
    assert g.forbidden("The opposite of")
    assert g.forbidden("The opposite o")  # an open word that can only become "of"
    assert not g.forbidden("The opposite")  # two words: allowed
    assert not g.forbidden("The opposite is")
    assert not g.forbidden("Bees make honey, the opposite.")


def test_the_guard_blocks_only_forbidden_top_tokens():
    import numpy as np
    vocab = {0: "Go", 1: " Sorry", 2: "Okay", 3: "G"}
    g = EchoGuard(lambda ids: "".join(vocab[i] for i in ids), 0, "Go forward.", (), top_k=4)
    scores = np.array([5.0, 1.0, 2.0, 0.5])
    out = g(np.array([], dtype=np.intc), scores.copy())
    assert out[0] == -np.inf and out[3] == -np.inf and out[1] == 1.0 and out[2] == 2.0
    assert g.blocked == 2


# ---- the real model ------------------------------------------------------------------------
def test_the_bundled_model_does_not_parrot_a_statement_with_the_guard_on(llm):
    for said in ("Go forward ten meters.", "The weather is nice today.",
                 "I am going to the store later."):
        reply = reply_of(llm, (*head(llm), ChatMessage("user", said)))
        assert reply, said
        assert words(reply)[0] != words(said)[0], (said, reply)


def test_the_bundled_model_does_not_repeat_an_earlier_reply(llm):
    earlier = (ChatMessage("user", "What is the opposite of hot?"),
               ChatMessage("assistant", "The opposite of hot is cold."))
    for q in ("What do bees make?", "How many months are in a year?"):
        reply = reply_of(llm, (*head(llm), *earlier, ChatMessage("user", q)))
        w = words(reply)
        runs = {tuple(w[i:i + 3]) for i in range(len(w) - 2)}
        assert ("the", "opposite", "of") not in runs and ("of", "hot", "is") not in runs, reply


# ---- primer and history shaping ---------------------------------------------------------
def test_the_primer_follows_the_system_prompt_and_is_never_truncated(llm):
    conv = Conversation(llm, budget=None)
    h = conv.system(None)
    assert h[0].role == "system" and len(h) == 1 + 2 * len(DEFAULT_PRIMER)
    assert [m.role for m in h[1:3]] == ["user", "assistant"]
    n_head = llm.count_tokens(h)
    window = HistoryWindow(n_head + 60)
    history = [m for i in range(20) for m in (ChatMessage("user", f"question {i} " + "x " * 8),
                                              ChatMessage("assistant", f"answer {i} " + "y " * 8))]
    msgs = window.build(h, history, "the newest question", llm.count_tokens)
    assert msgs[:len(h)] == h and msgs[-1].content == "the newest question"
    assert llm.count_tokens(msgs) <= n_head + 60
    assert window.prefix(h, history, llm.count_tokens)[:len(h)] == h
    # without a primer (primer: []), only the system prompt heads the prompt
    bare = SimpleNamespace(config=llm.config.model_copy(update={"primer": []}))
    assert Conversation(bare, None).system(None) == h[:1]


def test_history_max_turns_keeps_the_newest_whole_turns():
    history = [m for i in range(6) for m in (ChatMessage("user", f"q{i}"),
                                             ChatMessage("assistant", f"a{i}"))]
    count = lambda msgs: sum(len(m.content) for m in msgs)  # noqa: E731
    window = HistoryWindow(None, max_turns=2)
    msgs = window.build("sys", history, "q6", count)
    assert [m.content for m in msgs] == ["sys", "q4", "a4", "q5", "a5", "q6"]
    assert [m.content for m in window.prefix("sys", history, count)] == ["sys", "q4", "a4",
                                                                           "q5", "a5"]
    assert len(HistoryWindow(None, max_turns=0).build("sys", history, "q6", count)) == 2
    assert len(HistoryWindow(None).build("sys", history, "q6", count)) == 14


# ---- the spoken benchmark, through the whole pipeline -----------------------------------
def test_the_spoken_question_benchmark_scores_every_turn(default_config):
    from eval.quality import headline, score_run, synthesize
    from eval.scripted import run_conversation
    # France, Germany (a follow-up that needs the history), a statement
    questions = (QUESTIONS[0], QUESTIONS[1], QUESTIONS[5])
    clips = synthesize(questions)
    assert all(end > 0.5 for _, _, end in clips)
    result = score_run(run(run_conversation(default_config, clips, 0)), questions)
    assert [r["question"] for r in result["rows"]] == [x.text for x in questions]
    assert all(r["heard"] and r["reply"] for r in result["rows"]), result["rows"]
    assert result["rows"][0]["answered"], result["rows"][0]  # "Paris": the tiny model knows it
    assert not result["rows"][2]["echo"], result["rows"][2]
    h = headline(result)
    assert {"answer_rate", "echo_rate", "distinct_rate"} <= set(h) and h["v2v_ms"]["p50"] > 0


# ---- the quality profile ---------------------------------------------------------------
@pytest.fixture(scope="module")
def quality_llm():
    from pipeline.config import load_config
    from stages.llm_llama_cpp import LlamaCppLLM
    from tests.conftest import ROOT, _started
    stage = _started(LlamaCppLLM(load_config(ROOT / "configs" / "quality.yaml").llm))
    yield stage
    run(stage.aclose())


def test_the_quality_profile_answers_and_keeps_the_history(quality_llm):
    h = head(quality_llm)
    first = reply_of(quality_llm, (*h, ChatMessage("user", "What is the capital of France?")))
    assert "paris" in first.lower(), first
    follow = reply_of(quality_llm, (*h, ChatMessage("user", "What is the capital of France?"),
                                    ChatMessage("assistant", first),
                                    ChatMessage("user", "And what about Germany?")))
    assert "berlin" in follow.lower(), follow
