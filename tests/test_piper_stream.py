"""A reply's first chunk decoded in pieces (tts.stream_decode), with the bundled
Piper voice: the pieces join as the whole decode would, the first comes first, and
the reply chain, the trimming and a resumed reply treat the pieces as one chunk."""
import numpy as np
import pytest

from pipeline import edges
from pipeline.audio import resample
from pipeline.config import PipelineSettings
from pipeline.errors import ModelNotFoundError
from pipeline.events import AudioChunk, LLMRequest
from pipeline.models import bundled_file
from pipeline.reply import ReplyChain
from pipeline.turn import Turn
from stages.piper_stream import split_voice
from stages.tts_piper import PiperConfig, PiperTTS
from eval.wer import wer
from tests.conftest import collect, run
from tests.fakes import FakeLLM

TEXT = "That's a great idea!"


@pytest.fixture(scope="module")
def piper():
    tts = PiperTTS(PiperConfig())
    run(tts.start())
    yield tts
    run(tts.aclose())


def latent_of(piper, text):
    voice = piper._voice
    [phonemes] = voice.phonemize(text)
    return piper._pieces.frames(piper._feed(voice.phonemes_to_ids(phonemes)))


def test_the_pieces_join_as_the_whole_decode_would(piper):
    decoder = piper._pieces
    latent = latent_of(piper, TEXT)  # both random draws are in it: the pieces share them
    whole = decoder.decode(latent, 0, latent.n)
    cut = piper._first_frames
    joined = np.concatenate([decoder.decode(latent, 0, cut), decoder.decode(latent, cut, latent.n)])
    assert len(joined) == len(whole)
    assert np.abs(joined - whole).max() < 1e-3  # 3e-5 measured: -90 dB
    # the context is what makes them join: without it the seam is audible
    context, decoder.context = decoder.context, 0
    try:
        bare = np.concatenate([decoder.decode(latent, 0, cut), decoder.decode(latent, cut, latent.n)])
    finally:
        decoder.context = context
    assert np.abs(bare - whole).max() > 1e-2


def test_the_first_chunk_of_a_reply_comes_in_two_pieces_the_first_first_piece_ms_long(piper):
    first, rest = piper.pieces(TEXT, first=True)
    assert not first.last and rest.last
    assert len(first.samples) / piper.sample_rate * 1000 == pytest.approx(
        piper.config.first_piece_ms, abs=12)  # whole frames of 11.6 ms
    [whole] = piper.pieces(TEXT, first=False)  # a later chunk: whole
    assert whole.last
    # the same text, not the same draw of the durations: lengths within 15%
    assert len(first.samples) + len(rest.samples) == pytest.approx(len(whole.samples), rel=0.15)
    [short] = piper.pieces("Okay.", first=True)  # too short to gain: whole
    assert short.last


def test_the_pieces_speak_the_words(piper, asr):
    text = "The weather is lovely today, so let us walk to the park and feed the ducks."
    audio = np.concatenate([p.samples for p in piper.pieces(text, first=True)])
    heard = run(asr.worker.call(asr.transcribe, resample(audio, piper.sample_rate, 16000)))[0]
    assert wer([text], [heard]) <= 0.20, heard


def test_the_reply_chain_hands_on_the_first_chunk_in_pieces(piper):
    # a first chunk long enough to be decoded in pieces, whatever Piper's draw of its
    # durations (the default three-word cut, "That's a great", is ~0.75 s: whole or not)
    llm = FakeLLM(ttft=0.0, per_token=0.0, reply="That sounds like a really wonderful plan! "
                  "I hope you have a lovely day.")
    marks = {}
    chunks = run(collect(ReplyChain(llm, piper, PipelineSettings(max_first_words=8)).audio(
        LLMRequest(1, 0.0, []), marks.setdefault)))
    head, tail, *later = chunks
    assert head.text and head.more and not head.continues
    assert tail.text == "" and tail.continues and not tail.more
    assert later and all(c.text and not c.more and not c.continues for c in later)
    assert {c.sentence_index for c in (head, tail)} == {0}
    assert marks["tts_first_audio"] == head.t  # the first audio is the first piece's


def test_pieces_are_trimmed_at_the_chunks_outer_edges_only():
    settings = PipelineSettings()
    rate = 22050
    voiced = (0.3 * np.sin(2 * np.pi * 220 * np.arange(rate // 4) / rate)).astype(np.float32)
    voiced[0] = voiced[-1] = 0.3  # audible up to both ends
    quiet = np.zeros(rate // 5, np.float32)
    audio = np.concatenate([quiet, voiced, quiet])

    def piece(**kw):
        return AudioChunk(1, 0.0, samples=audio, sample_rate=rate, sentence_index=0, **kw)
    head = edges.trim(piece(text="That's a great", more=True), settings)
    assert len(head.samples) == len(audio) - int(0.2 * rate) + int(settings.chunk_lead_ms * rate / 1000)
    assert np.array_equal(head.samples[-len(quiet):], quiet)  # its end joins the next piece
    tail = edges.trim(piece(text="", continues=True), settings, "That's a great idea!")
    assert np.array_equal(tail.samples[:len(quiet)], quiet)  # its start joins the last one
    # its end: the pause after the text it ends, a sentence, not a word
    kept_ms = (len(tail.samples) - len(quiet) - len(voiced)) / rate * 1000
    assert kept_ms == pytest.approx(settings.pause_after_sentence_ms, abs=0.1)


def test_a_reply_cut_in_its_second_piece_resumes_from_the_first():
    def chunk(text, more=False, continues=False):
        return AudioChunk(1, 0.0, samples=np.zeros(22050, np.float32), sample_rate=22050,
                          sentence_index=0, text=text, more=more, continues=continues)
    turn = Turn(1, None, False, 0.0)
    head, tail, nxt = chunk("That's a great", more=True), chunk("", continues=True), chunk("idea!")
    for i, c in enumerate((head, tail, nxt)):
        turn.add(c, float(i))
    assert turn.reply_text == "That's a great idea!"
    assert turn.unheard(1.5) == [head, tail, nxt]  # cut in the tail: again from the head
    assert turn.reply_text == ""
    for i, c in enumerate((head, tail, nxt)):
        turn.add(c, float(i))
    assert turn.unheard(2.5) == [nxt]
    assert turn.reply_text == "That's a great"


def test_a_voice_that_cannot_be_cut_names_the_key():
    not_a_voice = bundled_file("faster_whisper", "faster-whisper==1.2.1", "assets",
                               "silero_vad_v6.onnx")
    with pytest.raises(ModelNotFoundError, match="tts.voice.*stream_decode: false"):
        split_voice(not_a_voice)
