"""Virtual audio devices through the real audio stack, for live tests and benchmarks:
a PulseAudio server with null sinks. PyAudio -> PortAudio -> ALSA's pulse
plugin -> PulseAudio. A null sink's monitor is the microphone; another null
sink is the speaker; module-loopback can route the speaker back into the
microphone (an acoustic echo path with a delay)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional


def ensure_server() -> None:
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        raise RuntimeError("live tests need PulseAudio: apt-get install pulseaudio "
                           "pulseaudio-utils libasound2-plugins (.ci/run installs them)")
    if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
        return
    subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "-n",
                    "--load=module-native-protocol-unix", "--log-target=stderr"],
                   capture_output=True, check=True)
    for _ in range(50):
        if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("PulseAudio did not start")


def pactl(*args: str) -> str:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=True).stdout.strip()


class VirtualRoom:
    """A microphone sink and a speaker sink, optionally with an echo path."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.mic, self.spk = f"mic_{tag}", f"spk_{tag}"
        self.modules = [pactl("load-module", "module-null-sink", f"sink_name={self.mic}"),
                        pactl("load-module", "module-null-sink", f"sink_name={self.spk}")]
        self._procs: list[subprocess.Popen] = []

    def add_echo(self, latency_ms: int, volume_pct: int) -> None:
        """Route the speaker back into the microphone, delayed and attenuated (the
        speaker's monitor is turned down, so only the echo path is quieter)."""
        pactl("set-source-volume", f"{self.spk}.monitor", f"{volume_pct}%")
        self.modules.append(pactl("load-module", "module-loopback", f"source={self.spk}.monitor",
                                  f"sink={self.mic}", f"latency_msec={latency_ms}"))

    def env(self) -> dict[str, str]:
        return {**os.environ, "PULSE_SINK": self.spk, "PULSE_SOURCE": f"{self.mic}.monitor",
                "PYTHONUNBUFFERED": "1"}

    def say(self, wav: Path) -> None:
        """Speak a WAV into the microphone (blocks for its duration)."""
        subprocess.run(["paplay", "-d", self.mic, str(wav)], check=True)

    def record_speaker(self, path: Path) -> subprocess.Popen:
        p = subprocess.Popen(["parecord", "-d", f"{self.spk}.monitor", "--rate", "16000",
                              "--channels", "1", "--file-format=wav", str(path)])
        self._procs.append(p)
        return p

    def session(self, root: Path, out_dir: Path, config: Path) -> "LiveSession":
        s = LiveSession(self, root, out_dir, config)
        self._procs.append(s.proc)
        return s

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(2)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for mod in reversed(self.modules):
            subprocess.run(["pactl", "unload-module", mod], capture_output=True)


class LiveSession:
    """`python -m pipeline run` (live mode) as a subprocess in a virtual room."""

    def __init__(self, room: VirtualRoom, root: Path, out_dir: Path, config: Path,
                 extra: Optional[list[str]] = None):
        self.out_dir = out_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--output-dir",
             str(out_dir), *(extra or [])], cwd=root, env=room.env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read(1), ""):
            self._out.append(chunk)

    @property
    def output(self) -> str:
        return "".join(self._out)

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.count(text) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} x{count} not seen; output so far:\n{self.output}")

    def stop(self) -> str:
        """Ctrl-C, as a person would."""
        self.proc.send_signal(2)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return self.output
