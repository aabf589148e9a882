"""Barge-in benchmark: how soon does playback stop once the user's speech is
detected? A live session through the real audio stack (PulseAudio null sinks as
microphone and speaker), interrupted again and again by corpus speech.

    .venv/bin/python -m eval.bench_barge_in [--times 8]

Reports barge_in_stop_ms (from the detected speech start to the last reply
sample leaving the speaker, device latency included): median, p90, max.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from eval.corpus import load_manifest
from eval.stats import percentiles
from eval.virtual_audio import PulseServer, VirtualRoom

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--times", type=int, default=8)
    ap.add_argument("--config", default="configs/default.yaml")
    args = ap.parse_args()
    clips = {c.id: c.path for c in load_manifest()}
    prompts = [clips["ljspeech_LJ001-0002"], clips["vctk_p238_165"]]
    with PulseServer() as server, tempfile.TemporaryDirectory() as tmp:
        room = VirtualRoom(server)  # a PulseAudio server of its own, stopped at the end
        config = Path(tmp) / "long.yaml"
        # long replies, so that there is something to interrupt
        config.write_text((ROOT / args.config).read_text().replace(
            "model: smollm2-135m-instruct", "model: smollm2-135m-instruct\n  max_tokens: 64\n"
            "  system_prompt: You are a storyteller. Always answer with a long story."))
        out = Path(tmp) / "out"
        session = room.session(ROOT, out, config)
        try:
            session.wait_for("listening: just speak")
            room.say(prompts[0])
            for i in range(args.times):
                session.wait_for("V2V", count=i + 1, timeout=120)
                time.sleep(0.6)  # the reply is playing: interrupt it
                room.say(prompts[(i + 1) % 2])
            session.wait_for("V2V", count=args.times + 1, timeout=120)
            session.stop()
        finally:
            room.close()
        lines = (out / "timeline.jsonl").read_text().splitlines()
    stops = [json.loads(l).get("barge_in_stop_ms") for l in lines]
    stops = [s for s in stops if s is not None]
    v = percentiles(stops)
    print(f"{len(stops)} barge-ins: playback stopped {v['p50']:.0f} ms (median), "
          f"p90 {v['p90']:.0f} ms, max {v['max']:.0f} ms after the speech start "
          f"was detected; all: {[round(s) for s in stops]}")


if __name__ == "__main__":
    main()
