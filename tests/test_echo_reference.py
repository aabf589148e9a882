"""The echo canceller's reference is matched to each microphone frame by time: a
frame that waited in the event loop gets what the speaker played at its own moment."""
import numpy as np
import pytest

from pipeline.echo import RATE, EchoReference, StreamClock, TimedResampler

BLOCK = 160  # the speaker callback's 10 ms


def ramp(start, n):
    """Samples whose values are their own indices on the time line, to check exactly."""
    return np.arange(start, start + n, dtype=np.float32)


def test_frames_late_from_a_stall_get_the_reference_of_their_own_time():
    ref = EchoReference()
    # A 1 s stall of the event loop: the speaker callback keeps pushing its 10 ms
    # blocks, stamped with their output times 2.0 s .. 3.0 s, and nobody pulls.
    for k in range(100):
        start = 2 * RATE + k * BLOCK
        ref.push(start / RATE, ramp(start, BLOCK))
    # Then the microphone frames queued during the stall are handled, oldest first.
    for end in (2.032, 2.3, 2.512, 2.999):
        last = round(end * RATE)
        np.testing.assert_array_equal(ref.pull(end, 512), ramp(last - 512, 512))
    # Before the speaker started, and after its last block: silence.
    np.testing.assert_array_equal(ref.pull(1.5, 512), np.zeros(512, np.float32))
    np.testing.assert_array_equal(ref.pull(3.5, 512), np.zeros(512, np.float32))
    # A frame straddling the start: silence, then the first samples.
    np.testing.assert_array_equal(ref.pull(2.01, 512),
                                  np.concatenate([np.zeros(352, np.float32), ramp(2 * RATE, 160)]))


def test_the_reference_keeps_only_its_last_seconds():
    ref = EchoReference(keep_s=1.0)
    for k in range(500):  # 5 s
        ref.push(k * BLOCK / RATE, ramp(k * BLOCK, BLOCK))
    np.testing.assert_array_equal(ref.pull(4.5, 512), ramp(round(4.5 * RATE) - 512, 512))
    np.testing.assert_array_equal(ref.pull(3.0, 512), np.zeros(512, np.float32))  # forgotten
    assert len(ref._blocks) <= RATE // BLOCK + 1


def test_stream_clock_ignores_late_callbacks_but_follows_a_drop_out():
    times = StreamClock(RATE, tolerance_s=0.05)
    late = [0.0, 0.004, 0.03, 0.02, 0.0, 0.045]  # callbacks come late, in bursts
    starts = [times.place(k * 0.01 + d, BLOCK) for k, d in enumerate(late)]
    np.testing.assert_allclose(starts, [k * 0.01 for k in range(6)], atol=1e-12)  # sample-exact
    # A callback earlier than the count: the count was late; it moves back at once.
    assert times.place(0.058, BLOCK) == 0.058
    assert abs(times.place(0.07, BLOCK) - 0.068) < 1e-12
    # The device dropped out for 100 ms: the next block starts at its measured time.
    assert times.place(0.178, BLOCK) == 0.178
    assert abs(times.place(0.19, BLOCK) - 0.188) < 1e-12


@pytest.mark.parametrize("rate", [22050, 48000])
def test_resampled_samples_keep_their_own_times(rate):
    """The resampler emits in bursts; what it emits is stamped by sample count. Each
    input sample's value is its own time, so each output sample must hold its stamp."""
    resampler = TimedResampler(rate)
    late = np.random.default_rng(0).uniform(0, 0.03, 300)  # callbacks come late, by up to 30 ms
    late[0] = 0.0
    block = rate // 100
    stamps = []
    for k in range(300):
        first = 5.0 + k * block / rate
        start, out = resampler((first + np.arange(block) / rate).astype(np.float32),
                               first + late[k])
        if len(out):
            stamps.append((start, len(out)))
            if k > 10:  # past the resampler's start
                err = np.abs(out - (start + np.arange(len(out)) / RATE)).max()
                assert err < 0.5 / RATE, (k, err * RATE)
    for (s1, n1), (s2, _) in zip(stamps, stamps[1:]):
        assert abs(s2 - (s1 + n1 / RATE)) < 1e-9  # one continuous stream
