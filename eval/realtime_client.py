"""A client of Cascade's Realtime server, speaking like a person: the official
``openai`` package's realtime client (``AsyncOpenAI().realtime.connect``) streams
utterances as PCM16 at 24 kHz in real time, 40 ms at a time, with silence between
and after them (a microphone never stops sending), and collects every server event.
Used by the server tests and by ``make loadtest``."""
from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from pipeline.audio import resample

RATE = 24000
CHUNK = RATE // 25  # 40 ms


def pcm16_b64(samples: np.ndarray) -> str:
    return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode()


@dataclass
class Heard:
    """What a client received: every event (as dicts) and when, on its own clock."""

    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def types(self) -> list[str]:
        return [e.get("type") for e in self.events]

    def audio(self, response_id: Optional[str] = None) -> np.ndarray:
        parts = [np.frombuffer(base64.b64decode(e["delta"]), "<i2")
                 for e in self.of("response.output_audio.delta")
                 if response_id is None or e["response_id"] == response_id]
        return (np.concatenate(parts).astype(np.float32) / 32768) if parts else np.zeros(0)


def client(port: int, token: str = "cascade"):
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=token, base_url=f"http://127.0.0.1:{port}/v1",
                       websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)


async def speak(conn, utterances: list[np.ndarray], rate: int, gap_s: float, heard: Heard,
                until_done: int, tail_s: float = 1.0, timeout_s: float = 90.0) -> None:
    """Stream the utterances (at ``rate``) in real time, ``gap_s`` of silence after each,
    receiving meanwhile; after the last, keep sending silence until ``until_done``
    ``response.done`` events arrived (then ``tail_s`` more), or ``timeout_s``."""
    audio = [resample(u.astype(np.float32), rate, RATE) for u in utterances]
    silence = np.zeros(int(gap_s * RATE), np.float32)
    stream = np.concatenate([x for u in audio for x in (u, silence)]) if audio else silence
    t0 = time.monotonic()

    async def receive() -> None:
        async for event in conn:
            heard.events.append(event.to_dict() if hasattr(event, "to_dict") else dict(event))
            heard.times.append(time.monotonic() - t0)

    receiving = asyncio.create_task(receive())
    try:
        sent, done_at = 0, None
        while time.monotonic() - t0 < timeout_s:
            if receiving.done():
                receiving.result()  # the server closed: raise what ended it
                return
            if sent < len(stream):
                chunk = stream[sent:sent + CHUNK]
            else:
                chunk = np.zeros(CHUNK, np.float32)
            await conn.input_audio_buffer.append(audio=pcm16_b64(chunk))
            sent += CHUNK
            if done_at is None and sent >= len(stream) and len(heard.of("response.done")) >= until_done:
                done_at = time.monotonic()
            if done_at is not None and time.monotonic() - done_at >= tail_s:
                return
            await asyncio.sleep(max(0.0, t0 + sent / RATE - time.monotonic()))
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m pipeline serve`` on a free port, with ``server:`` keys overridden in a
    copy of ``config``; ready once /healthz says so; stopped with SIGTERM (its log kept
    in ``output``)."""

    def __init__(self, config: str, workdir, load_timeout_s: float = 180, **server: Any):
        self.config, self.workdir, self.server = config, workdir, server
        self.port = server.pop("port", None) or free_port()
        self.load_timeout_s = load_timeout_s
        self.proc = None
        self.output = ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "ServerProcess":
        import json as json_mod
        import subprocess
        import sys
        import urllib.request
        from pathlib import Path

        import yaml

        root = Path(__file__).resolve().parent.parent
        data = yaml.safe_load((root / self.config).read_text())
        data["server"] = {**(data.get("server") or {}), "port": self.port, **self.server}
        cfg = Path(self.workdir) / "server.yaml"
        cfg.write_text(yaml.safe_dump(data))
        self._log = open(Path(self.workdir) / "server.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--config",
                                      str(cfg)], cwd=root, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.load_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.output}")
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=2) as r:
                    if json_mod.load(r)["status"] == "ok":
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"the server was not ready in {self.load_timeout_s} s:\n{self.output}")

    def __exit__(self, *exc: Any) -> None:
        import signal
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.seek(0)
        self.output = self._log.read()
        self._log.close()

    def health(self) -> dict[str, Any]:
        import json as json_mod
        import urllib.request

        with urllib.request.urlopen(self.url("/healthz"), timeout=5) as r:
            return json_mod.load(r)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            return r.read().decode()
