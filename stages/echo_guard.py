"""Repeat handling at decode time: a reply must not parrot the user, nor copy its own
earlier replies.

Small chat models (SmolLM2-135M) continue the user's text instead of answering it
("Go forward ten meters." -> "Go forward ten meters."), and once a reply has been
said they carry it into later ones ("The opposite of hot is cold." as the answer to
every next question). Both show up in the first tokens, so a logits processor can
stop them as they are sampled, at no cost in latency:

- the reply may not start with the word the user's message starts with (a parrot's
  first word; an answer starts otherwise: "What is..." -> "The capital...");
- the reply may not copy a run of ``run_words`` words from one of the newest earlier
  replies.

Only the few most likely tokens are checked (their text is decoded once and cached);
a token is blocked by setting its logit to -inf, and sampling picks among the rest. Words are compared without case or punctuation; a token that ends
inside a word is blocked when it can only become the forbidden word.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class EchoGuard:
    def __init__(self, detokenize: Callable[[list[int]], str], n_prompt: int, user_text: str,
                 earlier_replies: Sequence[str], run_words: int = 4, top_k: int = 10):
        self.detokenize = detokenize
        self.n_prompt = n_prompt  # tokens before the reply's first
        self.top_k = top_k
        first = words(user_text)[:1]
        self.first_word = first[0] if first else None
        self.n = run_words
        self.runs: set[tuple[str, ...]] = set()
        for reply in earlier_replies:
            w = words(reply)
            self.runs.update(tuple(w[i:i + run_words]) for i in range(len(w) - run_words + 1))
        self._pieces: dict[int, str] = {}
        self.blocked = 0  # tokens blocked in this reply

    @property
    def active(self) -> bool:
        return self.first_word is not None or bool(self.runs)

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.detokenize([token])
        return piece

    def forbidden(self, text: str) -> bool:
        """Whether the reply text so far (a candidate token included) breaks a rule."""
        w = words(text)
        if not w:
            return False
        open_word = text[-1:].isalnum() or text[-1:] == "'"  # may still grow

        def same(word: str, ref: str, last: bool) -> bool:
            return ref.startswith(word) if (last and open_word) else word == ref

        if self.first_word is not None and len(w) == 1 and same(w[0], self.first_word, True):
            return True
        if len(w) >= self.n and self.runs:
            tail = tuple(w[-self.n:])
            return any(tail[:-1] == run[:-1] and same(tail[-1], run[-1], True)
                       for run in self.runs)
        return False

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """llama-cpp-python's logits-processor interface: the ids so far (prompt and
        reply) and the next token's logits; returns the logits."""
        text = self.detokenize([int(t) for t in input_ids[self.n_prompt:]])
        k = min(self.top_k, len(scores))
        top = np.argpartition(scores, -k)[-k:]
        for token in top:
            if self.forbidden(text + self._piece(int(token))):
                scores[token] = -np.inf
                self.blocked += 1
        return scores
