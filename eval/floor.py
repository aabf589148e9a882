"""The compute floor: what a turn's critical path costs when every step runs alone.

    .venv/bin/python -m eval.floor [--config configs/default.yaml] [--turns 20]
                                   [--slow FRACTION]

A cascade answers only after four steps that each need the one before: the ASR's final
transcript, the LLM's read of it (the end-of-turn verdict, whose batch is the reply's
prefill), the reply's first chunk of words, and the TTS's first audio of that chunk.
The pipeline can hide everything else (listen-ahead, prefill-ahead, run-ahead), not
these. This benchmark takes the latency report's utterances, in the same order, as one
conversation (the history grows with the replies, as in a session), and times each of
the four steps with the models alone on the machine, one after the other, nothing else
running. Their sum, plus the VAD's ``pause_ms`` (the silence heard before any of it
starts), is the V2V that a perfect orchestration of these models would reach on this
machine: the floor. A transcript that trails off ("and we...") gets no verdict, as in the
pipeline: the reply's first chunk then holds its whole prefill.

What runs off the critical path in a session runs here too, untimed: the prefill of
the next prompt's prefix, and listen-ahead's prefill of a partial transcript (the
utterance up to ``pipeline.listen_ahead_ms`` before its end, less its last word, as the
orchestrator does), when the profile has them. The audio cache is not used: every first
chunk is synthesized (a repeated opener would cost ~0 ms of TTS).

Prints each step's p50 / p90 and the floor's, against the targets, and writes
eval/out/floor.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any, Optional

from eval.cpu_quota import SlowCpu
from eval.probe import LEGEND, describe, speed_probe
from eval.stats import percentiles
from pipeline.audio import PIPELINE_RATE
from pipeline.config import CascadeConfig, load_config
from pipeline.conversation import Conversation
from pipeline.endpoint import unfinished_text
from pipeline.events import LLMRequest
from pipeline.reply import ReplyChain
from pipeline.stages import build_stages, start_stages

OUT = Path(__file__).resolve().parent / "out"
STEPS = ("asr_final", "eot_verdict", "first_chunk", "tts_first_audio")
# V2V targets (issue 11 at full speed, issue 12 on a CPU 2.5x slower)
TARGETS = {"full": {"p50": 250, "p90": 400}, "slow": {"p50": 450, "p90": 650}}


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def _first_chunk(llm, splitter, messages) -> tuple[str, float, str]:
    """The reply's first chunk as the splitter cuts it, the ms it took, and the whole
    reply (the rest is generated untimed, for the history)."""
    splitter.reset()
    t0 = time.perf_counter()
    first, first_ms, text = None, None, ""
    async for delta in llm.generate(LLMRequest(0, 0.0, messages=messages)):
        text += delta.text
        if first is None:
            for chunk in splitter.feed(delta.text):
                first, first_ms = chunk, _ms(t0)
                break
    if first is None:  # a reply shorter than any cut: its end makes the chunk
        first = next(iter(splitter.flush()), text.strip())
        first_ms = _ms(t0)
    return first, first_ms, text.strip()


async def run_floor(config: CascadeConfig, turns: int, seed: int = 1) -> dict[str, Any]:
    from eval.report import pick_clips  # the report runs this benchmark too

    pc = config.pipeline
    stages = build_stages(config)
    await start_stages(stages.all())
    for stage in stages.all():  # as a session does: the first turn is not a cold start
        await stage.warmup()
    asr, llm, tts = stages.asr, stages.llm, stages.tts
    conv = Conversation(llm, pc.history_token_budget if pc.truncate_prompt else None,
                        max_turns=pc.history_max_turns)
    splitter = ReplyChain(llm, tts, pc).splitter()
    # as the orchestrator and pipeline/endpoint.py decide it
    semantic = (pc.endpointing == "adaptive" and pc.speculative and pc.semantic_eot
                and hasattr(llm, "end_of_turn_logprob"))
    listen_ahead = (pc.listen_ahead and hasattr(llm, "prefill_user")
                    and getattr(asr, "has_partials", False))
    rows = []
    try:
        for clip, audio, end_s in pick_clips(turns, seed):
            heard = audio[:int((end_s + config.vad.pause_ms / 1000) * PIPELINE_RATE)]
            # off the critical path: the prefix, then listen-ahead's partial
            await llm.worker.call(llm.prefill, conv.window.prefix(
                conv.system(conv.language), conv.history, llm.count_tokens))
            if listen_ahead:
                cut = int(max(0.0, end_s - pc.listen_ahead_ms / 1000) * PIPELINE_RATE)
                partial = await asr.partial(audio[:cut]) if cut else ""
                words = (partial or "").split()[:-1]
                if words:
                    await llm.worker.call(llm.prefill_user, await conv.prompt(
                        " ".join(words), conv.language))
            row: dict[str, Any] = {"clip": clip.id}
            t0 = time.perf_counter()
            text, language = await asr.worker.call(asr.transcribe, heard)
            row["asr_final"] = _ms(t0)
            row["user_text"] = text
            if not text:
                row["skipped"] = "no words heard"
                rows.append(row)
                continue
            messages = await conv.prompt(text, language)
            if semantic and not unfinished_text(text):  # else the reply prefills it all
                sentence_end = (pc.eot_sentence_end
                                and len(text.split()) >= pc.eot_sentence_min_words)
                t0 = time.perf_counter()
                await llm.worker.call(llm.end_of_turn_logprob, messages, sentence_end)
                row["eot_verdict"] = _ms(t0)
            else:
                row["eot_verdict"] = 0.0
            first, row["first_chunk"], reply = await _first_chunk(llm, splitter, messages)
            t0 = time.perf_counter()
            await tts.worker.call(lambda: next(iter(tts.pieces(first, True)), None))
            row["tts_first_audio"] = _ms(t0)
            row.update(first_text=first, reply=reply)
            row["floor"] = config.vad.pause_ms + sum(row[s] for s in STEPS)
            rows.append(row)
            conv.record(text, reply, language, interrupted=False)
    finally:
        for stage in stages.all():
            await stage.aclose()
    return {"rows": rows, "listen_ahead": listen_ahead, "semantic_eot": semantic}


def record(config_path: str, config: CascadeConfig, slow: Optional[float],
           result: dict[str, Any], summary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What floor.json holds (this module's main and the report write it)."""
    return {"config": config_path, "cpu_fraction": slow or 1.0,
            "pause_ms": config.vad.pause_ms, "listen_ahead": result["listen_ahead"],
            "semantic_eot": result["semantic_eot"], **extra, "summary": summary,
            "rows": result["rows"]}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if "floor" in r]
    out = {}
    for key in (*STEPS, "floor"):
        spread = percentiles([r[key] for r in done])
        out[key] = {"p50": round(spread["p50"], 1), "p90": round(spread["p90"], 1)}
    out["turns"] = len(done)
    return out


def render(summary: dict[str, Any], pause_ms: int, slow: Optional[float]) -> str:
    """The floor as a markdown table, against the V2V target for this CPU speed."""
    target = TARGETS["slow" if slow else "full"]
    names = {"asr_final": "ASR final", "eot_verdict": "LLM end-of-turn verdict (the prefill)",
             "first_chunk": "LLM first chunk", "tts_first_audio": "TTS first audio",
             "floor": "**floor** (the sum per turn)"}
    lines = ["| step | p50 ms | p90 ms |", "|---|---:|---:|",
             f"| pause heard (vad.pause_ms) | {pause_ms} | {pause_ms} |"]
    for key in (*STEPS, "floor"):
        lines.append(f"| {names[key]} | {summary[key]['p50']:.0f} | {summary[key]['p90']:.0f} |")
    f50, f90 = summary["floor"]["p50"], summary["floor"]["p90"]
    lines += ["", f"{summary['turns']} turns, cpu_fraction {slow or 1.0}. The V2V target "
              f"here, p50 <= {target['p50']} / p90 <= {target['p90']} ms: the floor is "
              f"{f50 / target['p50']:.2f}x / {f90 / target['p90']:.2f}x of it."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slow", type=float, metavar="FRACTION",
                    help="emulate a CPU this fraction as fast (see eval.cpu_quota)")
    args = ap.parse_args()
    from eval.report import machine

    config = load_config(args.config)
    with SlowCpu(args.slow) if args.slow else contextlib.nullcontext():
        before = speed_probe()
        result = asyncio.run(run_floor(config, args.turns, args.seed))
        after = speed_probe()
    summary = summarize(result["rows"])
    print(render(summary, config.vad.pause_ms, args.slow))
    print(f"  machine speed before / after ({LEGEND}): {describe(before)} / {describe(after)}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "floor.json").write_text(json.dumps(record(
        args.config, config, args.slow, result, summary, machine=machine(),
        probes={"before": before, "after": after}), indent=1, default=float))
    print(f"wrote {OUT / 'floor.json'}")


if __name__ == "__main__":
    main()
