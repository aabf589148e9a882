"""The Realtime protocol's bookkeeping, without a server: where a cut reply is
truncated, and which response a held reply's audio belongs to."""
import numpy as np

from pipeline.clock import Clock
from pipeline.events import AudioChunk, SpeechEnded
from pipeline.realtime import InputAudio, RealtimeProtocol
from pipeline.sinks import PlayedText
from pipeline.turn import Turn


def protocol():
    sent = []
    return RealtimeProtocol(sent.append, InputAudio(Clock(), 10.0)), sent


def turn(turn_id=1):
    return Turn(turn_id, SpeechEnded(turn_id, 1.0, 1.0, np.zeros(16000, np.float32)),
                speculative=False, started_at=0.0)


def chunk(turn_id, seconds, index):
    return AudioChunk(turn_id, 0.0, samples=np.full(int(22050 * seconds), 0.1, np.float32),
                      sample_rate=22050, sentence_index=index, text=f"Sentence {index}.")


def test_a_cut_reply_is_truncated_at_what_had_played():
    p, sent = protocol()
    t = turn()
    p.speech_started(0.2)
    p.endpoint(t)
    for i, start in enumerate((2.0, 3.0, 4.0)):  # three 1 s sentences, all sent at once
        p.audio(chunk(1, 1.0, i), start)
    p.truncated(1, PlayedText("Sentence 0.", False, stopped_at=2.5))
    [cut] = [e for e in sent if e["type"] == "conversation.item.truncated"]
    assert cut["audio_end_ms"] == 500  # half of the first sentence, not the sentences queued


def test_a_held_reply_that_resumes_plays_into_its_own_response():
    """The user went on after an early endpoint with no words (a cough): the new
    utterance's response ends empty, and the held reply's audio goes on in its own."""
    p, sent = protocol()
    held, cough = turn(), turn()  # one utterance: the same turn id
    p.speech_started(0.2)
    p.endpoint(held)
    p.audio(chunk(1, 1.0, 0), 2.0)
    p.speech_resumed(2.3)  # the client is told to stop playing
    p.endpoint(cough)
    p.turn_ended(cough, {"turn_id": 1, "user": "", "assistant": "", "status": "no_speech",
                         "interrupted": False}, {"v2v_ms": None})
    p.audio(chunk(1, 0.5, 0), 3.0)  # the held reply plays again
    created = [e["response"]["id"] for e in sent if e["type"] == "response.created"]
    assert len(created) == 2
    deltas = [e["response_id"] for e in sent if e["type"] == "response.output_audio.delta"]
    assert set(deltas) == {created[0]}
    types = [e["type"] for e in sent]
    assert types.count("input_audio_buffer.speech_started") == 2
    [done] = [e for e in sent if e["type"] == "response.done"]
    assert done["response"]["id"] == created[1] and done["response"]["status"] == "cancelled"


def test_stream_positions_are_exact_even_for_frames_that_came_in_a_burst():
    import asyncio

    from pipeline.audio import FRAME_SAMPLES

    async def main():
        audio = InputAudio(Clock(), 60.0)
        for _ in range(50):  # 2 s sent at once: a stall, then a burst
            audio.append(np.zeros(960, np.float32))
        audio.close()
        return audio, [f async for f in audio.frames()]

    audio, frames = asyncio.run(main())
    assert len(frames) == 62  # 2 s at 16 kHz in 32 ms frames
    ts = [f.t for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:]))  # strictly increasing, however close
    for k in (10, 40, 61):
        end_ms = (k + 1) * FRAME_SAMPLES * 1000 / 16000
        assert abs(audio.media_ms(frames[k].t) - end_ms) <= 1  # a frame's end
        assert abs(audio.media_ms(frames[k].t - FRAME_SAMPLES / 16000) - (end_ms - 32)) <= 1
