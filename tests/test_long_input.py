"""File mode streams its input and writes conversation.wav as it goes: a long file
takes no more memory than a short one, and the written conversation is exact."""
import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from pipeline.audio import read_wav, resample
from tests.conftest import ROOT


# python -m pipeline, printing its own peak RSS when it exits
PEAK = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
        "sys.argv = ['pipeline', *sys.argv[1:]]; runpy.run_module('pipeline', run_name='__main__')")


def run_cli(*args):
    return subprocess.run([sys.executable, "-c", PEAK, "run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def peak_mb(res) -> float:
    return int(res.stderr.split("PEAK_RSS_KB")[-1].split()[0]) / 1024


def noisy_file(path, minutes, speech):
    """Quiet noise for ``minutes``, with ``speech`` in the middle; written in blocks."""
    rng = np.random.default_rng(0)
    rate = 16000
    middle = minutes * 60 * rate // 2
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, minutes * 60 * rate, 60 * rate):
            block = (0.002 * rng.standard_normal(60 * rate)).astype(np.float32)
            if start <= middle < start + 60 * rate:
                i = middle - start
                block[i:i + len(speech)] += speech[:len(block) - i]
            f.write(block)


def test_the_conversation_file_holds_the_input_and_the_reply(tmp_path, corpus):
    clip = next(c for c in corpus if c.id == "cmusphinx_goforward")
    out = tmp_path / "out"
    res = run_cli("--input", str(clip.path), "--output-dir", str(out), "--fast")
    assert res.returncode == 0, res.stderr
    stereo, rate = sf.read(out / "conversation.wav", dtype="float32")
    user = read_wav(clip.path)
    left = resample(np.ascontiguousarray(stereo[:, 0]), rate, 16000)[:len(user)]
    assert np.corrcoef(left, user[:len(left)])[0, 1] > 0.99  # the input, on its own time line
    assert np.sqrt(np.mean(stereo[:, 1] ** 2)) > 0.005  # and the reply after it
    assert len(stereo) / rate > len(user) / 16000 + 0.3  # the reply plays on past the input


def test_a_long_file_takes_no_more_memory_than_a_short_one(tmp_path, corpus):
    speech = read_wav(next(c for c in corpus if c.id == "cmusphinx_goforward").path)
    peaks = {}
    for minutes in (2, 20):
        wav = tmp_path / f"{minutes}.wav"
        noisy_file(wav, minutes, speech)
        out = tmp_path / f"out{minutes}"
        res = run_cli("--input", str(wav), "--output-dir", str(out), "--fast")
        assert res.returncode == 0, res.stderr
        records = [json.loads(line) for line in (out / "transcript.jsonl").read_text().splitlines()]
        # one answered turn ("Go forward ... ten meters" has a pause: a "reopened" line may precede it)
        assert [r["status"] for r in records if r["status"] != "reopened"] == ["answered"], records
        assert sf.info(str(out / "conversation.wav")).duration >= minutes * 60
        peaks[minutes] = peak_mb(res)
    # held whole, 20 minutes would add ~77 MB of input and ~210 MB of stereo output
    assert peaks[20] - peaks[2] < 30, peaks


def test_the_long_file_benchmark_runs_each_kind_and_reports_it():
    """eval.long_files (the one-hour files of the reliability report), in miniature."""
    from eval.long_files import bench, render
    result = bench(["silence", "noise", "speech"], minutes=0.5, short=0.25)
    runs = result["runs"]
    assert set(runs) == {f"{k} {m:g} min" for k in ("silence", "noise", "speech")
                         for m in (0.25, 0.5)}
    for name, r in runs.items():
        assert r["exit_code"] == 0, (name, r["stderr_tail"])
        assert r["turns_with_error"] == 0 and r["conversation_s"] >= r["input_s"], (name, r)
        assert r["peak_rss_mb"] > 100  # the models are loaded: the figure is the process's
    assert runs["silence 0.5 min"]["turns"] == 0
    assert runs["speech 0.5 min"]["answered"] >= 1  # a looped utterance gets replies
    assert "peak_rss_growth_mb" in runs["speech 0.5 min"]
    assert len(render(result)) == 2 + len(runs)
