"""Models shared by sessions (pipeline.shared), with the real bundled LLM: each session
finds its own KV cache when the model comes back to it, replies are the ones it would
get alone, and one session's prompt never waits inside another's reply."""
import asyncio

import pytest

from pipeline.events import ChatMessage, LLMRequest
from pipeline.shared import LLMSeat, SharedLLM
from tests.conftest import run

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer in one short sentence.")


def prompt(text):
    return (SYSTEM, ChatMessage("user", text))


def test_a_saved_kv_cache_comes_back_whole(llm):
    stage = llm
    a, b = prompt("What is the capital of France?"), prompt("How many days are in a week?")

    def work():
        stage.load_kv(None)
        alone = stage.end_of_turn_logprob(a)  # from an empty cache
        saved = stage.save_kv()
        stage.load_kv(None)
        stage.end_of_turn_logprob(b)  # another session's prompt in between
        stage.load_kv(saved)
        n_restored = stage._llm.n_tokens
        again = stage.end_of_turn_logprob(a)
        return alone, again, n_restored, len(stage.tokens(a))

    alone, again, n_restored, n_prompt = run(stage.worker.call(work))
    assert n_restored > 20 and n_restored <= n_prompt  # the prompt's tokens, not prefilled again
    assert again == pytest.approx(alone, abs=1e-3)  # the same cache: the same probabilities


@pytest.fixture(scope="module")
def greedy(default_config):
    from stages.llm_llama_cpp import LlamaCppLLM
    stage = LlamaCppLLM(default_config.llm.model_copy(update={"temperature": 0.0}))
    run(stage.start())
    yield stage
    run(stage.aclose())


def test_two_sessions_on_one_model_get_their_own_replies(greedy):
    """Greedy replies to two prompts, written in turns by two sessions on one seat, are
    the replies each prompt gets alone."""
    llm = greedy

    async def reply(session, text, turn):
        parts = [d.text async for d in session.generate(LLMRequest(turn, 0.0, prompt(text)))]
        return "".join(parts)

    async def main():
        seat = LLMSeat(llm)
        one, two = SharedLLM(seat), SharedLLM(seat)
        alone = [await reply(one, "What is the capital of France?", 1),
                 await reply(one, "How many legs does a spider have?", 2)]
        together = await asyncio.gather(reply(one, "What is the capital of France?", 3),
                                        reply(two, "How many legs does a spider have?", 4))
        # one's cache was saved when two took the model: it comes back
        again = await reply(one, "What is the capital of France?", 5)
        seat.tokenizer.shutdown()
        return alone, list(together), again, seat.switches

    alone, together, again, switches = run(main())
    assert together == alone and again == alone[0]
    assert switches >= 2
