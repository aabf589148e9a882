"""The Realtime server (`make serve`), for real: `python -m pipeline serve` with the
bundled models, the official `openai` package's realtime client speaking corpus
clips in real time, and raw WebSocket clients for what a good client never sends."""
import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

from eval.speech_bounds import speech_span
from eval.realtime_client import Heard, ServerProcess, client, pcm16_b64, speak
from eval.wer import wer
from pipeline.audio import read_wav

ORDER = ["session.created", "input_audio_buffer.speech_started",
         "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
         "response.created", "conversation.item.input_audio_transcription.completed",
         "response.output_item.added", "response.content_part.added",
         "response.output_audio.delta", "response.output_audio_transcript.delta",
         "response.output_audio.done", "response.output_audio_transcript.done",
         "response.content_part.done", "response.output_item.done", "response.done",
         "cascade.turn.timeline"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    with ServerProcess("configs/default.yaml", work, max_sessions=2,
                       sessions_dir=str(work / "sessions")) as srv:
        srv.sessions_dir = work / "sessions"
        srv.sessions_dir.mkdir(exist_ok=True)
        yield srv
    assert "Traceback" not in srv.output, srv.output


def clip_audio(corpus, clip_id):
    clip = next(c for c in corpus if c.id == clip_id)
    return clip, read_wav(clip.path)


async def converse(port, audio, gap_s=0.6, until_done=1, instructions=None):
    heard = Heard()
    async with client(port).realtime.connect(model="cascade") as conn:
        if instructions:
            await conn.session.update(session={"type": "realtime", "instructions": instructions})
        await speak(conn, [audio], 16000, gap_s, heard, until_done=until_done, timeout_s=60)
    return heard


def answered(heard):
    done = [e for e in heard.of("response.done") if e["response"]["status"] == "completed"]
    assert done, heard.types()
    return done[-1]["response"]


def test_the_openai_realtime_client_gets_a_spoken_answer(server, corpus):
    clip, audio = clip_audio(corpus, "vctk_p238_165")
    heard = asyncio.run(converse(server.port, audio, instructions="You are a helpful voice "
                                 "assistant. Answer in one short sentence."))
    types = heard.types()
    assert "session.updated" in types
    # every event of the turn, in the order a client expects
    firsts = [types.index(t) for t in ORDER]
    assert firsts == sorted(firsts), list(zip(ORDER, firsts))
    [said] = heard.of("conversation.item.input_audio_transcription.completed")
    assert wer([clip.text], [said["transcript"]]) < 0.3
    resp = answered(heard)
    [item] = resp["output"]
    assert item["role"] == "assistant" and item["content"][0]["transcript"].strip()
    # the deltas of the transcript add up to the transcript, and the audio is a voice
    deltas = "".join(e["delta"] for e in heard.of("response.output_audio_transcript.delta"))
    assert deltas.strip() == item["content"][0]["transcript"].strip()
    voice = heard.audio(resp["id"])
    assert len(voice) / 24000 > 0.5 and np.sqrt(np.mean(voice ** 2)) > 0.01
    # media times are the client's own stream's: the speech is where it was sent
    begin, end = speech_span(audio)
    started = heard.of("input_audio_buffer.speech_started")[0]["audio_start_ms"]
    stopped = heard.of("input_audio_buffer.speech_stopped")[0]["audio_end_ms"]
    assert abs(started - 1000 * begin) < 150 and abs(stopped - 1000 * end) < 250, (started, stopped)
    [timeline] = heard.of("cascade.turn.timeline")
    assert timeline["turn"]["status"] == "answered" and timeline["timeline"]["v2v_ms"] > 0
    # the session's transcript is kept on the server
    [folder] = [p for p in server.sessions_dir.iterdir()
                if json.loads((p / "transcript.jsonl").read_text().splitlines()[0])["user"]
                == said["transcript"]]
    metrics = server.metrics()
    assert 'cascade_turns_total{status="answered"}' in metrics
    assert "cascade_v2v_seconds_count" in metrics and "cascade_v2v_seconds_count 0" not in metrics


def test_two_sessions_keep_their_own_words_and_a_third_is_refused(server, corpus):
    clips = [clip_audio(corpus, "vctk_p238_165"), clip_audio(corpus, "cmusphinx_goforward")]

    async def refused():
        await asyncio.sleep(1.0)  # both sessions are open by now
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"ws://127.0.0.1:{server.port}/v1/realtime") as ws:
                msg = await ws.receive(timeout=10)
                closed = await ws.receive(timeout=10)
                return json.loads(msg.data), closed.type, ws.close_code

    async def main():
        return await asyncio.gather(converse(server.port, clips[0][1]),
                                    converse(server.port, clips[1][1]), refused())

    first, second, (busy, closed, code) = asyncio.run(main())
    assert busy["type"] == "error" and busy["error"]["code"] == "busy", busy
    assert "max_sessions=2" in busy["error"]["message"]
    assert closed == aiohttp.WSMsgType.CLOSE and code == 1013
    for (clip, _), heard, other in ((clips[0], first, clips[1][0]), (clips[1], second, clips[0][0])):
        said = " ".join(e["transcript"] for e in
                        heard.of("conversation.item.input_audio_transcription.completed"))
        assert wer([clip.text], [said]) < 0.3, said  # its own words, none of the other's
        assert wer([other.text], [said]) > 0.7, said
        answered(heard)  # the refused client changed nothing for them
    assert 'cascade_sessions_refused_total 1' in server.metrics()


async def raw(port, *messages, expect=1):
    """Send raw messages; read until ``expect`` more events came or the server closed.
    Returns the events (as dicts) and the server's close code (None: still open)."""
    events = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{port}/v1/realtime",
                                   max_msg_size=0) as ws:
            events.append(json.loads((await ws.receive(timeout=30)).data))  # session.created
            for m in messages:
                await ws.send_str(m)
            while len(events) < 1 + expect:
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return events, ws.close_code
                events.append(json.loads(msg.data))
            return events, None


def test_bad_messages_get_an_error_event_and_close_only_that_session(server):
    events, code = asyncio.run(raw(server.port, "{not json", expect=2))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "invalid_json"
    assert code == 1008

    # an unknown event and bad audio: an error each, and the session goes on
    assert sessions_after(server) == 0  # the slot of the session just closed is free
    events, code = asyncio.run(raw(server.port,
                                   json.dumps({"type": "bogus.event", "event_id": "e1"}),
                                   json.dumps({"type": "input_audio_buffer.append",
                                               "audio": "***"}),
                                   json.dumps({"type": "session.update", "session": {
                                       "type": "realtime", "audio": {"input": {"format": {
                                           "type": "audio/pcm", "rate": 16000}}}}}),
                                   json.dumps({"type": "session.update", "session": {
                                       "type": "realtime", "instructions": "Be brief."}}), expect=4))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["unknown_event", "invalid_value", "unsupported_format"]
    assert errors[0]["event_id"] == "e1" and "bogus.event" in errors[0]["message"]
    [updated] = [e for e in events if e["type"] == "session.updated"]
    assert updated["session"]["instructions"] == "Be brief."
    assert code is None  # still open when the client left

    big = json.dumps({"type": "input_audio_buffer.append",
                      "audio": pcm16_b64(np.zeros(800_000, np.float32))})  # 2.1 MB > 1 MiB
    assert sessions_after(server) == 0
    events, code = asyncio.run(raw(server.port, big, expect=2))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "message_too_big"
    assert code == 1009
    assert sessions_after(server) == 0


def test_a_client_that_leaves_mid_reply_frees_its_slot(server, corpus):
    clip, audio = clip_audio(corpus, "vctk_p238_165")

    async def leave_at_first_audio():
        heard = Heard()
        async with client(server.port).realtime.connect(model="cascade") as conn:
            task = asyncio.create_task(speak(conn, [audio], 16000, 0.6, heard, until_done=9,
                                             timeout_s=40))
            await first_audio(heard, task, 0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return heard

    before = {p.name for p in server.sessions_dir.iterdir()}
    heard = asyncio.run(leave_at_first_audio())
    assert heard.of("response.output_audio.delta")
    assert sessions_after(server) == 0  # the slot is free again
    [new] = {p.name for p in server.sessions_dir.iterdir()} - before
    [turn] = [json.loads(x) for x in (server.sessions_dir / new / "transcript.jsonl")
              .read_text().splitlines()]
    # what was said is kept; the reply is cut unless, on a loaded machine, the server's
    # model of the client's playback had already played it out when the close arrived
    assert turn["status"] in ("interrupted", "answered") and turn["user"]
    assert "session_end" in server_log(server)


async def first_audio(heard, speaking: asyncio.Task, poll_s: float) -> None:
    """Until the first reply audio arrives (or the client's speaking task ends)."""
    while not heard.of("response.output_audio.delta") and not speaking.done():
        await asyncio.sleep(poll_s)


def sessions_after(server, wait_s=30.0):
    """Open sessions once the ones just left are cleaned up."""
    deadline = time.monotonic() + wait_s
    while server.health()["sessions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.health()["sessions"]


def server_log(server):
    return (server.sessions_dir.parent / "server.log").read_text()


def test_a_token_is_needed_when_one_is_set_and_foreign_origins_are_refused(tmp_path, corpus):
    with ServerProcess("configs/default.yaml", tmp_path, token="s3cret", sessions_dir=None,
                       max_sessions=8) as srv:
        async def attempt(headers=None, query=""):
            async with aiohttp.ClientSession() as http:
                try:
                    async with http.ws_connect(f"ws://127.0.0.1:{srv.port}/v1/realtime{query}",
                                               headers=headers or {}) as ws:
                        return json.loads((await ws.receive(timeout=20)).data)["type"]
                except aiohttp.WSServerHandshakeError as err:
                    return err.status

        assert asyncio.run(attempt()) == 401
        assert asyncio.run(attempt({"Authorization": "Bearer wrong"})) == 401
        assert asyncio.run(attempt({"Authorization": "Bearer s3cret"})) == "session.created"
        assert asyncio.run(attempt(query="?token=s3cret")) == "session.created"
        assert asyncio.run(attempt({"Authorization": "Bearer s3cret",
                                    "Origin": "http://evil.example"})) == 403
        assert asyncio.run(attempt({"Authorization": "Bearer s3cret",
                                    "Origin": f"http://127.0.0.1:{srv.port}"})) == "session.created"

        # the openai client sends its api_key as the bearer token
        async def with_client():
            async with client(srv.port, token="s3cret").realtime.connect(model="cascade") as conn:
                return (await conn.recv()).type
        assert asyncio.run(with_client()) == "session.created"


def test_a_public_address_without_a_token_is_refused_at_start(default_config):
    from pipeline.errors import ConfigError
    from pipeline.server import Server
    with pytest.raises(ConfigError, match="server.token"):
        Server(default_config, host="0.0.0.0")


def test_response_cancel_stops_the_reply_where_the_client_heard_it(server, corpus):
    clip, audio = clip_audio(corpus, "vctk_p238_165")

    async def cancel_at_first_audio():
        heard = Heard()
        async with client(server.port).realtime.connect(model="cascade") as conn:
            task = asyncio.create_task(speak(conn, [audio], 16000, 0.6, heard, until_done=1,
                                             tail_s=0.5, timeout_s=40))
            await first_audio(heard, task, 0.02)
            await conn.response.cancel()
            await task
        return heard

    heard = asyncio.run(cancel_at_first_audio())
    [done] = heard.of("response.done")
    assert done["response"]["status"] == "cancelled", done
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    [cut] = heard.of("conversation.item.truncated")
    sent_ms = 1000 * len(heard.audio(done["response"]["id"])) / 24000
    assert 0 <= cut["audio_end_ms"] < min(sent_ms, 1500), (cut, sent_ms)  # heard, not all sent


def test_a_client_that_stops_sending_still_gets_its_reply_done(server, corpus):
    """A muted microphone sends nothing: the server hears silence, so the turn ends and
    the reply completes."""
    clip, audio = clip_audio(corpus, "vctk_p238_165")

    async def main():
        heard = Heard()
        async with client(server.port).realtime.connect(model="cascade") as conn:
            await speak(conn, [audio], 16000, 0.0, heard, until_done=0, tail_s=0.0,
                        timeout_s=len(audio) / 16000)  # the clip, then not one more sample

            async def rest():
                async for event in conn:
                    heard.events.append(event.to_dict())
                    if event.type == "response.done":
                        return
            await asyncio.wait_for(rest(), 40)
        return heard

    heard = asyncio.run(main())
    answered(heard)


def test_a_foreign_host_or_bad_session_update_is_refused_cleanly(server):
    async def attempt(headers):
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(f"ws://127.0.0.1:{server.port}/v1/realtime",
                                           headers=headers):
                    return "open"
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    # DNS rebinding: a page of another site, reaching us through a name of its own
    assert asyncio.run(attempt({"Host": f"evil.example:{server.port}",
                                "Origin": f"http://evil.example:{server.port}"})) == 403
    assert asyncio.run(attempt({"Origin": f"http://localhost:{server.port}"})) == "open"
    assert sessions_after(server) == 0
    events, code = asyncio.run(raw(server.port,
                                   json.dumps({"type": "session.update",
                                               "session": {"type": "realtime", "audio": "x"}}),
                                   json.dumps({"type": "session.update",
                                               "session": {"type": "realtime",
                                                           "instructions": "x" * 5000}}),
                                   expect=2))
    assert [e["error"]["code"] for e in events[1:]] == ["invalid_type", "invalid_value"], events
    assert code is None
    assert sessions_after(server) == 0
    events, code = asyncio.run(raw(server.port, "[" * 100_000 + "]" * 100_000, expect=2))
    assert events[-1]["error"]["code"] == "invalid_json" and code == 1008
