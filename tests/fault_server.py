"""A real HTTP server for fault tests: just enough of OpenAI's API (``/v1/models``
and a streamed ``/v1/chat/completions``) to drive the `openai` backend, with
scripted faults. It listens on 127.0.0.1 only, in its own thread and event loop,
and records every chat request: its behaviour, headers and body, how many tokens
it was sent, and when the client hung up before the server was done.

    server = FaultServer().start()
    server.script("http_503", "ok")  # the first request fails, the next ones stream
    ...
    server.stop()
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

MODEL = "fault-model"
REPLY = "Hello there, my friend."
SLOW_TOKENS, SLOW_DELAY_S = 100, 0.05  # "slow": a 5 s reply
TRICKLE_EVERY_S, TRICKLE_MAX = 0.1, 100  # "trickle": keep-alives for at most 10 s
NOT_JSON = 'data: {"choices": [{"delta": {"content": "cut\n\n'  # a chunk cut short

BEHAVIOURS = (
    "ok",                   # the reply, token by token, then [DONE]
    "empty_choices",        # the same, with usage chunks whose `choices` is [] (vLLM, OpenAI)
    "empty",                # no content at all, then [DONE]: a legitimately empty reply
    "slow",                 # SLOW_TOKENS tokens, SLOW_DELAY_S apart
    "hang",                 # reads the request, then sends nothing
    "trickle",              # headers, then keep-alive comments and role-only chunks, no token
    "malformed",            # a `data:` line that is not JSON
    "bad_shape",            # JSON that is not a chat completion chunk
    "malformed_mid",        # two tokens, then a `data:` line that is not JSON
    "close_after_headers",  # headers, then the body ends cleanly: no data, no [DONE]
    "abort_after_headers",  # headers, then the connection is dropped
    "die_mid_reply",        # two tokens, then the connection is dropped
)  # and "http_<status>", e.g. "http_503": that status with an OpenAI-style error body


@dataclass
class Request:
    behaviour: str
    headers: dict[str, str]
    body: dict
    tokens_sent: int = 0
    finished: bool = False  # the server sent all it meant to
    hung_up_at: Optional[float] = None  # time.monotonic() when the client closed first


@dataclass
class FaultServer:
    reply: str = REPLY
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._script = ["ok"]
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional[asyncio.Event] = None
        self._handlers: set[asyncio.Task] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: str) -> "FaultServer":
        """The behaviours of the next chat requests, in order (the last one repeats);
        forgets the requests recorded so far."""
        for b in behaviours:
            if b not in BEHAVIOURS and not re.fullmatch(r"http_\d{3}", b):
                raise ValueError(f"unknown behaviour {b!r}; valid: {', '.join(BEHAVIOURS)}, "
                                 "http_<status>")
        self._script = list(behaviours)
        self.requests = []
        return self

    def start(self, timeout: float = 5.0) -> "FaultServer":
        """Serve on a free port, or again on the same one after ``stop()``."""
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),),
                                        name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the fault server did not start")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and every open connection, mid-reply or not."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)

    # ---- the server thread ----------------------------------------------------------
    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stopping.wait()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        watcher = None
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.strip().split("\r\n")
            path = request_line.split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if path.endswith("/models"):
                await _send_json(writer, 200, {"object": "list",
                                               "data": [{"id": MODEL, "object": "model"}]})
            elif path.endswith("/chat/completions"):
                n = len(self.requests)
                req = Request(self._script[min(n, len(self._script) - 1)], headers,
                              json.loads(body))
                self.requests.append(req)
                watcher = asyncio.create_task(_watch(reader, req))
                await self._chat(req, writer, watcher)
                req.finished = True
            else:
                await _send_json(writer, 404, {"error": {"message": f"no route {path}"}})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            if watcher is not None:
                watcher.cancel()
            writer.close()
            self._handlers.discard(asyncio.current_task())

    async def _chat(self, req: Request, writer: asyncio.StreamWriter,
                    watcher: asyncio.Task) -> None:
        b = req.behaviour
        if b.startswith("http_"):
            status = int(b[5:])
            await _send_json(writer, status, {"error": {"message": f"scripted HTTP {status}",
                                                        "type": "fault", "code": status}})
            return
        if b == "hang":
            await watcher  # until the client hangs up (or the server stops)
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        await writer.drain()
        if b == "close_after_headers":
            writer.write(b"0\r\n\r\n")  # the end of an empty body
            return
        if b == "abort_after_headers":
            writer.transport.abort()
            return
        if b == "trickle":
            for _ in range(TRICKLE_MAX):
                if req.hung_up_at is not None:
                    return
                await _send(writer, ": keep-alive\n\n")
                await _send(writer, _event(_chunk({"role": "assistant"})))
                await asyncio.sleep(TRICKLE_EVERY_S)
            return
        tokens = re.findall(r"\S+\s*", self.reply)
        if b == "slow":
            tokens = [tokens[i % len(tokens)] for i in range(SLOW_TOKENS)]
        elif b in ("empty", "malformed", "bad_shape"):
            tokens = []
        elif b in ("malformed_mid", "die_mid_reply"):
            tokens = tokens[:2]
        if b == "empty_choices":
            await _send(writer, _event(_usage_chunk(0)))
        await _send(writer, _event(_chunk({"role": "assistant", "content": ""})))
        if b == "malformed":
            await _send(writer, NOT_JSON)
        if b == "bad_shape":
            await _send(writer, _event({"object": "error", "message": "scripted error"}))
        for token in tokens:
            if req.hung_up_at is not None:
                return
            await _send(writer, _event(_chunk({"content": token})))
            req.tokens_sent += 1
            if b == "slow":
                await asyncio.sleep(SLOW_DELAY_S)
        if b == "malformed_mid":
            await _send(writer, NOT_JSON)
        if b == "die_mid_reply":
            writer.transport.abort()
            return
        await _send(writer, _event(_chunk({}, finish="stop")))
        if b == "empty_choices":
            await _send(writer, _event(_usage_chunk(len(tokens))))
        await _send(writer, "data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _watch(reader: asyncio.StreamReader, req: Request) -> None:
    """Note when the client closes the connection before the server is done."""
    try:
        await reader.read(1)  # the client sends nothing more: this returns at its hang-up
    except ConnectionError:
        pass
    if not req.finished:
        req.hung_up_at = time.monotonic()


async def _send(writer: asyncio.StreamWriter, text: str) -> None:
    """One chunk of a chunked body."""
    data = text.encode()
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def _send_json(writer: asyncio.StreamWriter, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    writer.write(f"HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
    await writer.drain()


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _chunk(delta: dict, finish: Optional[str] = None) -> dict:
    return {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0,
            "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _usage_chunk(completion_tokens: int) -> dict:
    return {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0,
            "model": MODEL, "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens,
                      "total_tokens": 12 + completion_tokens}}
