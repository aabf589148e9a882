"""SpeakerSink's bookkeeping over a long session: its device callback driven by hand
on a scripted clock (no device), block by block as PortAudio would."""
import asyncio
from types import SimpleNamespace

import numpy as np

from pipeline.devices import Device
from pipeline.echo import EchoReference
from pipeline.events import AudioChunk
from pipeline.live import SpeakerSink

RATE = 16000
BLOCK = 160  # 10 ms


class ScriptedClock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t


def make_sink(clock, rate=RATE, reference=None):
    pa = SimpleNamespace(is_format_supported=lambda *a, **k: True)  # any rate works
    return SpeakerSink(pa, Device(0, "scripted", 0, 1, rate), rate, 10, clock, reference)


def sentence(turn, i, seconds=0.1):
    return AudioChunk(turn, 0.0, np.full(int(RATE * seconds), 0.1, np.float32), RATE,
                      sentence_index=i, text=f"turn {turn} sentence {i}.")


def play_for(sink, clock, seconds):
    """Let the device pull ``seconds`` of audio, one 10 ms block at a time."""
    block = sink.rate // 100
    for _ in range(round(seconds * 100)):
        sink._callback(None, block, {}, 0)
        clock.t += block / sink.rate


def test_a_long_session_keeps_one_turn_of_bookkeeping_and_stop_stays_right():
    clock = ScriptedClock()
    sink = make_sink(clock)
    sizes = []
    for turn in range(1, 301):
        for i in range(3):
            asyncio.run(sink.play(sentence(turn, i)))
        play_for(sink, clock, 0.4)  # the reply plays out (0.3 s) and a pause
        sizes.append((len(sink._placed), len(sink._last_out)))
    assert max(sizes) == (3, 1), sizes[-5:]  # not 900 and 300

    # The next turn's first sentence has played while its second is still being
    # made: a barge-in now must report that sentence, and the reply as complete.
    asyncio.run(sink.play(sentence(301, 0)))
    play_for(sink, clock, 0.2)
    played = asyncio.run(sink.stop(301))
    assert (played.text, played.complete) == ("turn 301 sentence 0.", True)

    # A turn cut during its second sentence: the first two were heard, the third not.
    for i in range(3):
        asyncio.run(sink.play(sentence(302, i)))
    play_for(sink, clock, 0.15)
    played = asyncio.run(sink.stop(302))
    assert (played.text, played.complete) == ("turn 302 sentence 0. turn 302 sentence 1.", False)
    assert abs(played.stopped_at - 0.15 - 300 * 0.4 - 0.2) < BLOCK / RATE
    assert sink.busy_until() == clock.t  # nothing left to play


def test_the_echo_reference_holds_what_was_output_when_it_was_output():
    clock = ScriptedClock()
    clock.t = 10.0
    reference = EchoReference()
    sink = make_sink(clock, rate=22050, reference=reference)
    play_for(sink, clock, 0.5)  # silence
    tone = AudioChunk(1, 0.0, np.full(2205, 0.5, np.float32), 22050, sentence_index=0, text="a")
    start = asyncio.run(sink.play(tone))  # output for 0.1 s from then on
    assert abs(start - 10.5) < 0.01
    play_for(sink, clock, 0.5)
    # 80 ms of reference inside it, and 10 ms clear of its edges on either side
    np.testing.assert_allclose(reference.pull(start + 0.09, 1280), 0.5, atol=0.01)
    assert np.abs(reference.pull(start - 0.01, 1280)).max() < 0.01
    assert np.abs(reference.pull(start + 0.19, 1280)).max() < 0.01


def test_a_reply_resumed_and_stopped_again_was_heard_from_its_start():
    """A false interruption stops a reply, which then resumes from the chunk it was cut
    in (the orchestrator plays that chunk again); real words stop it again. What the
    listener heard includes the chunks played before the first stop."""
    clock = ScriptedClock()
    sink = make_sink(clock)
    for i in range(3):
        asyncio.run(sink.play(sentence(1, i)))
    play_for(sink, clock, 0.15)  # sentence 0 whole, half of sentence 1
    first = asyncio.run(sink.stop(1))
    assert (first.text, first.complete) == ("turn 1 sentence 0. turn 1 sentence 1.", False)
    play_for(sink, clock, 0.5)  # held: the words said over it are transcribed
    for i in (1, 2):  # resumed from the chunk it was cut in
        asyncio.run(sink.play(sentence(1, i)))
    play_for(sink, clock, 0.05)
    again = asyncio.run(sink.stop(1))
    assert (again.text, again.complete) == ("turn 1 sentence 0. turn 1 sentence 1.", False)
    # stopped again before anything more was played: still what was heard at the first stop
    asyncio.run(sink.play(sentence(1, 2)))
    third = asyncio.run(sink.stop(1))
    assert third.text == "turn 1 sentence 0. turn 1 sentence 1.", third
    # the next turn's first chunk forgets this turn's bookkeeping, as before
    asyncio.run(sink.play(sentence(2, 0)))
    assert {p.turn_id for p in sink._placed} == {2}
