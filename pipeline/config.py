"""YAML configuration loaded into strict pydantic models.

Layout of a config file::

    vad:      {backend: silero, ...}
    asr:      {backend: faster_whisper, ...}
    llm:      {backend: llama_cpp, ...}
    tts:      {backend: piper, ...}
    pipeline: {...}            # orchestration and latency switches
    audio:    {...}            # live devices (used by `make run`)
    server:   {...}            # the Realtime WebSocket server (used by `make serve`)

Every default lives once, in the pydantic models (here and in each backend's
module); ``python -m pipeline config --config FILE`` prints the effective values.
Everything is checked here, before any model loads: unknown keys, unknown
backends, wrong types and missing model files all raise :class:`ConfigError`
naming the YAML key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import registry
from .errors import ConfigError


class Strict(BaseModel):
    """Base for every config model: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PipelineSettings(Strict):
    """Orchestration and latency switches (the `pipeline:` section)."""

    history_token_budget: int = Field(
        640, ge=64,
        description="Prompt truncation: most tokens (counted with the LLM's own tokenizer) "
        "for system prompt + history + new user message; oldest whole turns are dropped first.")
    history_max_turns: Optional[int] = Field(
        None, ge=0, description="History shaping: most whole turns (a user message and its "
        "reply) kept in the prompt, whatever their tokens; null: as many as the budget holds. "
        "A small model copies its own earlier replies into new ones: a short memory keeps "
        "it on the new question.")
    truncate_prompt: bool = Field(
        True, description="Apply history_token_budget (off: the whole history is sent).")
    stream_tts: bool = Field(
        True, description="Start TTS at the first finished sentence while the LLM is still "
        "writing (off: wait for the whole reply, then synthesize it).")
    run_ahead: bool = Field(
        True, description="Each stage of the reply runs in its own task, ahead of the next: "
        "the LLM writes the next sentence while the TTS synthesizes this one, and the TTS "
        "synthesizes the next while this one plays (off: a stage works only when the next "
        "asks).")
    sentences_ahead: int = Field(
        1, ge=1, description="run_ahead: most finished sentences the LLM may be ahead of the "
        "TTS. One is enough to keep the TTS fed; deeper, the LLM and the TTS saturate both "
        "cores as playback starts, and a barge-in over the reply is heard later.")
    chunks_ahead: int = Field(
        1, ge=1, description="run_ahead: most synthesized chunks the TTS may be ahead of playback.")
    first_clause: bool = Field(
        True, description="The first chunk of a reply may end at a clause (comma, dash, "
        "colon, semicolon) so that speech starts sooner; later chunks are whole sentences "
        "(but see clause_words).")
    min_clause_words: int = Field(
        3, ge=1, description="Fewest words in a chunk that ends at a clause.")
    clause_words: int = Field(
        8, ge=0, description="first_clause: later chunks may end at a clause too while the "
        "reply's chunks so far hold fewer than this many words. A short first chunk "
        "(\"I'm glad!\") is heard in under a second, and a long second sentence written "
        "whole was not ready by then on a 2.5x slower CPU (a 200-550 ms gap); its first "
        "clause is. 0: only the first chunk, as before the fourteenth session.")
    max_next_words: Optional[int] = Field(
        8, ge=2, description="first_clause: while the reply's chunks so far hold fewer than "
        "clause_words words, a later chunk with no punctuation after this many words is cut "
        "at the word boundary too. After a short first chunk (\"The word 'amiable'\"), a "
        "long sentence with no comma was written and synthesized whole, and was not ready "
        "when the first chunk had played on a 2.5x slower CPU (gaps of 200-1600 ms, "
        "fifteenth session). null: wait for punctuation, as before.")
    max_first_words: Optional[int] = Field(
        3, ge=2, description="First chunk cap: with no punctuation after this many words, "
        "the first chunk is cut at the word boundary (null: wait for punctuation). Three "
        "words: the LLM writes fewer tokens before the first audio than with four (first "
        "sentence 49 against 81 ms at p50 here, 151 against 192 ms on a 2.5x slower CPU) "
        "and four than with six; with trim_tts_silence the cut is followed by "
        "pause_after_cut_ms, not the voice's own end-of-utterance silence.")
    first_audio_priority: bool = Field(
        True, description="From the end of a reply's first chunk until its audio is out, "
        "the LLM pauses: the TTS has the CPU to itself for the first audio; the LLM writes "
        "the rest while that audio plays.")
    audio_cache_chunks: int = Field(
        64, ge=0, description="Keep the audio of this many short chunks (the newest) and "
        "replay a chunk whose exact text was synthesized before, its TTS skipped: a reply's "
        "first chunk is on the critical path, and a small LLM opens its replies the same "
        "few ways (\"I'm glad!\", \"That's a great\"). Only audio this session made; 0 = off.")
    audio_cache_max_words: int = Field(
        4, ge=1, description="audio_cache_chunks: only chunks of at most this many words "
        "are kept (first chunks are three words, or a short clause).")
    trim_tts_silence: bool = Field(
        True, description="TTS voices pad each chunk with silence (Piper: 40-60 ms before, "
        "140-230 ms after), so a reply's first sound comes that much after its first sample "
        "and a first chunk cut mid-phrase is followed by a hole: keep chunk_lead_ms before "
        "each chunk's first audible sample and, after its last, the pause its end calls for "
        "(pause_after_sentence_ms, _clause_ms, _cut_ms). Trimming only shortens.")
    chunk_lead_ms: int = Field(
        10, ge=0, description="trim_tts_silence: silence kept before a chunk's first sound.")
    pause_after_sentence_ms: int = Field(
        200, ge=0, description="trim_tts_silence: most silence kept after a chunk that ends "
        "a sentence (. ! ?).")
    pause_after_clause_ms: int = Field(
        100, ge=0, description="trim_tts_silence: most silence kept after a chunk that ends "
        "at a clause (, ; : -).")
    pause_after_cut_ms: int = Field(
        20, ge=0, description="trim_tts_silence: most silence kept after a first chunk cut "
        "between two words (max_first_words).")
    tts_silence_db: float = Field(
        -50.0, le=0, description="Level (dBFS) under which the TTS output counts as silence: "
        "for trim_tts_silence, and for the first sound the report measures.")
    speculative: bool = Field(
        True, description="Speculative end of turn: start ASR, then the LLM and TTS, as soon as "
        "silence begins (vad.pause_ms); play when the endpoint is confirmed, discard the work "
        "if speech resumes.")
    listen_ahead: bool = Field(
        False, description="While the user speaks, transcribe the utterance so far every "
        "listen_ahead_ms (on a decoder replica of its own: needs asr.partials) and prefill the "
        "LLM with the prompt it gives, less its last word: at the pause only the message's "
        "tail is left to prefill. At a pause, a partial decode still in its encoder skips its "
        "decoder, so the final transcript waits less for the CPU. Skipped while a reply is "
        "being computed. Off unless a profile asks; on in configs/default.yaml since the "
        "eighth session (README), where the live tests passed with it.")
    listen_ahead_ms: int = Field(
        640, ge=160, description="listen_ahead: audio between two partial transcripts.")
    words_stall_s: Optional[float] = Field(
        2.5, gt=0, description="listen_ahead: the end of speech in a noisy room, where the VAD "
        "hears the noise (babble, a cafe) as speech and never hears the end: once the partial "
        "transcripts have gained at most one word over this much speech, the utterance ends "
        "where its words stopped (one listen_ahead_ms after the partial that showed the last "
        "one) and is answered. On the corpus no utterance gains fewer than two words over "
        "2.5 s of speech; over 1.9 s two do (a partial that lags). null: off (such an "
        "utterance then runs to vad.max_utterance_s).")
    endpointing: Literal["adaptive", "fixed"] = Field(
        "adaptive", description="fixed: the turn ends after vad.min_silence_ms of silence. "
        "adaptive (needs speculative): at each pause the speculative turn's audio (Smart Turn) "
        "and transcript (the LLM's end-of-turn probability) decide how much silence ends the "
        "turn, from complete_silence_ms to max_silence_ms; if the user goes on after an early "
        "endpoint, the reply is cut and the utterance is answered once, whole.")
    complete_silence_ms: int = Field(
        128, ge=32, description="adaptive: silence that ends an utterance judged complete.")
    unsure_silence_ms: int = Field(
        480, ge=32, description="adaptive: silence that ends an utterance when the two signals "
        "disagree (one says complete, the other not).")
    max_silence_ms: int = Field(
        1100, ge=64, description="adaptive: silence that ends an utterance judged unfinished; "
        "the VAD closes the utterance here, so speech resuming within it is the same turn.")
    defer_replies: bool = Field(
        True, description="adaptive: a speculative turn whose verdict asks for a long silence "
        "starts its reply (LLM, TTS) only when the silence left is about what the reply takes "
        "to compute (the slowest of the last 10 turns, +20%), not at once: work for a user "
        "who goes on is not done, and does not slow the next pause's ASR.")
    acoustic_eot: bool = Field(
        True, description="adaptive: use Smart Turn v3.2 (how the user sounds).")
    smart_turn_complete: float = Field(
        0.5, gt=0, lt=1, description="Smart Turn probability at or above which the utterance "
        "sounds complete.")
    smart_turn_model: Optional[str] = Field(
        None, description="Path to a Smart Turn v3 ONNX model; null = the copy in the "
        "pipecat-ai wheel (pip install --no-deps pipecat-ai==1.14.0).")
    semantic_eot: bool = Field(
        True, description="adaptive: use the LLM's probability that the user's message ends "
        "there (llama_cpp backend only; computed on the prompt the reply prefills anyway).")
    eot_sentence_end: bool = Field(
        True, description="adaptive: read the transcript without its final punctuation "
        "(Whisper ends fragments with a period too) and take the probability of a sentence "
        "end there (\".\", \"?\", \"!\" or the end-of-turn token); off: the end-of-turn "
        "token's alone, after the punctuated text.")
    eot_sentence_min_words: int = Field(
        4, ge=1, description="eot_sentence_end applies to transcripts of at least this many "
        "words. Shorter answers (\"No.\", \"Five.\", \"Ten of clubs.\") are elliptical, not "
        "sentences: the LLM expects them to go on (\"No, thanks\"), so they are read by the "
        "end-of-turn token after the punctuated text.")
    eot_complete_logprob: float = Field(
        -2.5, le=0, description="Log-probability of the end of the user's message (see "
        "eot_sentence_end) at or above which the transcript reads complete.")
    resume_false_interruptions: bool = Field(
        True, description="When the user's speech stops the reply but the ASR finds no words, "
        "or only a backchannel (see backchannels), the reply resumes from the start of the "
        "chunk that was cut instead of being lost; with words, it ends as interrupted.")
    ignore_own_words: bool = Field(
        True, description="When the speech that stopped the reply has words, but they are "
        "the reply's own (two or more, and half of them, in order, from what the speaker was "
        "playing then), it was the assistant's echo that got past the echo canceller: the "
        "turn is logged as echo, not added to the history, and the reply resumes (with "
        "resume_false_interruptions).")
    backchannels: list[str] = Field(
        default_factory=lambda: ["mm", "mhm", "mmhmm", "mm-hmm", "hmm", "uh-huh", "uh huh",
                                 "uh", "um", "ah", "oh", "yeah", "yep", "right", "okay", "ok",
                                 "i see", "sure"],
        description="What a listener says while listening (compared without case and "
        "punctuation), alone or one after another (\"yeah, yeah\", \"oh, okay\"): it does "
        "not take the turn.")
    warmup: bool = Field(
        True, description="Run one tiny request through every stage at start, so the first "
        "turn is as fast as the later ones.")
    turn_timeout_s: float = Field(
        30.0, gt=0, description="Hard limit for one turn's work (ASR+LLM+TTS); past it the "
        "turn is cancelled with an error and the session goes on.")


class AudioSettings(Strict):
    """Live audio devices and echo handling (the `audio:` section), used by `make run`."""

    input_device: Optional[Union[int, str]] = Field(
        None, description="Microphone: index or (part of) name; null = system default.")
    output_device: Optional[Union[int, str]] = Field(
        None, description="Speaker: index or (part of) name; null = system default.")
    echo: Literal["aec", "half_duplex", "off"] = Field(
        "aec", description="How the assistant avoids hearing itself: aec = Speex echo "
        "cancellation with the played signal as reference, plus a gate on echo-dominated "
        "frames; half_duplex = while it speaks, only loud, clear speech interrupts; off.")
    aec_tail_ms: int = Field(400, ge=50, le=1000, description="Longest echo path the canceller "
                             "models (speaker-to-microphone delay plus device buffers).")
    aec_gate: float = Field(0.5, ge=0, le=1, description="A frame whose echo-cancelled level is "
                            "below this fraction of the recent speaker level is echo, not speech.")
    aec_converge_s: float = Field(3.0, ge=0, description="Speaker activity the canceller needs "
                                  "to converge; until then only speech louder than aec_gate x "
                                  "the speaker level interrupts.")
    half_duplex_level_db: float = Field(-34.0, le=0, description="half_duplex: level (dBFS) the "
                                        "microphone must exceed to interrupt the assistant; "
                                        "set it between your echo level and your voice.")
    half_duplex_threshold: float = Field(0.8, gt=0, lt=1, description="half_duplex: speech "
                                         "probability needed to interrupt the assistant.")
    block_ms: int = Field(10, ge=5, le=100, description="Device buffer size: smaller stops "
                          "playback sooner on barge-in.")


class ServerSettings(Strict):
    """The Realtime WebSocket server and its web page (the `server:` section), used by `make serve`."""

    host: str = Field("127.0.0.1", description="Address to bind. Any address other than "
                      "localhost needs `token`.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port).")
    max_sessions: int = Field(2, ge=1, description="Sessions served at once; one more gets a "
                              "`busy` error event and is closed, the others go on.")
    token: Optional[str] = Field(None, description="Bearer token clients must send "
                                 "(`Authorization: Bearer ...`, or `?token=` for the web page); "
                                 "the env var CASCADE_SERVER_TOKEN overrides it.")
    allowed_origins: list[str] = Field(default_factory=list, description="Browser origins "
                                       "allowed besides the server's own (Origin header).")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="Largest WebSocket message; "
                                   "a bigger one closes that session with an error event.")
    max_buffered_s: float = Field(10.0, gt=0, description="Input audio received but not yet "
                                  "heard (the server falling behind); more is refused with an "
                                  "error event.")
    sessions_dir: Optional[str] = Field("out/sessions", description="Each session's "
                                        "transcript.jsonl and timeline.jsonl go to "
                                        "<sessions_dir>/<session id>/; null keeps none.")


@dataclass(frozen=True)
class CascadeConfig:
    vad: Any
    asr: Any
    llm: Any
    tts: Any
    pipeline: PipelineSettings
    audio: AudioSettings
    server: ServerSettings = ServerSettings()
    source: str = "<dict>"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in registry.KINDS:
            cfg = getattr(self, kind)
            out[kind] = {"backend": _backend_name(kind, cfg), **cfg.model_dump()}
        out["pipeline"] = self.pipeline.model_dump()
        out["audio"] = self.audio.model_dump()
        out["server"] = self.server.model_dump()
        return out

    def replace(self, **sections: Any) -> "CascadeConfig":
        """A copy with some sections' keys overridden, validated again
        (``cfg.replace(pipeline={"stream_tts": False})``)."""
        data = self.to_dict()
        for key, values in sections.items():
            data.setdefault(key, {}).update(values)
        return parse_config(data, source=self.source)


def _backend_name(kind: str, cfg: BaseModel) -> str:
    for name, backend in registry.backends(kind).items():
        if type(cfg) is backend.config_cls:
            return name
    raise ConfigError(f"{kind}: config of unregistered type {type(cfg).__name__}")


def _format_errors(section: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (section, *e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}")
    return "; ".join(lines)


def _validate(section: str, cls: type[BaseModel], data: Any, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {section}: expected a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_errors(section, err)}") from None


def parse_config(data: Any, source: str = "<dict>") -> CascadeConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, "
                          f"got {type(data).__name__}")
    known = set(registry.KINDS) | {"pipeline", "audio", "server"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: {unknown[0]}: unknown key; valid sections: "
                          f"{', '.join(sorted(known))}")
    sections: dict[str, Any] = {}
    for kind in registry.KINDS:
        raw = data.get(kind)
        if not isinstance(raw, dict) or "backend" not in raw:
            names = ", ".join(sorted(registry.backends(kind)))
            raise ConfigError(f"{source}: {kind}.backend: missing; choose one of: {names}")
        raw = dict(raw)
        name = raw.pop("backend")
        if not isinstance(name, str):
            raise ConfigError(f"{source}: {kind}.backend: expected a name, got {name!r}")
        try:
            backend = registry.get(kind, name)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        sections[kind] = _validate(kind, backend.config_cls, raw, source)
    pipeline = _validate("pipeline", PipelineSettings, data.get("pipeline"), source)
    _check_context(sections["llm"], pipeline, source)
    return CascadeConfig(
        pipeline=pipeline,
        audio=_validate("audio", AudioSettings, data.get("audio"), source),
        server=_validate("server", ServerSettings, data.get("server"), source),
        source=source,
        **sections,
    )


def _check_context(llm: Any, pipeline: PipelineSettings, source: str) -> None:
    """The longest prompt plus the longest reply must fit in the LLM's context
    window, where the backend has one (llama_cpp: llm.n_ctx)."""
    n_ctx = getattr(llm, "n_ctx", None)
    if n_ctx is None or not pipeline.truncate_prompt:
        return
    budget, reply = pipeline.history_token_budget, llm.max_tokens
    if budget + reply > n_ctx:
        raise ConfigError(f"{source}: pipeline.history_token_budget ({budget}) + llm.max_tokens "
                          f"({reply}) = {budget + reply} tokens do not fit in llm.n_ctx "
                          f"({n_ctx}); lower history_token_budget or max_tokens, or raise n_ctx")


def load_config(path: Union[str, Path]) -> CascadeConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty; it needs the sections "
                          f"{', '.join(registry.KINDS)} (see configs/default.yaml)")
    return parse_config(data, source=str(path))
