"""The latency report: where every millisecond of a turn goes, against the 500 ms
voice-to-voice ceiling and Moshi's ~200 ms.

    make report [CONFIG=configs/default.yaml] [ABLATION=1]
    .venv/bin/python -m eval.report --config FILE [--turns 20] [--ablation] [--ablation-turns 10]

Builds a scripted conversation from ../shared/speech clips (natural pauses, each
user turn after the assistant has finished), replays it in real time through the
pipeline, and measures V2V from the true end of the user's speech (from the clip's
own audio, so the endpoint delay counts). With --ablation the same conversation is
replayed with each latency switch off in turn (its first --ablation-turns turns) and
as a naive cascade (all of them), in the same run, and each is reported as a ratio to
the full pipeline on the same turns.

Writes eval/out/report.md, summary.json, turns.jsonl (the matched turns), records.jsonl
(every pipeline turn), waterfall.png, v2v.png.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from eval.corpus import load_manifest
from eval.cpu_quota import SlowCpu
from eval.floor import record as floor_record, render as render_floor, run_floor, \
    summarize as summarize_floor
from eval.pauses import build_items, pauses_benchmark, render as render_pauses
from eval.probe import LEGEND, describe, drift, speed_probe
from eval.quality import VARIANTS as QUALITY_VARIANTS, headline, render as render_quality, run_profile as run_quality, \
    synthesize
from eval.questions import QUESTIONS
from eval.scripted import applicable, run_conversation
from eval.speech_bounds import speech_end
from eval.stats import CEILING_MS, MOSHI_MS, critical_path_table, critical_paths, durations_ms, \
    markdown_table, percentiles, plain, phase_table, span_ms, under_share
from pipeline.audio import read_wav
from pipeline.config import CascadeConfig, load_config

OUT = Path(__file__).resolve().parent / "out"

# Every latency switch, and how to turn it off.
THREADS_SWITCH = "two threads for the LLM's tokens (off: one, and the ASR on one)"
ASR_THREADS_SWITCH = "ASR threads timed at load (asr.cpu_threads: auto; off: two)"
SWITCHES: dict[str, dict[str, dict[str, Any]]] = {
    "adaptive end of turn (off: fixed vad.min_silence_ms)": {"pipeline": {"endpointing": "fixed"}},
    "acoustic end of turn (Smart Turn)": {"pipeline": {"acoustic_eot": False}},
    "semantic end of turn (LLM end-of-turn probability)": {"pipeline": {"semantic_eot": False}},
    "sentence end read without Whisper's final period (off: end-of-turn token after it)":
        {"pipeline": {"eot_sentence_end": False, "eot_complete_logprob": -2.5}},
    "speculative end of turn": {"pipeline": {"speculative": False}},
    # listen-ahead is on in the default profile only; a profile without it (or without
    # vad.relative_drop, off by default) gets no row for it
    "listen-ahead (partial transcripts prefill the LLM during speech)":
        {"pipeline": {"listen_ahead": False}, "asr": {"partials": False}},
    "first-chunk threads (llm.first_chunk_threads: 2 until the first chunk)":
        {"llm": {"first_chunk_threads": None}},
    "reply prompt prefilled with the end-of-turn probability (llm.eot_prefills_reply)":
        {"llm": {"eot_prefills_reply": False}},
    "deferred speculative replies (pipeline.defer_replies)": {"pipeline": {"defer_replies": False}},
    "TTS silence trimmed at chunk edges (pipeline.trim_tts_silence; it shows in first sound)":
        {"pipeline": {"trim_tts_silence": False}},
    "first audio first (pipeline.first_audio_priority: the LLM waits for it)":
        {"pipeline": {"first_audio_priority": False}},
    "audio cache (pipeline.audio_cache_chunks: a short chunk synthesized before is replayed)":
        {"pipeline": {"audio_cache_chunks": 0}},
    "first chunk decoded in pieces (tts.stream_decode: its first 280 ms of audio first)":
        {"tts": {"stream_decode": False}},
    "noise-robust end of speech (vad.relative_drop)": {"vad": {"relative_drop": None}},
    "speculation from the speaker's own level (vad.early_pause_drop)":
        {"vad": {"early_pause_drop": None}},
    "short-window ASR": {"asr": {"short_window": False}},
    "6 s ASR window floor (asr.window_floor_s: 6, a rejected decode retried in 10 s; off: "
    "10 s, as before)": {"asr": {"window_floor_s": 10.0}},
    "incremental transcription (asr.incremental: after an inner pause, the rest only)":
        {"asr": {"incremental": False}},
    "first-clause TTS (clause or max_first_words first chunk)":
        {"pipeline": {"first_clause": False}},
    "three-word first chunk (pipeline.max_first_words: 3; off: 6, as before)":
        {"pipeline": {"max_first_words": 6}},
    "clauses after a short start (pipeline.clause_words: 8; off: 0, the first chunk only)":
        {"pipeline": {"clause_words": 0}},
    "word cut after a short start (pipeline.max_next_words: 8; off: null, punctuation only)":
        {"pipeline": {"max_next_words": None}},
    "streaming TTS (sentence by sentence)": {"pipeline": {"stream_tts": False}},
    "stages running ahead (off: pull-only chain)": {"pipeline": {"run_ahead": False}},
    "KV-cache reuse": {"llm": {"reuse_kv_cache": False}},
    "Q8_0 weights (llm.requantize: llama.cpp's tiled kernels prefill them)":
        {"llm": {"requantize": None}},
    "prompt truncation": {"pipeline": {"truncate_prompt": False}},
    "warm-up": {"pipeline": {"warmup": False}},
    # reply quality (eval.quality measures what they do to the replies; here, their
    # latency): the primer's tokens, the echo guard's per-token check, history shaping
    "reply primer (llm.primer)": {"llm": {"primer": []}},
    "echo guard (llm.echo_guard)": {"llm": {"echo_guard": False}},
    "history shaping (pipeline.history_max_turns)": {"pipeline": {"history_max_turns": None}},
    "reply-quality settings, all (the system prompt of before too)":
        QUALITY_VARIANTS["all four off (as before)"],
    # the ASR's thread count timed at load against a fixed two (the default before)
    ASR_THREADS_SWITCH: {"asr": {"cpu_threads": 2}},
    # two threads for the LLM's tokens (and every stage's, the default from 2026-11-30
    # until the ASR's were timed at load); off: the one-core budget of before, ASR 1
    # thread and token generation 1 (a core left for the TTS while the reply is still
    # being written), prefill and TTS 2
    THREADS_SWITCH: {"asr": {"cpu_threads": 1}, "llm": {"n_threads": 1}},
}


def naive_overrides(config: CascadeConfig) -> dict[str, dict[str, Any]]:
    """The naive cascade: every switch off (wait for the full transcript, then the
    full reply, then synthesize all of it, then play)."""
    merged: dict[str, dict[str, Any]] = {}
    for name, over in SWITCHES.items():
        if name == THREADS_SWITCH:  # a setting, not a technique: the naive cascade
            continue  # keeps the profile's LLM threads, and two for the ASR, as before
        for section, values in applicable(config, over).items():
            merged.setdefault(section, {}).update(values)
    return merged


def already(config: CascadeConfig, overrides: dict[str, dict[str, Any]]) -> bool:
    """The profile already has the switch off (e.g. listen-ahead, off by default)."""
    have = config.to_dict()
    return all(have[section][k] == v for section, values in overrides.items()
               for k, v in values.items())


def apply(config: CascadeConfig, overrides: dict[str, dict[str, Any]]) -> CascadeConfig:
    return config.replace(**overrides) if overrides else config


def pick_clips(n: int, seed: int = 1, max_s: float = 7.0) -> list:
    """``n`` clips (at most ``max_s`` long, like a spoken request) in a seeded order."""
    clips = load_manifest()
    order = [c for c in clips if c.duration_s <= max_s]
    random.Random(seed).shuffle(order)
    chosen = (order * (n // len(order) + 1))[:n]
    return [(c, read_wav(c.path), speech_end(c, clips)) for c in chosen]


def after_vad_end_ms(turn: dict[str, Any]) -> Optional[float]:
    """The VAD's end of speech to playback start (V2V less the VAD's lag)."""
    return span_ms(turn, "user_speech_end", "playback_start")


def asr_threads_line(threads: dict[str, Any]) -> str:
    """The report's line for ``asr.cpu_threads: auto`` (a ThreadChoice record)."""
    def times(ms: dict[str, float]) -> str:
        return ", ".join(f"{v:.0f} ms on {n}" for n, v in ms.items())
    if not threads["encode_ms"]:  # one core: nothing to choose between
        return (f"- ASR threads (asr.cpu_threads: auto): {threads['encoder']} "
                f"(one core: nothing timed)")
    return (f"- ASR threads (asr.cpu_threads: auto, timed at load): encoder "
            f"{threads['encoder']}, decoder {threads['decoder']} (the fixed work's encoder "
            f"{times(threads['encode_ms'])}; its decoder {times(threads['decode_ms'])})")


def summarize(turns: list[dict[str, Any]], phase: str = "V2V") -> dict[str, Any]:
    v2v = percentiles(durations_ms(t)[phase] for t in turns)
    return {"p50": v2v["p50"], "p90": v2v["p90"], "max": v2v["max"]}


AUDIBLE_GAP_MS = 150.0


def sentence_gaps(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Silence between consecutive chunks of each reply: p50/p90 over all gaps, and
    the share of replies of two chunks or more with a gap over AUDIBLE_GAP_MS."""
    gaps = [g for t in turns for g in t.get("sentence_gaps_ms") or []]
    multi = [t for t in turns if t.get("sentence_gaps_ms")]
    p = percentiles(gaps)
    gapped = [t for t in multi if max(t["sentence_gaps_ms"]) > AUDIBLE_GAP_MS]
    return {"sentence_gap_ms": {"p50": p["p50"], "p90": p["p90"], "max": p["max"], "n": p["n"]},
            "gapped_reply_share": len(gapped) / len(multi) if multi else 0.0,
            "multi_chunk_replies": len(multi)}


ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


def machine() -> dict[str, Any]:
    """The CPU, its ISA flags that matter to the models' kernels, and its clock, so that
    figures from different machines are never compared blind."""
    cpu, flags, mhz = "unknown", set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except OSError:
        pass
    import os
    versions = {}
    for pkg in ("faster-whisper", "ctranslate2", "llama_cpp_python", "piper-tts", "onnxruntime",
                "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags], "mhz": mhz,
            "versions": versions}


def plot(turns: list[dict[str, Any]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v2v = [durations_ms(t)["V2V"] for t in turns]
    # waterfall of the typical (median V2V) turn
    typical = turns[int(np.argsort(v2v)[len(v2v) // 2])]
    t0 = typical["speech_end"]
    bars = [("endpoint delay", typical["speech_end"], typical["endpoint"]),
            ("ASR", typical["asr_start"], typical["asr_final"]),
            ("LLM TTFT", typical["asr_final"], typical["llm_first_token"]),
            ("first sentence", typical["llm_first_token"], typical["first_sentence"]),
            ("TTS first audio", typical["first_sentence"], typical["tts_first_audio"]),
            ("wait for endpoint / sink", typical["tts_first_audio"], typical["playback_start"])]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for i, (name, a, b) in enumerate(bars):
        ax.barh(i, (b - a) * 1000, left=(a - t0) * 1000, color=f"C{i}")
        ax.text(max(a, b) * 0 + (b - t0) * 1000 + 5, i, f"{(b - a) * 1000:.0f} ms", va="center",
                fontsize=8)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.axvline(CEILING_MS, color="red", ls="--", label="500 ms ceiling")
    ax.axvline(MOSHI_MS, color="gray", ls=":", label="Moshi ~200 ms")
    ax.axvline((typical["playback_start"] - t0) * 1000, color="black",
               label=f"playback start (V2V {(typical['playback_start'] - t0) * 1000:.0f} ms)")
    ax.set_xlabel("ms after the end of the user's speech")
    ax.set_title(f"A typical turn (median V2V): user turn {typical['user_turn']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "waterfall.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.hist(v2v, bins=min(30, max(5, len(v2v) // 2)), color="C0")
    ax.axvline(CEILING_MS, color="red", ls="--", label="500 ms ceiling")
    ax.axvline(MOSHI_MS, color="gray", ls=":", label="Moshi ~200 ms")
    ax.axvline(float(np.median(v2v)), color="black", label=f"median {np.median(v2v):.0f} ms")
    ax.set_xlabel("voice-to-voice latency (ms)")
    ax.set_ylabel("turns")
    ax.set_title(f"V2V over {len(v2v)} turns; {under_share(turns) * 100:.0f}% under 500 ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "v2v.png", dpi=110)
    plt.close(fig)


def report(config_path: str, turns: int, ablation: bool, ablation_turns: int, seed: int,
           out: Path = OUT, llm_cpu: Optional[float] = None,
           switches: Optional[list[str]] = None, slow: Optional[float] = None,
           pauses: bool = True, pauses_items: Optional[int] = None,
           quality: bool = True, floor: bool = True) -> dict[str, Any]:
    """``switches``: ablate only the switches whose name contains one of these words
    (the naive cascade is then left out, unless one is "naive"); ``llm_cpu``: the LLM
    gets this fraction of one core; ``slow``: every thread gets this fraction of a core,
    an emulated slower CPU (see :mod:`eval.cpu_quota`)."""
    with SlowCpu(slow) if slow else contextlib.nullcontext():
        return _report(config_path, turns, ablation, ablation_turns, seed, out, llm_cpu,
                       switches, slow, pauses, pauses_items, quality, floor)


def _report(config_path: str, turns: int, ablation: bool, ablation_turns: int, seed: int,
            out: Path, llm_cpu: Optional[float], switches: Optional[list[str]],
            slow: Optional[float], pauses: bool = True,
            pauses_items: Optional[int] = None, quality: bool = True,
            floor: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    base = load_config(config_path)
    clips = pick_clips(max(turns, ablation_turns), seed)
    variants: list[tuple[str, dict[str, Any], int]] = [("full pipeline", {}, turns)]
    not_applicable = []
    if ablation:
        for name, over in SWITCHES.items():
            if switches and not any(w in name for w in switches):
                continue
            if applicable(base, over) and already(base, applicable(base, over)):
                not_applicable.append(f"{name} (already off)")
            elif applicable(base, over):
                variants.append((f"without {name}", applicable(base, over), ablation_turns))
            else:
                not_applicable.append(name)
        # the speed-up target is judged on every turn of the conversation, like V2V itself
        if not switches or any(w in "naive cascade" for w in switches):
            variants.append(("naive cascade", naive_overrides(base), turns))
    total = sum(n for _, _, n in variants)
    results: dict[str, Any] = {}
    probes: dict[str, dict[str, float]] = {}  # the machine's speed before each replay
    t_start = time.perf_counter()
    with tqdm(total=total, unit="turn", desc="report", dynamic_ncols=True) as bar:
        for name, over, n in variants:
            bar.set_postfix_str(name)
            probes[name] = speed_probe()
            results[name] = asyncio.run(run_conversation(apply(base, over), clips[:n], seed, bar,
                                                         llm_cpu))
    pauses_result = None
    if pauses:  # the end of turn on utterances with inner pauses, and the fixed silence
        print("pauses benchmark: the configured end of turn, then the fixed silence")
        pauses_result = pauses_benchmark(base, build_items()[:pauses_items] if pauses_items
                                         else None)
    quality_result = None
    if quality:  # what the replies say: the spoken question set, same profile
        print("reply quality: the spoken question set")
        quality_result = run_quality(base, synthesize(
            QUESTIONS[:pauses_items] if pauses_items else QUESTIONS))
    floor_result = None
    if floor:  # the same utterances, each critical-path step alone: what V2V cannot beat
        print("compute floor: the critical path's steps, each alone")
        floor_result = asyncio.run(run_floor(base, turns, seed))
    probes["end"] = speed_probe()
    elapsed = time.perf_counter() - t_start

    full = results["full pipeline"]
    full_turns = full["turns"]
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "config": config_path,
        "llm_cpu_fraction": llm_cpu,
        "cpu_fraction": slow or 1.0,
        "v2v_ms": summarize(full_turns),
        "first_sound_ms": summarize(full_turns, "first sound"),
        "turns": len(full_turns),
        "under_500ms_share": under_share(full_turns),
        "first_turn_v2v_ms": durations_ms(full_turns[0])["V2V"] if full_turns else None,
        "later_turns_v2v_p50_ms": percentiles(durations_ms(t)["V2V"] for t in full_turns[1:])["p50"],
        # the same from the VAD's own end of speech: without the clip's VAD lag (a noisy
        # first clip is heard late by any VAD, warm or not), what warm-up is about
        "first_turn_after_vad_end_ms": after_vad_end_ms(full_turns[0]) if full_turns else None,
        "later_turns_after_vad_end_p50_ms": percentiles(
            after_vad_end_ms(t) for t in full_turns[1:])["p50"],
        "phases_ms": phase_table(full_turns),
        "critical_path_ms": critical_paths(full_turns),
        **sentence_gaps(full_turns),
        "speculation": full["speculation"],
        "asr_paths": full["asr_paths"],
        "asr_threads": full.get("asr_threads"),
        "endpointing": full["counts"],
        "ready_s": full["ready_s"],
        "elapsed_s": elapsed,
        "machine": {**machine(), "speed_probe_ms": probes, "speed_drift": drift(probes)},
    }
    summary["audio_cache"] = audio_cache(full_turns)
    spec = full["speculation"]
    if spec["speculative_started"]:
        summary["speculation"]["hit_rate"] = spec["speculative_committed"] / spec["speculative_started"]
    if ablation:
        rows = {}
        for name, res in results.items():
            if name == "full pipeline":
                continue
            s = summarize(res["turns"])
            # the full pipeline on the same user turns (the first n of the conversation)
            ids = {t["user_turn"] for t in res["turns"]}
            same = [t for t in full_turns if t["user_turn"] in ids]
            ref = summarize(same)
            rows[name] = {"v2v_ms": s, "turns": len(res["turns"]), "full_pipeline_v2v_ms": ref,
                          "first_sound_ms": summarize(res["turns"], "first sound"),
                          "full_pipeline_first_sound_ms": summarize(same, "first sound"),
                          "ratio_p50": s["p50"] / ref["p50"] if s["p50"] and ref["p50"] else None,
                          "speed_probe_ms": probes.get(name),
                          "first_turn_v2v_ms": durations_ms(res["turns"][0])["V2V"]
                          if res["turns"] else None, **sentence_gaps(res["turns"])}
        n_ref = min(ablation_turns, len(full_turns))
        summary["ablation_reference"] = {"v2v_ms": summarize(full_turns[:n_ref]), "turns": n_ref,
                                         "first_sound_ms": summarize(full_turns[:n_ref],
                                                                     "first sound")}
        summary["ablation"] = rows
        summary["ablation_not_applicable"] = not_applicable
    naive = summary.get("ablation", {}).get("naive cascade")
    if naive is not None:
        summary["naive_v2v_ms"] = {"p50": naive["v2v_ms"]["p50"], "p90": naive["v2v_ms"]["p90"],
                                   "turns": naive["turns"]}
        summary["speedup_vs_naive_p50"] = naive["ratio_p50"]
    else:
        summary["naive_v2v_ms"] = {"p50": None, "p90": None}
        summary["speedup_vs_naive_p50"] = None

    if floor_result is not None:
        summary["floor_ms"] = summarize_floor(floor_result["rows"])
        f50, v50 = summary["floor_ms"]["floor"]["p50"], summary["v2v_ms"]["p50"]
        summary["v2v_over_floor_p50"] = v50 / f50 if f50 and v50 else None
        (out / "floor.json").write_text(json.dumps(floor_record(
            config_path, base, slow, floor_result, summary["floor_ms"]), indent=2,
            default=plain))
    if quality_result is not None:
        summary["quality"] = headline(quality_result)
        (out / "quality.json").write_text(json.dumps(
            {"questions": quality_result["questions"], "runs": {config_path: quality_result}},
            indent=2, default=plain))
    if pauses_result is not None:
        summary["pauses"] = {k: v for k, v in pauses_result.items() if k != "detail"}
        (out / "pauses.json").write_text(json.dumps(pauses_result, indent=2, default=plain))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=plain))
    with open(out / "turns.jsonl", "w") as f:
        for name, res in results.items():
            for t in res["turns"]:
                f.write(json.dumps({"variant": name, **t}, default=plain) + "\n")
    # every pipeline turn, those no user turn was matched with too (a premature
    # endpoint's, reopened or interrupted; a backchannel's; echo): to trace them
    with open(out / "records.jsonl", "w") as f:
        for name, res in results.items():
            for r in res.get("records", []):
                f.write(json.dumps({"variant": name, **r}, default=plain) + "\n")
    if full_turns:
        plot(full_turns, out)
    md = render_markdown(summary, base, full_turns, pauses_result, quality_result)
    (out / "report.md").write_text(md)
    return summary


def _drift_note(spread: Optional[float], warn: float = 0.2) -> str:
    """What the probes' spread means for comparing rows (the probe itself varies by up
    to ~15% back to back: eval/probe.py)."""
    if spread is None:
        return ""
    if spread < warn:
        return f"The machine's speed held within {spread:.0%} during the run."
    return (f"**The machine's speed changed by up to {spread:.0%} during the run**: a ratio "
            "between rows within that much may be the machine's, not the switch's.")


def audio_cache(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """How many replies' first chunk came from the audio cache
    (pipeline.audio_cache_chunks), and the TTS's time to first audio either way (p50)."""
    out: dict[str, Any] = {}
    for name, cached in (("cached", True), ("synthesized", False)):
        these = [t for t in turns if t.get("first_audio_cached") is cached]
        out[f"first_chunks_{name}"] = len(these)
        out[f"tts_first_audio_{name}_p50_ms"] = percentiles(
            durations_ms(t)["TTS first audio"] for t in these)["p50"]
    return out


def _ms(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.0f}"


def render_markdown(summary: dict[str, Any], config: CascadeConfig,
                    turns: list[dict[str, Any]], pauses: Optional[dict[str, Any]] = None,
                    quality: Optional[dict[str, Any]] = None) -> str:
    v = summary["v2v_ms"]
    spec = summary["speculation"]
    lines = [
        "# Cascade latency report", "",
        f"Config: `{summary['config']}`; {summary['turns']} user turns replayed in real time; "
        f"V2V p50 **{_ms(v['p50'])} ms**, p90 {_ms(v['p90'])} ms, max {_ms(v['max'])} ms "
        f"(first sound p50 {_ms(summary['first_sound_ms']['p50'])} ms); "
        f"{summary['under_500ms_share'] * 100:.0f}% of turns under 500 ms."
        + (f" The LLM had {summary['llm_cpu_fraction']:g} of one core (a slower LLM)."
           if summary["llm_cpu_fraction"] else "")
        + (f" Emulated slower CPU: every thread at {summary['cpu_fraction']:g} of a core."
           if summary["cpu_fraction"] != 1.0 else ""), "",
        "V2V runs from the true end of the user's speech (measured from the clip's audio) to "
        "the first reply sample reaching the output (first sound: to its first audible "
        "sample, past the silence the voice starts a chunk with); each phase row is that "
        "stage's own "
        "duration (the ASR from when it got the audio, which is at the first pause when the "
        "turn is speculative).", "",
        markdown_table(turns), "",
        *(["Where the time goes, by end-of-turn verdict (turns in brackets): V2V cut into "
           "consecutive steps, from the true end of speech to the first reply sample output "
           "(each a p50 of its own, so they need not add up to the V2V p50). The silence a "
           "verdict other than \"complete\" asks for is waited before the reply starts "
           "when the reply was deferred, else at the gate (\"endpoint wait\"); \"pause "
           "heard\" holds the whole silence for a turn started at the endpoint.", "",
           critical_path_table(summary["critical_path_ms"]), ""]
          if summary.get("critical_path_ms") else []),
        f"- Time to ready (load + warm-up): {summary['ready_s']:.2f} s",
        f"- First turn V2V: {_ms(summary['first_turn_v2v_ms'])} ms; later turns p50: "
        f"{_ms(summary['later_turns_v2v_p50_ms'])} ms; from the VAD's end of speech (without "
        f"the clip's VAD lag): first turn {_ms(summary['first_turn_after_vad_end_ms'])} ms, "
        f"later turns p50 {_ms(summary['later_turns_after_vad_end_p50_ms'])} ms",
        f"- Speculative end of turn: {spec['speculative_started']} started, "
        f"{spec['speculative_committed']} committed, {spec['speculative_discarded']} discarded "
        f"(hit rate {spec.get('hit_rate', 0) * 100:.0f}%, "
        f"{spec['speculative_wasted_s']:.2f} s of compute thrown away, of which "
        f"{spec.get('speculative_reply_wasted_s', 0):.2f} s of replies (LLM, TTS); "
        f"{spec.get('deferred_replies', 0)} replies deferred by a long verdict, "
        f"{spec.get('deferred_discarded', 0)} of them never computed; "
        f"{spec.get('speculative_provisional', 0)} started at a provisional pause, "
        f"{spec.get('provisional_heard_again', 0)} heard again on the confirmed audio; "
        f"{spec.get('words_stalled', 0)} utterances ended by their words stopping, "
        f"pipeline.words_stall_s)",
        *([f"- Audio cache (pipeline.audio_cache_chunks): the first chunk of "
           f"{summary['audio_cache']['first_chunks_cached']} replies replayed, of "
           f"{summary['audio_cache']['first_chunks_synthesized']} synthesized; TTS first "
           f"audio p50 {_ms(summary['audio_cache']['tts_first_audio_cached_p50_ms'])} ms "
           f"against {_ms(summary['audio_cache']['tts_first_audio_synthesized_p50_ms'])} ms"]
          if summary.get("audio_cache") and config.pipeline.audio_cache_chunks else []),
        f"- Gap between consecutive sentences' audio: p50 {_ms(summary['sentence_gap_ms']['p50'])} ms, "
        f"p90 {_ms(summary['sentence_gap_ms']['p90'])} ms over {summary['sentence_gap_ms']['n']} "
        f"gaps; replies with an audible gap (over {AUDIBLE_GAP_MS:.0f} ms): "
        f"{summary['gapped_reply_share'] * 100:.0f}% of {summary['multi_chunk_replies']}",
        f"- ASR paths: {summary['asr_paths']}",
        *([asr_threads_line(summary["asr_threads"])] if summary.get("asr_threads") else []),
        f"- Endpointing: {summary['endpointing']['premature_endpoints']} premature endpoints "
        f"(a pause inside an utterance taken for its end), "
        f"{summary['endpointing']['missed_turns']} user turns not answered",
    ]
    if summary.get("ablation"):
        ref = summary["ablation_reference"]
        naive = summary["ablation"].get("naive cascade")
        lines += ["", "## Ablation", "",
                  f"Each switch off in turn, same conversation (its first {ref['turns']} turns"
                  + (f"; the naive cascade: all {naive['turns']}" if naive else "")
                  + "), same run. Ratio = variant V2V p50 / "
                  "full pipeline V2V p50 on the same turns (shown as 'full p50').", "",
                  "| variant | turns | V2V p50 ms | V2V p90 ms | first turn ms | full p50 ms "
                  "| ratio p50 | sentence gap p90 ms | first sound p50 ms (full) "
                  "| CPU probe ms |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| full pipeline | {ref['turns']} | {_ms(ref['v2v_ms']['p50'])} | "
                  f"{_ms(ref['v2v_ms']['p90'])} | {_ms(summary['first_turn_v2v_ms'])} | "
                  f"{_ms(ref['v2v_ms']['p50'])} | 1.00 | "
                  f"{_ms(sentence_gaps(turns[:ref['turns']])['sentence_gap_ms']['p90'])} | "
                  f"{_ms(ref['first_sound_ms']['p50'])} | "
                  f"{describe(summary['machine']['speed_probe_ms']['full pipeline'])} |"]
        for name, row in summary["ablation"].items():
            r = row["ratio_p50"]
            lines.append(f"| {name} | {row['turns']} | {_ms(row['v2v_ms']['p50'])} | "
                         f"{_ms(row['v2v_ms']['p90'])} | {_ms(row['first_turn_v2v_ms'])} | "
                         f"{_ms(row['full_pipeline_v2v_ms']['p50'])} | "
                         f"{'—' if r is None else f'{r:.2f}'} | "
                         f"{_ms(row['sentence_gap_ms']['p90'])} | "
                         f"{_ms(row['first_sound_ms']['p50'])} "
                         f"({_ms(row['full_pipeline_first_sound_ms']['p50'])}) | "
                         f"{describe(row['speed_probe_ms'])} |")
        lines += ["", "CPU probe: the machine's speed just before the row's replay "
                  f"(eval/probe.py: {LEGEND}; lower is faster). "
                  + _drift_note(summary["machine"]["speed_drift"])]
        if naive:
            lines += ["", f"Speed-up over the naive cascade at p50 ({naive['turns']} turns): "
                          f"**{summary['speedup_vs_naive_p50']:.1f}×**"]
        if summary["ablation_not_applicable"]:
            lines += ["", "Not ablated (no such key in this profile, or already off): "
                      + ", ".join(summary["ablation_not_applicable"]) + "."]
    if summary.get("floor_ms"):
        fl = summary["floor_ms"]
        lines += ["", "## Compute floor", "",
                  f"The same {fl['turns']} utterances, the four steps a reply waits for timed "
                  "each alone, nothing else running (eval/floor.py): their sum plus "
                  f"vad.pause_ms ({config.vad.pause_ms} ms) is the V2V a perfect orchestration "
                  "of these models would reach on this machine.", "",
                  render_floor(fl, config.vad.pause_ms, summary["cpu_fraction"]
                               if summary["cpu_fraction"] != 1.0 else None), "",
                  f"V2V p50 / floor p50: {summary['v2v_over_floor_p50']:.2f}x "
                  "(the rest is the steps sharing two cores with each other and with the VAD, "
                  "Smart Turn and listen-ahead, and the end-of-turn silences)."
                  if summary.get("v2v_over_floor_p50") else ""]
    if pauses is not None:
        lines += ["", "## Pauses: end of turn on utterances with inner pauses", "",
                  f"{pauses['detail']['adaptive']['utterances']} utterances from the corpus "
                  "(split at a word boundary with 300/500/800/1200 ms of silence inserted, long "
                  "sentences with their own pauses, short answers), spoken in real time, with "
                  "this profile's end of turn and with the fixed silence, same run. Premature: a "
                  "reply started while the user had more to say; split: two turns of one "
                  "utterance reached the history; late: V2V over 1 s.", "",
                  render_pauses(pauses)]
    if quality is not None:
        lines += ["", "## Reply quality", "",
                  f"{quality['questions']} spoken questions and statements (eval/questions.py, "
                  "spoken by the bundled Piper voice), one conversation through the whole "
                  "pipeline; every reply is in quality.json (`make quality` compares profiles).",
                  "", render_quality({"runs": {summary["config"]: quality}}).split("\n###")[0]]
    m = summary["machine"]
    lines += ["", "## Machine and versions", "",
              f"{m['cpu']}, {m['cores']} cores, {m['mhz']} MHz, ISA: {', '.join(m['isa'])}; "
              f"{m['platform']}; Python {m['python']}",
              "", ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
              "", f"CPU probe (eval/probe.py: {LEGEND}, before each replay and at the end): "
              + ", ".join(f"{k} {describe(v)}" for k, v in m["speed_probe_ms"].items())
              + ". " + _drift_note(m["speed_drift"]),
              "", f"Run time: {summary['elapsed_s']:.0f} s.",
              "", "## Config used", "", "```yaml",
              yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip(), "```",
              "", "![waterfall](waterfall.png)", "", "![V2V distribution](v2v.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--ablation-turns", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--switches", nargs="+", metavar="WORD",
                    help="ablate only the switches whose name contains one of these words "
                    "(e.g. ahead); the naive cascade is then left out, unless a word is "
                    "naive")
    ap.add_argument("--slow", type=float, metavar="FRACTION",
                    help="emulate a slower CPU: every thread gets this fraction of a core "
                    "(cgroup v1 CPU quotas); eval.bench_asr --slow shows the slow-down it gives")
    ap.add_argument("--llm-cpu", type=float, metavar="FRACTION",
                    help="give the LLM only this fraction of one core (cgroup v1 CPU quota on "
                    "its thread): a slower LLM, e.g. to measure the gap between sentences")
    ap.add_argument("--no-pauses", action="store_true", help="leave out the pauses benchmark")
    ap.add_argument("--pauses-items", type=int, metavar="N",
                    help="only the first N utterances of the pauses set, and the first N "
                    "questions of the reply-quality set (a quick check)")
    ap.add_argument("--no-quality", action="store_true",
                    help="leave out the reply-quality question set")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the compute floor (eval/floor.py)")
    args = ap.parse_args()
    report(args.config, args.turns, args.ablation, args.ablation_turns, args.seed, args.out,
           llm_cpu=args.llm_cpu, switches=args.switches, slow=args.slow,
           pauses=not args.no_pauses, pauses_items=args.pauses_items,
           quality=not args.no_quality, floor=not args.no_floor)
    print((args.out / "report.md").read_text().split("## Machine")[0])
    print(f"wrote {args.out}/report.md, summary.json, turns.jsonl, records.jsonl, waterfall.png, "
          "v2v.png")


if __name__ == "__main__":
    main()
