"""The output folder: not writable at the start, or a disk that fills up mid-session.
Real file systems (tmpfs mounts, read-only or tiny), real writes."""
import json
import subprocess
import sys

import pytest

from pipeline.errors import OutputError
from pipeline.observers import LogObserver, Observer
from pipeline.stages import Stages
from tests.conftest import ROOT
from tests.fakes import FakeASR, FakeLLM, FakeTTS, ScriptedVAD, fake_session, run_session


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs folder with those mount options."""
    mounted = []

    def make(options):
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
        mounted.append(where)
        return where
    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def test_a_read_only_output_folder_is_refused_at_the_start(mount, corpus):
    ro = mount("ro,size=64k")
    clip = next(c for c in corpus if c.id == "cmusphinx_goforward")
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", "--input", str(clip.path),
                          "--output-dir", str(ro / "out")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert f"--output-dir {ro / 'out'}: cannot write there (Read-only file system)" in res.stderr
    assert "Traceback" not in res.stderr


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def fill(folder, leave_bytes):
    """Fill the file system but ``leave_bytes``; returns the filler file."""
    import os
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


SIX_TURNS = [(1.0 + 6 * i, 1.5 + 6 * i) for i in range(6)]


def test_a_disk_full_mid_session_loses_nothing(mount, default_config):
    out = mount("size=256k")
    filler = fill(out, 4096 + 100)  # one page: the first file's first lines fit
    errors = []

    class FreeSpaceAfterTurn4(Observer):
        def turn_ended(self, turn, transcript, timeline):
            if turn.turn_id == 4:
                filler.unlink()

    stages = Stages(vad=ScriptedVAD(SIX_TURNS), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())
    session = fake_session(default_config, stages, out_dir=out / "run")
    [log] = [o for o in session.orchestrator.observers.all if isinstance(o, LogObserver)]
    log.report = errors.append  # what the console shows
    session.orchestrator.observers.all.append(FreeSpaceAfterTurn4())
    run_session(session, 40.0)
    # every turn answered: the session went on while nothing could be written
    assert [t["status"] for t in session.log.transcript] == ["answered"] * 6
    assert len(errors) == 2
    assert "transcript.jsonl: No space left on device; the session goes on" in errors[0] or \
        "timeline.jsonl: No space left on device; the session goes on" in errors[0]
    assert errors[1] == "the session's records are written again"
    # whole lines only, all of them, in order
    assert [r["turn_id"] for r in records(out / "run" / "transcript.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert [r["turn_id"] for r in records(out / "run" / "timeline.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_a_disk_that_stays_full_hands_the_lines_back_at_the_end(mount, default_config):
    out = mount("size=256k")
    fill(out, 4096 + 100)
    stages = Stages(vad=ScriptedVAD(SIX_TURNS), asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())
    session = fake_session(default_config, stages, out_dir=out / "run")
    with pytest.raises(OutputError) as err:
        run_session(session, 40.0)
    message = str(err.value)
    assert "No space left on device" in message and "could not be written" in message
    on_disk = records(out / "run" / "transcript.jsonl")
    assert on_disk  # the disk filled up mid-session, after some lines were written
    in_error = [json.loads(line) for line in message.splitlines()[1:]]
    kept = on_disk + [r for r in in_error if "user" in r]
    assert [r["turn_id"] for r in kept] == [1, 2, 3, 4, 5, 6]  # nothing lost
