"""Whisper short-utterance decoding: encode the audio actually present plus a
margin of silence instead of a 30 s padded window (the encoder's cost grows with
the window), with a guard. Unpadded decoding tends to repeat itself or stop
early, so an output that repeats a phrase, speaks implausibly fast or fills its
token limit is rejected and the caller falls back to the standard padded decode.
One failure is repaired instead, as the padded decode would cost ~0.3 s: the
whole utterance said again after its own final full stop ("Go forward ten
meters. Go forward ten meters. Go for") keeps its first copy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
FULL_FRAMES = 3000  # 30 s


@dataclass(frozen=True)
class WindowResult:
    text: str
    rejected: Optional[str]  # why the guard refused it, or None
    repaired: bool = False  # a repetition of the whole utterance was cut off


def _words(text: str) -> list[str]:
    words = [re.sub(r"[^\w']", "", w) for w in text.lower().split()]
    return [w for w in words if w]


def window_frames(n_samples: int, margin_s: float, floor_s: float) -> int:
    seconds = max(n_samples / SAMPLE_RATE + margin_s, floor_s)
    return min(FULL_FRAMES, int(np.ceil(seconds * SAMPLE_RATE / HOP)))


def token_limit(n_samples: int) -> int:
    """Generous bound on new tokens for this much speech (fast speech is ~4 tokens/s),
    within Whisper's 224 new tokens per window (half its 448-token context)."""
    return min(224, int(12 + 6 * n_samples / SAMPLE_RATE))


def max_length(limit: int) -> int:
    """CTranslate2's ``max_length`` for a Whisper decode of up to ``limit`` new tokens:
    its Whisper generate() stops at min(max_length // 2, max_length - prompt + 1) new
    tokens, Whisper's own rule (ctranslate2 4.8.5, src/models/whisper.cc)."""
    return 2 * limit


def guard(text: str, seconds: float, n_tokens: int, limit: int) -> Optional[str]:
    """Why ``text`` looks like a failed short-window decode, or None."""
    if n_tokens >= limit:
        return "hit token limit"
    words = _words(text)
    # fast real speech reaches ~5 words/s (the corpus: 4.8); decoder loops go beyond 6
    if len(words) / max(seconds, 0.5) > 6.0:
        return "implausibly fast speech"
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    if len(grams) != len(set(grams)):
        return "repeated phrase"
    for n in range(1, len(words) // 2 + 1):
        for i in range(len(words) - 2 * n + 1):
            if words[i:i + n] == words[i + n:i + 2 * n]:
                if n >= 2 or words[i:i + n] == words[i + 2 * n:i + 3 * n]:
                    return "repeated words"
    return None


def trim_repeat(text: str) -> Optional[str]:
    """The first copy when ``text`` is sentences S followed only by S again
    (possibly several times, the last one cut short), else None."""
    cuts = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    for cut in cuts:
        head, rest = text[:cut].strip(), text[cut:].strip()
        h, r = _words(head), _words(rest)
        if len(h) < 2 or len(r) < min(3, len(h)):
            continue
        repeated = (h * (len(r) // len(h) + 1))[:len(r)]
        if r == repeated:
            return head
    return None


def join_segments(head: str, tail: str) -> str:
    """One transcript from those of an utterance's two pieces, cut at an inner pause:
    Whisper ends the first with a full stop and starts the second with a capital
    ("...and rather selfish. Is to be ill-disposed."), which the sentence-end reading of
    the end of turn must not see. Other punctuation ("...", ",", "?") stays."""
    head, tail = head.strip(), tail.strip()
    if not head or not tail:
        return head or tail
    if head.endswith(".") and not head.endswith(("...", "…")):
        head = head[:-1]
        first, _, rest = tail.partition(" ")
        if len(first) > 1 and first[0].isupper() and first[1:].islower():
            tail = (first[0].lower() + first[1:] + (" " + rest if rest else "")).strip()
    return f"{head} {tail}"


class Abandoned(Exception):
    """The caller gave up on this decode (speech resumed): it stopped after the encoder."""


def window_features(model, audio: np.ndarray, frames: int) -> np.ndarray:
    """The encoder's input: ``audio`` and silence after it, as ``frames`` log-mel frames
    (a batch of one, contiguous float32)."""
    pad = max(0, frames * HOP - len(audio))
    feats = model.feature_extractor(audio, padding=pad)[:, :frames]
    return np.ascontiguousarray(feats[None], dtype=np.float32)


def encode(model, feats: np.ndarray):
    """Blocking: ``model``'s encoder output for :func:`window_features`, kept where the
    model runs (any replica of the same weights can decode from it)."""
    import ctranslate2

    return model.model.encode(ctranslate2.StorageView.from_array(feats), to_cpu=False)


def decode_window(model, tokenizer, audio: np.ndarray, margin_s: float, floor_s: float,
                  beam_size: int, abandoned: Optional[Callable[[], bool]] = None,
                  encoder=None) -> WindowResult:
    """Blocking. ``model`` is a faster_whisper.WhisperModel, ``tokenizer`` its
    faster_whisper Tokenizer for the fixed language. ``abandoned``: asked between the
    encoder and the decoder (CTranslate2 cannot stop either midway); True raises
    Abandoned instead of decoding. ``encoder``: another WhisperModel of the same
    weights (other threads) to run the encoder on; its output goes to ``model``'s
    decoder as is."""
    feats = window_features(model, audio, window_frames(len(audio), margin_s, floor_s))
    encoded = encode(encoder or model, feats)
    if abandoned is not None and abandoned():
        raise Abandoned()
    limit = token_limit(len(audio))
    prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
    res = model.model.generate(encoded, [prompt], beam_size=beam_size,
                               max_length=max_length(limit),
                               suppress_blank=True, suppress_tokens=[-1],
                               return_scores=True, return_no_speech_prob=True)[0]
    ids = [i for i in res.sequences_ids[0] if i < tokenizer.eot]
    text = tokenizer.decode(ids).strip()
    if res.no_speech_prob > 0.6 and res.scores[0] < -1.0:
        return WindowResult("", None)
    seconds = len(audio) / SAMPLE_RATE
    # sequences_ids holds the new tokens only (no prompt, no end of text)
    rejected = guard(text, seconds, len(res.sequences_ids[0]), limit)
    if rejected is not None:
        head = trim_repeat(text)
        # the first copy must pass the guard on its own (its tokens are within the limit)
        if head is not None and guard(head, seconds, 0, limit) is None:
            return WindowResult(head, None, repaired=True)
    return WindowResult(text, rejected)
