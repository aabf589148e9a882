"""`make loadtest`: K simulated clients talking at once to the Realtime server.

    .venv/bin/python -m eval.loadtest [--config configs/default.yaml] [--clients 1 2 4 8]
                                      [--turns 4] [--port N (a server already running)]

Starts ``python -m pipeline serve`` (``server.max_sessions`` set to the largest K),
unless ``--port`` names one already running. For each K, K clients (the official
``openai`` realtime client, :mod:`eval.realtime_client`) connect together, each with
its own corpus clips, and speak ``--turns`` utterances in real time; after each they
keep sending silence until the reply has played (its ``response.done``), then go on.

Per K: V2V measured by the client (the last voiced sample sent, from the clip's own
speech boundary, to the first reply audio received), the server's V2V (its
timeline), p50 and p90; errors (error events, failed responses, utterances with no
reply); where it breaks (the first K with errors, or whose client V2V p50 passes
1.5x that of the smallest K). Writes eval/out/loadtest.json and loadtest.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from eval.realtime_client import CHUNK, RATE, ServerProcess, client, pcm16_b64
from eval.report import machine, pick_clips
from eval.stats import percentiles
from pipeline.audio import resample

OUT = Path(__file__).resolve().parent.parent / "eval" / "out"
CEILING_MS = 500.0
REPLY_WAIT_S = 20.0  # an utterance with no reply by then counts as an error


async def talk(port: int, clips: list, start_delay_s: float) -> dict[str, Any]:
    """One client: each clip, then silence until its reply has played."""
    await asyncio.sleep(start_delay_s)
    events: list[tuple[float, dict[str, Any]]] = []
    turns: list[dict[str, Any]] = []
    async with client(port).realtime.connect(model="cascade") as conn:
        t0 = time.monotonic()

        async def receive() -> None:
            async for ev in conn:
                events.append((time.monotonic(), ev.to_dict()))

        receiving = asyncio.create_task(receive())
        sent = 0

        async def send(samples: np.ndarray) -> None:
            nonlocal sent
            for i in range(0, len(samples), CHUNK):
                if receiving.done():
                    receiving.result()
                    raise ConnectionError("the server closed the session")
                await conn.input_audio_buffer.append(audio=pcm16_b64(samples[i:i + CHUNK]))
                sent += len(samples[i:i + CHUNK])
                await asyncio.sleep(max(0.0, t0 + sent / RATE - time.monotonic()))

        try:
            for clip, audio, end_s in clips:
                audio24 = resample(audio, 16000, RATE)
                speech_end = t0 + (sent + end_s * RATE) / RATE  # when its last voiced sample is sent
                await send(audio24)
                seen = len(events)
                done_at: Optional[float] = None
                while time.monotonic() < speech_end + REPLY_WAIT_S:
                    if any(e["type"] == "response.done" and e["response"]["status"] == "completed"
                           for _, e in events[seen:]):
                        done_at = done_at or time.monotonic()
                        if time.monotonic() - done_at > 0.5:
                            break
                    await send(np.zeros(CHUNK, np.float32))
                first = next((t for t, e in events if t > speech_end
                              and e["type"] == "response.output_audio.delta"), None)
                timeline = next((e for _, e in events[seen:] if e["type"] == "cascade.turn.timeline"
                                 and e["turn"]["status"] == "answered"), None)
                turns.append({"clip": clip.id, "answered": done_at is not None,
                              "v2v_client_ms": None if first is None or done_at is None
                              else round((first - speech_end) * 1000, 1),
                              "v2v_server_ms": timeline["timeline"]["v2v_ms"] if timeline else None})
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
    errors = [e["error"] for _, e in events if e["type"] == "error"]
    failed = [e for _, e in events if e["type"] == "response.done"
              and e["response"]["status"] == "failed"]
    return {"turns": turns, "errors": [x.get("message") for x in errors] +
            [f"failed response: {e['response'].get('status_details')}" for e in failed]}


async def run_k(ports: list[int], k: int, turns: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    jobs = [talk(ports[i % len(ports)], pick_clips(turns, seed=seed * 100 + i),
                 rng.uniform(0, 1.0)) for i in range(k)]
    t0 = time.monotonic()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    wall = time.monotonic() - t0
    all_turns, errors = [], []
    for r in results:
        if isinstance(r, BaseException):
            errors.append(f"client failed: {type(r).__name__}: {r}")
            continue
        all_turns += r["turns"]
        errors += r["errors"]
    no_reply = sum(not t["answered"] for t in all_turns)
    client_v2v = percentiles(t["v2v_client_ms"] for t in all_turns if t["v2v_client_ms"] is not None)
    server_v2v = percentiles(t["v2v_server_ms"] for t in all_turns if t["v2v_server_ms"] is not None)
    return {"clients": k, "utterances": len(all_turns), "answered": len(all_turns) - no_reply,
            "no_reply": no_reply, "errors": errors, "wall_s": round(wall, 1),
            "v2v_client_ms": client_v2v, "v2v_server_ms": server_v2v,
            "under_500_ms": (sum(t["v2v_client_ms"] <= CEILING_MS for t in all_turns
                                 if t["v2v_client_ms"] is not None) / max(1, client_v2v["n"])),
            "turns": all_turns}


BREAK_RATIO = 1.5  # V2V p50 this many times one client's: the server is saturated


def breaks_at(rows: list[dict[str, Any]]) -> Optional[int]:
    """The first K with errors, an utterance left unanswered, or a client V2V p50 over
    BREAK_RATIO x the smallest K's."""
    base = rows[0]["v2v_client_ms"]["p50"] if rows else None
    for r in rows:
        p50 = r["v2v_client_ms"]["p50"]
        if (r["errors"] or r["no_reply"] or p50 is None or base is None
                or p50 > BREAK_RATIO * base):
            return r["clients"]
    return None


def render(result: dict[str, Any]) -> str:
    def ms(x):
        return "-" if x is None else f"{x:.0f}"
    lines = ["| clients | utterances | answered | V2V p50 (client) | p90 | V2V p50 (server) | p90 "
             "| under 500 ms | errors |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        c, s = r["v2v_client_ms"], r["v2v_server_ms"]
        lines.append(f"| {r['clients']} | {r['utterances']} | {r['answered']} | {ms(c['p50'])} | "
                     f"{ms(c['p90'])} | {ms(s['p50'])} | {ms(s['p90'])} | "
                     f"{100 * r['under_500_ms']:.0f}% | {len(r['errors']) + r['no_reply']} |")
    b = result["breaks_at"]
    lines.append("")
    lines.append(f"Breaks at {b} clients (errors, an unanswered utterance, or a client V2V p50 "
                 f"over {BREAK_RATIO:g}x that of {result['runs'][0]['clients']} client(s))."
                 if b else f"Holds up to {result['runs'][-1]['clients']} clients.")
    if len(result.get("ports") or []) > 1:
        lines.append(f"Clients spread over {len(result['ports'])} server processes "
                     f"(ports {', '.join(map(str, result['ports']))}).")
    m = result["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['isa'])}; "
                 f"config {result['config']}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--turns", type=int, default=4, help="utterances per client")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=int, nargs="+", help="servers already running (else one is "
                    "started); clients are spread over them in turn")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--name", help="output file name (default loadtest: loadtest.json, .md)")
    args = ap.parse_args()

    async def all_k(ports: list[int]) -> list[dict[str, Any]]:
        rows = []
        for k in args.clients:
            print(f"{k} client(s) ...", flush=True)
            rows.append(await run_k(ports, k, args.turns, args.seed))
            r = rows[-1]
            print(f"  client V2V p50 {r['v2v_client_ms']['p50']} p90 {r['v2v_client_ms']['p90']}; "
                  f"answered {r['answered']}/{r['utterances']}; errors {len(r['errors'])}",
                  flush=True)
            await asyncio.sleep(2.0)  # the sessions close
        return rows

    ports = args.port
    if ports:
        rows = asyncio.run(all_k(ports))
    else:
        with tempfile.TemporaryDirectory(prefix="cascade-loadtest-") as tmp:
            with ServerProcess(args.config, tmp, max_sessions=max(args.clients),
                               sessions_dir=str(Path(tmp) / "sessions")) as srv:
                ports = [srv.port]
                rows = asyncio.run(all_k(ports))
    result = {"config": args.config, "ports": ports, "turns_per_client": args.turns,
              "machine": machine(),
              "runs": rows, "breaks_at": breaks_at(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or "loadtest"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    (args.out / f"{name}.md").write_text("# Load test (make loadtest)\n\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
