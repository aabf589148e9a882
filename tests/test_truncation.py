from pipeline.events import ChatMessage
from pipeline.truncation import INTERRUPTED_MARK, build_prompt, group_turns


def words(messages):
    """A stand-in tokenizer: one token per word plus 4 per message."""
    return sum(len(m.content.split()) + 4 for m in messages)


def history(n):
    out = []
    for i in range(n):
        out += [ChatMessage("user", f"question number {i} " + "x " * 5),
                ChatMessage("assistant", f"answer number {i} " + "y " * 5)]
    return out


def test_everything_kept_when_it_fits():
    msgs = build_prompt("be brief", history(2), "hello", words, budget=1000)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_oldest_whole_turns_dropped_first_and_system_kept():
    h = history(6)
    msgs = build_prompt("be brief", h, "new question", words, budget=60)
    assert msgs[0] == ChatMessage("system", "be brief")
    assert msgs[-1] == ChatMessage("user", "new question")
    assert words(msgs) <= 60
    kept = msgs[1:-1]
    assert len(kept) % 2 == 0 and kept  # whole turns only
    assert kept[-1].content.startswith("answer number 5")  # the newest turns survive
    assert kept[0].role == "user"
    # one more turn would not fit: it needs a budget above 60; one token short of that
    # budget still gives the same prompt, and with that budget the turn is kept
    n_kept = len(kept) // 2
    one_more = (msgs[0], *h[-2 * (n_kept + 1):], msgs[-1])
    needed = words(one_more)
    assert needed > 60
    assert build_prompt("be brief", h, "new question", words, budget=needed - 1) == msgs
    assert build_prompt("be brief", h, "new question", words, budget=needed) == one_more


def test_budget_without_history_room():
    msgs = build_prompt("be brief", history(3), "q", words, budget=12)
    assert [m.role for m in msgs] == ["system", "user"]


def test_monologue_keeps_its_newest_words():
    long_text = " ".join(f"w{i}" for i in range(500))
    msgs = build_prompt("sys", [], long_text, words, budget=100)
    assert words(msgs) <= 100
    assert msgs[-1].content.endswith("w499")
    assert msgs[0].content == "sys"


def test_no_budget_keeps_all():
    assert len(build_prompt("s", history(50), "q", words, budget=None)) == 102


def test_interrupted_reply_is_marked():
    h = [ChatMessage("user", "tell me"), ChatMessage("assistant", "Once upon", interrupted=True)]
    msgs = build_prompt("s", h, "stop", words, budget=None)
    assert msgs[2].content == "Once upon" + INTERRUPTED_MARK


def test_group_turns():
    assert [len(t) for t in group_turns(history(3))] == [2, 2, 2]


def test_real_tokenizer_counts_the_rendered_prompt(llm):
    h = history(40)
    budget = 300
    msgs = build_prompt(llm.config.system_prompt, h, "What time is it?", llm.count_tokens, budget)
    assert llm.count_tokens(msgs) <= budget
    assert msgs[0].content == llm.config.system_prompt
    # dropping one fewer turn would exceed the budget
    n_kept = (len(msgs) - 2) // 2
    wider = build_prompt(llm.config.system_prompt, h, "What time is it?", llm.count_tokens,
                         budget=None)
    with_one_more = (wider[0], *wider[1:-1][-(2 * (n_kept + 1)):], wider[-1])
    assert llm.count_tokens(with_one_more) > budget


def test_history_window_keeps_a_stable_prefix_and_drops_to_low_water():
    from pipeline.truncation import HistoryWindow
    w = HistoryWindow(budget=120, low_water=0.5, reserve=10)
    history, prefixes = [], []
    for i in range(12):
        msgs = w.build("be brief", history, f"question {i} x x x", words)
        assert words(msgs) <= 120
        history += [ChatMessage("user", f"question {i} x x x"),
                    ChatMessage("assistant", f"answer {i} y y y y")]
        prefixes.append(w.prefix("be brief", history, words))
    # the prefix changes only when turns are dropped, and then it falls to half the budget
    drops = [i for i in range(1, 12) if prefixes[i][:len(prefixes[i - 1])] != prefixes[i - 1]]
    assert 0 < len(drops) <= 4
    for i in drops:
        assert words(prefixes[i]) <= 60
    # between drops each prefix extends the previous one: the KV cache stays valid
    for i in range(1, 12):
        if i not in drops:
            assert prefixes[i][:len(prefixes[i - 1])] == prefixes[i - 1]


def test_prefill_leaves_only_the_new_message_to_evaluate(llm):
    sys = ChatMessage("system", llm.config.system_prompt)
    prefix = (sys, ChatMessage("user", "Hi there."), ChatMessage("assistant", "Hello! How can I help?"))
    n = llm.prefill(prefix)
    assert n > 0
    assert llm.prefill(prefix) == 0  # already there
    full = llm.tokens((*prefix, ChatMessage("user", "What is two plus two?")))
    cached = llm._llm.n_tokens
    assert full[:cached] == list(llm._llm.input_ids[:cached])  # a true prefix of the prompt
    assert len(full) - cached < 20  # only the new message (and the reply header) is left
