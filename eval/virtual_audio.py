"""Virtual audio devices through the real audio stack, for live tests and benchmarks:
a PulseAudio server with null sinks. PyAudio -> PortAudio -> ALSA's pulse
plugin -> PulseAudio. A null sink's monitor is the microphone; another null
sink is the speaker; module-loopback can route the speaker back into the
microphone (an acoustic echo path with a delay).

Tests run their own server (:class:`PulseServer`): it never touches the user's
sound, it may be killed mid-test, and nothing is left running after them."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional


def _need_pulseaudio() -> None:
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        raise RuntimeError("live tests need PulseAudio: apt-get install pulseaudio "
                           "pulseaudio-utils libasound2-plugins (.ci/run installs them)")


def _answers(env: Optional[dict[str, str]] = None) -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True, env=env).returncode == 0


def _wait_until_up(env: Optional[dict[str, str]] = None) -> None:
    for _ in range(50):
        if _answers(env):
            return
        time.sleep(0.1)
    raise RuntimeError("PulseAudio did not start")


class PulseServer:
    """A PulseAudio server of our own, with no sound card and nothing loaded but its
    socket, in a private directory: killing it touches nobody's sound, and ``stop``
    leaves nothing running."""

    def __init__(self):
        _need_pulseaudio()
        self._dir = tempfile.mkdtemp(prefix="cascade-pulse-")  # short: a socket path
        socket = os.path.join(self._dir, "native")
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{socket}"}
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--use-pid-file=no", "--exit-idle-time=-1",
             f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1"],
            env={**os.environ, "PULSE_RUNTIME_PATH": self._dir, "PULSE_STATE_PATH": self._dir},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_until_up(self.env)
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        """The server dies, as in a crash."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "PulseServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def pactl(*args: str, env: Optional[dict[str, str]] = None) -> str:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


class VirtualRoom:
    """A microphone sink and a speaker sink, optionally with an echo path, on
    ``server`` (the user's server if None)."""

    def __init__(self, server: Optional[PulseServer] = None):
        self._env = server.env if server is not None else dict(os.environ)
        tag = uuid.uuid4().hex[:6]
        self.mic, self.spk = f"mic_{tag}", f"spk_{tag}"
        self.modules = [self.pactl("load-module", "module-null-sink", f"sink_name={self.mic}"),
                        self.pactl("load-module", "module-null-sink", f"sink_name={self.spk}")]
        self._procs: list[subprocess.Popen] = []

    def pactl(self, *args: str) -> str:
        return pactl(*args, env=self._env)

    def add_echo(self, latency_ms: int, volume_pct: int) -> None:
        """Route the speaker back into the microphone, delayed and attenuated (the
        speaker's monitor is turned down, so only the echo path is quieter)."""
        self.pactl("set-source-volume", f"{self.spk}.monitor", f"{volume_pct}%")
        self.modules.append(self.pactl("load-module", "module-loopback",
                                       f"source={self.spk}.monitor", f"sink={self.mic}",
                                       f"latency_msec={latency_ms}"))

    def env(self) -> dict[str, str]:
        return {**self._env, "PULSE_SINK": self.spk, "PULSE_SOURCE": f"{self.mic}.monitor",
                "PYTHONUNBUFFERED": "1"}

    def say(self, wav: Path) -> None:
        """Speak a WAV into the microphone (blocks for its duration)."""
        subprocess.run(["paplay", "-d", self.mic, str(wav)], check=True, env=self._env)

    def play(self, wav: Path) -> subprocess.Popen:
        """Start speaking a WAV into the microphone; returns at once (the player)."""
        return subprocess.Popen(["paplay", "-d", self.mic, str(wav)], env=self._env)

    def record_speaker(self, path: Path) -> subprocess.Popen:
        p = subprocess.Popen(["parecord", "-d", f"{self.spk}.monitor", "--rate", "16000",
                              "--channels", "1", "--file-format=wav", str(path)], env=self._env)
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
            subprocess.run(["pactl", "unload-module", mod], capture_output=True, env=self._env)


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT (and SIGQUIT) back to their default. A
    non-interactive shell starts a background job with both ignored, the child inherits
    that, and Python then installs no KeyboardInterrupt handler: the Ctrl-C of ``stop``
    did nothing and the session ran on (a test suite started with ``&``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class LiveSession:
    """`python -m pipeline run` (live mode) as a subprocess in a virtual room."""

    def __init__(self, room: VirtualRoom, root: Path, out_dir: Path, config: Path,
                 extra: Optional[list[str]] = None):
        self.out_dir = out_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "--config", str(config), "--output-dir",
             str(out_dir), *(extra or [])], cwd=root,
            env={**room.env(), "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
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

    def wait(self, timeout: float) -> int:
        """Its exit status, once it has ended by itself."""
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def stop(self) -> str:
        """Ctrl-C, as a person would."""
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # it did not stop: have it print its asyncio tasks (SIGUSR1), then abort it,
            # so that faulthandler (PYTHONFAULTHANDLER, set above) prints every thread's
            # stack, and fail with them
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=10)
            self._reader.join(timeout=5)
            raise AssertionError("the session did not stop within 30 s of Ctrl-C; its "
                                 f"output and threads:\n{self.output[-12000:]}") from None
        self._reader.join(timeout=5)
        return self.output
