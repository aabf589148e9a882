"""Echo benchmark: can the assistant hear itself? Offline, through the real Speex
canceller, the echo gate and Silero VAD: the reply audio (a corpus clip as the
"speaker"), delayed 30-120 ms and attenuated, is the microphone signal; then
real user speech is mixed on top, from 1, 2 or 4 s into the reply (the session's
first reply: the gate learns the echo level from its first seconds).

    .venv/bin/python -m eval.bench_echo [--delays 30 60 120] [--gains 0 0.3 0.6]
                                        [--user-starts 1 2 4]

For each case: the longest run of echo frames Silero would call speech (it must
stay under vad.barge_in_min_speech_ms, or the assistant interrupts itself) and
the longest run of user speech detected over the echo (it must exceed it).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from eval.corpus import load_manifest
from pipeline.audio import read_wav
from pipeline.config import AudioSettings
from pipeline.echo import EchoGate, SpeexAEC
from stages.vad_silero import SileroVAD, SileroVADConfig

PAIRS = [("ljspeech_LJ001-0001", "vctk_p238_165"),
         ("librispeech_1272-128104-0000", "cmusphinx_goforward"),
         ("jfk_inaugural-1961", "vctk-valentini_p287_002_clean")]


def longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def speech_runs_ms(vad: SileroVAD, mic: np.ndarray, far: np.ndarray, audio: AudioSettings,
                   start: int = 0, stop: int | None = None) -> int:
    aec, gate = SpeexAEC(audio.aec_tail_ms), EchoGate(audio.aec_gate, audio.aec_converge_s)
    vad.reset()
    flags = []
    for k in range(0, len(mic) - 511, 512):
        m, r = mic[k:k + 512], far[k:k + 512]
        out = aec.process(m, r)
        echo = gate.likely_echo(m, out, r)
        p = vad.probability(out)
        flags.append(p >= vad.config.threshold and not echo)
    aec.close()
    return longest_run(np.array(flags[start:stop])) * 32


def main() -> None:
    ap = argparse.ArgumentParser(description="the assistant's echo against the barge-in")
    ap.add_argument("--delays", type=int, nargs="+", default=[30, 60, 120], metavar="MS")
    ap.add_argument("--gains", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    ap.add_argument("--user-starts", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                    metavar="S", help="when the user starts speaking, seconds into the reply")
    args = ap.parse_args()
    clips = {c.id: c for c in load_manifest()}
    vad = SileroVAD(SileroVADConfig())
    vad._load()
    audio = AudioSettings()
    rows = []
    for far_id, near_id in PAIRS:
        far = read_wav(clips[far_id].path)
        near = read_wav(clips[near_id].path)
        n = min(len(far), 16000 * 9) // 512 * 512
        far = far[:n]
        for delay_ms in args.delays:
            for gain in args.gains:
                d = int(delay_ms * 16)
                echo = np.concatenate([np.zeros(d, np.float32), far[:-d]]) * gain
                alone = speech_runs_ms(vad, echo, far, audio)
                for start_s in args.user_starts:
                    st = int(start_s * 16000) // 512 * 512
                    length = min(len(near), n - st)
                    mixed = echo.copy()
                    mixed[st:st + length] += near[:length]
                    rows.append({
                        "speaker": far_id, "user": near_id, "delay_ms": delay_ms, "gain": gain,
                        "user_start_s": start_s, "echo_only_longest_speech_ms": alone,
                        "user_over_echo_longest_speech_ms": speech_runs_ms(
                            vad, mixed, far, audio, st // 512, (st + length) // 512),
                    })
    limit = SileroVADConfig().barge_in_min_speech_ms
    worst_echo = max(r["echo_only_longest_speech_ms"] for r in rows)
    weakest_user = min(r["user_over_echo_longest_speech_ms"] for r in rows)
    for r in rows:
        print(f"{r['speaker'][:14]:14s} delay {r['delay_ms']:3d} ms gain {r['gain']:.1f} user from "
              f"{r['user_start_s']:.1f} s: echo-only speech run "
              f"{r['echo_only_longest_speech_ms']:4d} ms; user over echo "
              f"{r['user_over_echo_longest_speech_ms']:4d} ms")
    missed = {s: sum(r["user_over_echo_longest_speech_ms"] < limit for r in rows
                     if r["user_start_s"] == s) for s in args.user_starts}
    print(f"barge-in needs {limit} ms of speech: worst echo run {worst_echo} ms "
          f"({'never' if worst_echo < limit else 'CAN'} self-interrupts); weakest user run "
          f"{weakest_user} ms ({'always' if weakest_user >= limit else 'NOT always'} interrupts)")
    per = len(rows) // len(args.user_starts)
    print("user not heard as a barge-in, by when the user starts: " + ", ".join(
        f"from {s:g} s {m} of {per}" for s, m in missed.items()))
    print(json.dumps({"barge_in_min_speech_ms": limit, "worst_echo_run_ms": worst_echo,
                      "weakest_user_run_ms": weakest_user,
                      "user_missed_by_start_s": {str(s): m for s, m in missed.items()}}))


if __name__ == "__main__":
    main()
