"""Each real backend alone, with the bundled models, on real speech."""
import numpy as np
import pytest

from eval.wer import wer
from pipeline.audio import read_wav, resample
from pipeline.conversation import Conversation
from pipeline.events import ChatMessage, LLMRequest, Sentence, SpeechEnded
from tests.conftest import aiter_of, collect, rms, run


def test_asr_wer_on_the_whole_corpus(asr, corpus):
    refs, hyps = [], []
    for clip in corpus:
        audio = read_wav(clip.path)
        [t] = run(collect(asr.process(aiter_of([SpeechEnded(1, 0.0, clip.duration_s, audio)]))))
        refs.append(clip.text)
        hyps.append(t.text)
    total = wer(refs, hyps)
    print(f"ASR WER on {len(corpus)} clips: {total:.3f}")
    assert len(corpus) == 45
    assert total < 0.20


def test_asr_silence_gives_no_words(asr):
    [t] = run(collect(asr.process(aiter_of([SpeechEnded(1, 0.0, 1.0,
                                                         np.zeros(16000, np.float32))]))))
    assert t.text == ""


def test_llm_answers_a_question(llm):
    # the prompt's head as the pipeline sends it: the system prompt and the primer
    msgs = (*Conversation(llm, None).system(None),
            ChatMessage("user", "What is the capital of France?"))
    deltas = run(collect(llm.process(aiter_of([LLMRequest(1, 0.0, msgs)]))))
    reply = "".join(d.text for d in deltas)
    assert len(deltas) > 1  # streamed, token by token
    assert "paris" in reply.lower()


def test_requantized_weights_predict_what_the_shipped_ones_do(tmp_path):
    """llm.requantize: the Q8_0 copy is made once, and, teacher-forced through a
    conversation, picks the same next token as the shipped Q4_1 weights almost
    everywhere (it holds their 4-bit values almost exactly)."""
    from llama_cpp import Llama

    from stages.llm_llama_cpp import requantized, resolve_model

    shipped = resolve_model("smollm2-135m-instruct")
    copy = requantized(shipped, "q8_0", tmp_path)
    made = copy.stat().st_mtime_ns
    assert requantized(shipped, "q8_0", tmp_path) == copy
    assert copy.stat().st_mtime_ns == made  # reused, not converted again
    models = [Llama(model_path=str(p), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
              for p in (shipped, copy)]
    assert models[0].metadata["general.file_type"] == "3"  # Q4_1
    assert models[1].metadata["general.file_type"] == "7"  # Q8_0
    text = ("<|im_start|>user\nWhat is the tallest mountain in the world, and how high is "
            "it?<|im_end|>\n<|im_start|>assistant\nMount Everest is the tallest mountain in the "
            "world. It rises about 8,849 meters above sea level, on the border of Nepal and "
            "China.<|im_end|>\n")
    tokens = models[0].tokenize(text.encode(), add_bos=False, special=True)
    picks = []
    for m in models:
        m.reset()
        m.eval(tokens)
        picks.append(np.argmax(np.asarray(m.scores[:len(tokens)]), axis=1))
    agree = float(np.mean(picks[0] == picks[1]))
    print(f"Q8_0 and Q4_1 pick the same next token at {agree:.0%} of {len(tokens)} positions")
    assert len(tokens) > 40 and agree >= 0.9


def test_tts_round_trip_through_asr(tts, asr):
    text = "The weather is lovely today, so let us walk to the park and feed the ducks."
    [chunk] = run(collect(tts.process(aiter_of([Sentence(1, 0.0, text, 0)]))))
    assert chunk.sample_rate == 22050 and rms(chunk.samples) > 0.01
    audio = resample(chunk.samples, chunk.sample_rate, 16000)
    [t] = run(collect(asr.process(aiter_of([SpeechEnded(1, 0.0, 0.0, audio)]))))
    assert wer([text], [t.text]) <= 0.20, t.text


def vad_events(config, audio):
    """The real Silero VAD's events on ``audio`` (16 kHz), fed frame by frame: all of
    them, the SpeechStarted ones and the SpeechEnded ones."""
    from pipeline.audio import frames
    from pipeline.events import AudioFrame, SpeechEnded as Ended, SpeechStarted
    from stages.vad_silero import SileroVAD

    vad = SileroVAD(config.vad)
    run(vad.start())

    async def feed():
        for end, f in frames(audio):
            yield AudioFrame(-1, end / 16000, samples=f)

    events = run(collect(vad.process(feed())))
    return (events, [e for e in events if isinstance(e, SpeechStarted)],
            [e for e in events if isinstance(e, Ended)])


def test_vad_finds_each_utterance(default_config, corpus):
    a, b = read_wav(corpus[1].path), read_wav(corpus[5].path)
    gap = np.zeros(16000 * 2, np.float32)
    audio = np.concatenate([gap, a, gap, b, gap])
    _, starts, ends = vad_events(default_config, audio)
    assert len(starts) >= 2 and len(ends) == len(starts)
    # the first utterance starts near 2 s; the last one ends near the end of clip b
    assert abs(starts[0].speech_start - 2.0) < 0.3
    b_end = (len(gap) * 2 + len(a) + len(b)) / 16000
    assert abs(ends[-1].speech_end - b_end) < 0.5
    assert all(e.t > e.speech_end for e in ends)


def test_the_sentence_end_signal_ignores_whispers_final_period(llm):
    """Whisper ends a fragment with a period too ("The arrangement will avoid."): after
    it the end-of-turn token is likely, so the punctuated text cannot tell the cut
    from the whole. Read without the final period, the probability that a sentence
    ends there can; the reply's prompt (with the period) is still what was evaluated."""
    from pipeline.events import ChatMessage
    system = ChatMessage("system", llm.config.system_prompt)

    def both(text):
        messages = (system, ChatMessage("user", text))
        return (llm.end_of_turn_logprob(messages),
                llm.end_of_turn_logprob(messages, sentence_end=True))

    whole_token, whole_sentence = both("The arrangement will avoid any conflicts of interest.")
    cut_token, cut_sentence = both("The arrangement will avoid.")
    print(f"end token: whole {whole_token:.2f} cut {cut_token:.2f}; "
          f"sentence end: whole {whole_sentence:.2f} cut {cut_sentence:.2f}")
    assert cut_token > -3.0  # the period fools the end-of-turn token alone
    assert whole_sentence > -2.0 > -5.0 > cut_sentence
    question = llm.end_of_turn_logprob((system, ChatMessage("user", "What is the capital of "
                                                                   "France?")), sentence_end=True)
    assert question > -2.0, question
    held = list(llm._llm.input_ids[:llm._llm.n_tokens])
    reply_prompt = llm.tokens((system, ChatMessage("user", "What is the capital of France?")))
    assert reply_prompt[:len(held)] == held and len(reply_prompt) - len(held) <= 6


def test_end_of_turn_probability_tells_a_finished_sentence_from_a_cut_one(llm):
    """The semantic end-of-turn signal on the real LLM: the chat template's end-of-turn
    token is far likelier after a whole sentence than after the same one cut mid-clause,
    and the tokens it evaluates are the reply prompt's own (the KV cache is reused)."""
    from pipeline.events import ChatMessage
    system = ChatMessage("system", llm.config.system_prompt)
    whole = llm.end_of_turn_logprob(
        (system, ChatMessage("user", "The arrangement will avoid any conflicts of interest.")))
    cut = llm.end_of_turn_logprob((system, ChatMessage("user", "The arrangement will avoid")))
    assert whole > -3.0 and cut < -8.0, (whole, cut)
    # the reply's prompt starts with everything that was just evaluated
    reply_prompt = llm.tokens((system, ChatMessage("user", "The arrangement will avoid")))
    held = list(llm._llm.input_ids[:llm._llm.n_tokens])
    assert reply_prompt[:len(held)] == held and len(reply_prompt) - len(held) <= 6


def test_input_that_ends_inside_an_utterance_ends_it(default_config, corpus):
    """A file or stream that stops before the silence that closes its last utterance
    (here: right after the last word): the input's end is the utterance's end."""
    from eval.speech_bounds import speech_span
    from pipeline.events import SpeechEnded as Ended

    speech = read_wav(corpus[1].path)
    _, end = speech_span(speech)
    audio = np.concatenate([np.zeros(16000, np.float32), speech[:int(end * 16000)]])
    events, starts, ends = vad_events(default_config, audio)
    assert len(starts) == len(ends) >= 1 and isinstance(events[-1], Ended)
    last = events[-1]
    assert last.turn_id == starts[-1].turn_id and not last.forced
    assert last.t == pytest.approx(-(-len(audio) // 512) * 512 / 16000)  # the last frame
    assert 1.0 + end - 0.5 < last.speech_end <= last.t
    assert len(last.audio) > 0.5 * 16000
