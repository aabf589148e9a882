"""`make serve`: Cascade as a service, on aiohttp.

- ``/v1/realtime``: the OpenAI Realtime API over WebSocket (:mod:`pipeline.realtime`);
- ``/``: the web page (``pipeline/web/``): microphone, playback, both transcripts,
  each turn's V2V as measured in the browser, and a latency waterfall;
- ``/healthz``: liveness and capacity, as JSON; ``/metrics``: Prometheus.

Many sessions share one Whisper, one LLM and one voice (:mod:`pipeline.shared`);
each has its own VAD, turn state and history, and its transcript in
``server.sessions_dir``. Past ``server.max_sessions`` a new session gets an
``error`` event (code ``busy``) and is closed; the others go on.

Security: bound to localhost by default; on any other address ``server.token`` is
required (``Authorization: Bearer`` or ``?token=``). A browser's Origin must be
the server's own or in ``server.allowed_origins``. A message over
``server.max_message_bytes``, or one that is not JSON, closes that session only,
after an ``error`` event. Logs: one JSON object per line on stdout.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from . import clock as clock_mod
from .clock import Clock
from .config import CascadeConfig
from .console import Console
from .errors import CascadeError, ConfigError
from .metrics import Metrics
from .observers import Observer
from .realtime import (InputAudio, ProtocolError, RealtimeProtocol, RealtimeSink, error_event,
                       new_id, parse_session_update, pcm16_decode, session_object)
from .session import Session
from .shared import ModelPool
from .turn import Turn

WEB = Path(__file__).resolve().parent / "web"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CLOSE_BUSY = 1013  # try again later
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
MAX_OUTGOING = 20000  # events queued for a client that does not read (minutes of audio)


def log(event: str, **fields: Any) -> None:
    """A structured log line (JSON) on stdout."""
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields},
                     ensure_ascii=False, default=str), flush=True)


class LogLines(Observer):
    """One session's turns and errors as log lines."""

    def __init__(self, session_id: str):
        self.session_id = session_id

    def turn_ended(self, turn: Turn, transcript: dict[str, Any], timeline: dict[str, Any]) -> None:
        log("turn", session=self.session_id, turn_id=turn.turn_id, status=transcript["status"],
            v2v_ms=timeline.get("v2v_ms"), user=transcript["user"],
            assistant=transcript["assistant"], error=transcript.get("error"))

    def error(self, text: str) -> None:
        log("session_error", session=self.session_id, message=text)


class Server:
    def __init__(self, config: CascadeConfig, port: Optional[int] = None,
                 host: Optional[str] = None):
        self.config = config
        self.settings = config.server
        self.host = host or self.settings.host
        self.port = self.settings.port if port is None else port
        self.token = os.environ.get("CASCADE_SERVER_TOKEN") or self.settings.token
        if self.host not in LOCAL_HOSTS and not self.token:
            raise ConfigError(f"{config.source}: server.host {self.host!r} is reachable from other "
                              "machines: set server.token (or CASCADE_SERVER_TOKEN) so that only "
                              "clients with the token get in")
        self.pool = ModelPool(config)
        self.metrics = Metrics()
        self.sessions: dict[str, asyncio.Task] = {}
        self.ready = False

    # ---- the app ---------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/v1/realtime", self.realtime)
        app.router.add_static("/static/", WEB, show_index=False)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _start(self, app: web.Application) -> None:
        t0 = time.perf_counter()
        await self.pool.start()
        self.ready = True
        log("ready", load_s=round(time.perf_counter() - t0, 2), host=self.host, port=self.port,
            max_sessions=self.settings.max_sessions, config=self.config.source)

    async def _shutdown(self, app: web.Application) -> None:
        for task in list(self.sessions.values()):
            task.cancel()
        if self.sessions:
            await asyncio.wait(list(self.sessions.values()), timeout=10)

    async def _cleanup(self, app: web.Application) -> None:
        await self.pool.aclose()

    # ---- plain HTTP ------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / "index.html")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if self.ready else "loading",
                                  "sessions": len(self.sessions),
                                  "max_sessions": self.settings.max_sessions},
                                 status=200 if self.ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.active_sessions = len(self.sessions)
        return web.Response(text=self.metrics.render(self.settings.max_sessions),
                            content_type="text/plain", charset="utf-8")

    # ---- checks ----------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _our_name(self, netloc: str) -> bool:
        """``host[:port]`` names this server: its bound address, or localhost when bound
        there. Not the request's Host header, which a rebound DNS name controls."""
        try:
            parts = urlsplit(f"//{netloc}")
            host, port = parts.hostname, parts.port
        except ValueError:
            return False
        names = {self.host} | (set(LOCAL_HOSTS) if self.host in LOCAL_HOSTS else set())
        return host in names and port in (None, self.port)

    def _origin_ok(self, request: web.Request) -> bool:
        if not self.token and not self._our_name(request.host):
            return False  # DNS rebinding: a page of another site reached us by a name of its own
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser
            return True
        if origin in self.settings.allowed_origins:
            return True
        return self._our_name(urlsplit(origin).netloc)

    # ---- one session -----------------------------------------------------------------
    async def realtime(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.metrics.error("unauthorized")
            raise web.HTTPUnauthorized(text="a valid token is required (Authorization: Bearer "
                                       "<server.token>, or ?token=)")
        if not self._origin_ok(request):
            self.metrics.error("origin")
            raise web.HTTPForbidden(text=f"origin {request.headers.get('Origin')!r} (host "
                                    f"{request.host!r}) is not allowed (server.allowed_origins)")
        limit = self.settings.max_message_bytes
        ws = web.WebSocketResponse(max_msg_size=4 * limit, heartbeat=30)
        await ws.prepare(request)
        if not self.ready or len(self.sessions) >= self.settings.max_sessions:
            self.metrics.refused += 1
            why = "loading models" if not self.ready else \
                f"at capacity (server.max_sessions={self.settings.max_sessions})"
            await ws.send_json({"event_id": new_id("event"), **error_event(
                f"the server is busy: {why}; try again later", "busy", "server_error")})
            await ws.close(code=CLOSE_BUSY, message=b"busy")
            log("refused", reason=why, peer=request.remote)
            return ws
        session_id = new_id("sess")
        self.sessions[session_id] = asyncio.current_task()
        self.metrics.sessions += 1
        log("session_start", session=session_id, peer=request.remote)
        reason = "client closed"
        try:
            reason = await self._serve(ws, session_id, limit)
        except CascadeError as err:
            reason = f"error: {err}"
            self.metrics.error("session")
            with contextlib.suppress(Exception):
                await ws.send_json({"event_id": new_id("event"),
                                    **error_event(str(err), "session_failed", "server_error")})
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        finally:
            del self.sessions[session_id]
            with contextlib.suppress(Exception):
                await ws.close()
            log("session_end", session=session_id, reason=reason)
        return ws

    async def _serve(self, ws: web.WebSocketResponse, session_id: str, limit: int) -> str:
        clock = Clock()
        clock_mod.use(clock)  # this task's (and its children's) session clock
        outgoing: asyncio.Queue = asyncio.Queue()

        def send(event: dict[str, Any]) -> None:
            if outgoing.qsize() > MAX_OUTGOING:  # the client does not read: let it go
                if not ws.closed:
                    asyncio.ensure_future(ws.close(code=CLOSE_POLICY, message=b"not reading"))
                return
            outgoing.put_nowait({"event_id": new_id("event"), **event})

        async def writer() -> None:
            try:
                while True:
                    event = await outgoing.get()
                    if event is None or ws.closed:
                        return
                    await ws.send_str(json.dumps(event))
            except (ConnectionError, RuntimeError) as err:  # the socket went away mid-send
                log("session_error", session=session_id, message=f"sending: {err}")
                await ws.close()

        audio_in = InputAudio(clock, self.settings.max_buffered_s)
        protocol = RealtimeProtocol(send, audio_in, self.metrics.turn)
        sessions_dir = self.settings.sessions_dir
        out_dir = Path(sessions_dir) / session_id if sessions_dir else None
        session = Session(self.config, lambda st: RealtimeSink(st.tts.sample_rate, protocol),
                          out_dir, Console(quiet=True), stages=self.pool.stages(),
                          observers=(protocol, LogLines(session_id)))
        llm = session.stages.llm
        writing = asyncio.create_task(writer(), name=f"ws-writer-{session_id}")
        # client events are handled from the start: audio sent while the session's own
        # models load is kept, on its time line
        send({"type": "session.created",
              "session": {**session_object(llm.config.system_prompt), "id": session_id}})
        receiving = asyncio.create_task(self._receive(ws, session, audio_in, protocol, send,
                                                      limit), name=f"ws-reader-{session_id}")
        running: Optional[asyncio.Task] = None
        starting = asyncio.create_task(session.__aenter__(), name=f"start-{session_id}")
        try:
            await asyncio.wait([starting, receiving], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # the client left while the session was starting
                starting.cancel()  # (its start closes what it had opened)
                await asyncio.wait([starting])
                return receiving.result()
            starting.result()  # a failed start raises here, its session closed
            try:
                running = asyncio.create_task(session.run(audio_in.frames(), clock),
                                              name=f"session-{session_id}")
                try:
                    await asyncio.wait([receiving, running], return_when=asyncio.FIRST_COMPLETED)
                finally:  # the run ends (the client left, or the server stops) before close
                    if not running.done():
                        running.cancel()  # its work stops, its turn is recorded, its slot frees
                    await asyncio.wait([running])
                if not running.cancelled() and running.exception() is not None:
                    raise running.exception()
            finally:
                await session.aclose()
            return receiving.result() if receiving.done() else "the session ended"
        finally:
            for task in (starting, running, receiving):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.wait([task])
            outgoing.put_nowait(None)
            with contextlib.suppress(Exception):  # the writer's own error was sent or logged
                async with asyncio.timeout(5):  # not wait_for: it can lose a cancel (waits.py)
                    await writing
            writing.cancel()

    async def _receive(self, ws: web.WebSocketResponse, session: Session, audio_in: InputAudio,
                       protocol: RealtimeProtocol, send, limit: int) -> str:
        """Client events until the client leaves; returns why the session ends."""
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return "client closed"
                if msg.type == WSMsgType.ERROR:
                    self.metrics.error("websocket")
                    return f"websocket error: {ws.exception()}"
                data = msg.data if msg.type == WSMsgType.BINARY else \
                    msg.data.encode("utf-8", "surrogatepass")
                if len(data) > limit:
                    self.metrics.error("message_too_big")
                    send(error_event(f"message of {len(data)} bytes is over server."
                                     f"max_message_bytes={limit}; the session is closed",
                                     "message_too_big"))
                    await self._close_after_send(ws, CLOSE_TOO_BIG)
                    return "message too big"
                try:
                    event = json.loads(data)
                    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                        raise ValueError("not an event object with a 'type'")
                except (ValueError, RecursionError) as err:
                    self.metrics.error("malformed")
                    send(error_event(f"malformed message: {err}; the session is closed",
                                     "invalid_json"))
                    await self._close_after_send(ws, CLOSE_POLICY)
                    return "malformed message"
                try:
                    self._handle(event, session, audio_in, protocol, send)
                except ProtocolError as err:
                    self.metrics.error("client_event")
                    send(error_event(str(err), err.code, param=err.param,
                                     event_id=event.get("event_id")))
        finally:
            audio_in.close()

    async def _close_after_send(self, ws: web.WebSocketResponse, code: int) -> None:
        await asyncio.sleep(0.05)  # let the writer send the error event first
        await ws.close(code=code)

    def _handle(self, event: dict[str, Any], session: Session, audio_in: InputAudio,
                protocol: RealtimeProtocol, send) -> None:
        kind = event["type"]
        llm = session.stages.llm
        if kind == "input_audio_buffer.append":
            audio_in.append(pcm16_decode(event.get("audio")))
        elif kind == "session.update":
            instructions = parse_session_update(event)
            if instructions is not None:
                llm.set_system_prompt(instructions)
            send({"type": "session.updated", "session": session_object(llm.config.system_prompt)})
        elif kind == "input_audio_buffer.clear":
            audio_in.clear()
            send({"type": "input_audio_buffer.cleared"})
        elif kind == "response.cancel":
            protocol.cancel_requested()
            session.orchestrator.request_stop()
        elif kind == "conversation.item.truncate":
            item = event.get("item_id")
            if not isinstance(item, str) or not protocol.known_item(item):
                raise ProtocolError(f"conversation.item.truncate: no reply item {item!r} is "
                                    "playing", "item_not_found", "item_id")
            protocol.cancel_requested()
            session.orchestrator.request_stop()  # the server cuts at what was played
        elif kind == "input_audio_buffer.commit":
            raise ProtocolError("input_audio_buffer.commit: turn detection is on the server; "
                                "the turn is committed when the user stops speaking",
                                "turn_detection_on_server")
        elif kind == "response.create":
            raise ProtocolError("response.create: responses are created by the server's turn "
                                "detection, one per user turn", "turn_detection_on_server")
        else:
            raise ProtocolError(f"unknown or unsupported event type {kind!r}", "unknown_event",
                                "type")


def serve(config: CascadeConfig, port: Optional[int] = None, host: Optional[str] = None) -> None:
    server = Server(config, port, host)
    log("loading", config=config.source)
    web.run_app(server.app(), host=server.host, port=server.port, print=lambda *a: None,
                handle_signals=True, access_log=None)


if __name__ == "__main__":
    sys.exit("use: python -m pipeline serve [--config FILE] [--port N]")
