"""Streaming sentence-boundary ("point") detection between the LLM and TTS.

Text arrives token by token. A boundary is decided only once the next non-space
character after the punctuation has arrived, so "$29.99", "Dr. Smith", "e.g. this"
and "Wait... what" are not cut, and a cut always falls on whitespace: never inside
a word. The first chunk of a reply may end at a clause (comma, semicolon, colon,
dash) to start speaking sooner, and so may the next ones while fewer than
``clause_words`` words have been sent (a short first chunk, "I'm glad!", is over
before a long second sentence written whole could be ready on a slow CPU); later
chunks are whole sentences. A first chunk with no punctuation is cut after
``max_first_words`` words, and, while fewer than ``clause_words`` have been sent, a
later one after ``max_next_words``.
"""
from __future__ import annotations

import re
from typing import AsyncIterator, Iterator

from . import clock
from .events import Sentence, TextDelta

ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st vs etc eg ie cf al approx dept est fig inc ltd co corp mt no nos
vol jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun am pm
gen col lt sgt capt rev hon gov pres sen rep ave blvd rd
""".split())

# terminator (or clause mark), closing quotes/brackets, whitespace, then a non-space char
_CANDIDATE = re.compile(r"([.!?\u2026]+|[,;:]|\u2014|\s-|\s\u2013)([\"'\u201d\u2019)\]]*)(\s+)(?=(\S))")
_WORD = re.compile(r"\w")


class SentenceSplitter:
    def __init__(self, first_clause: bool = True, min_clause_words: int = 3,
                 max_first_words: int | None = None, clause_words: int = 0,
                 max_next_words: int | None = None):
        self.first_clause = first_clause
        self.min_clause_words = min_clause_words
        self.max_first_words = max_first_words
        self.clause_words = clause_words
        self.max_next_words = max_next_words
        self.reset()

    def reset(self) -> None:
        self._buf = ""
        self._scan = 0
        self._emitted = 0
        self._words_out = 0  # words in the chunks emitted so far

    def feed(self, text: str) -> Iterator[str]:
        """Add text; yield every chunk that is now known to be complete."""
        self._buf += text
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                return
            if _WORD.search(chunk):
                self._emitted += 1
                self._words_out += len(chunk.split())
                yield chunk

    def flush(self) -> Iterator[str]:
        """End of the reply: whatever is left is the last chunk."""
        rest = self._buf.strip()
        self._buf, self._scan = "", 0
        if _WORD.search(rest):
            self._emitted += 1
            yield rest

    @property
    def _short_start(self) -> bool:
        """The chunks sent so far hold fewer than ``clause_words`` words: the next may
        end at a clause, or after ``max_next_words`` words."""
        return self._words_out < self.clause_words

    def _next_chunk(self) -> str | None:
        for m in _CANDIDATE.finditer(self._buf, self._scan):
            if self._is_boundary(m):
                chunk = self._buf[:m.end(2)].strip()
                self._buf = self._buf[m.end(3):]
                self._scan = 0
                return chunk
            self._scan = m.start(3)
        if self._emitted == 0 and self.max_first_words:
            return self._cut_long(self.max_first_words)
        if self.max_next_words and self._emitted and self._short_start:
            return self._cut_long(self.max_next_words)
        return None

    def _cut_long(self, n: int) -> str | None:
        """A chunk with no punctuation yet: once ``n`` whole words have arrived (the next
        one has begun), cut after them, so that speech starts (or goes on) however long
        the sentence is."""
        words = list(re.finditer(r"\S+", self._buf))
        if len(words) <= n:
            return None
        end = words[n - 1].end()
        chunk = self._buf[:end].strip()
        self._buf = self._buf[end:].lstrip()
        self._scan = 0
        return chunk

    def _is_boundary(self, m: re.Match) -> bool:
        mark, nxt = m.group(1).strip(), m.group(4)
        before = self._buf[:m.start(1)]
        if mark in (",", ";", ":", "\u2014", "-", "\u2013"):
            return (self.first_clause
                    and (self._emitted == 0 or self._short_start)
                    and len(before.split()) >= self.min_clause_words)
        if "!" in mark or "?" in mark:
            return True
        # A period or an ellipsis: not before a lower-case word ("e.g. this", "Wait... what"),
        # not after an abbreviation or an initial ("Dr. Smith", "J. K. Rowling", "U.S. Army").
        if nxt.islower():
            return False
        if mark == ".":
            word = before.rsplit(None, 1)[-1] if before.split() else ""
            bare = word.strip("\"'([{\u201c\u2018").lower()
            if bare in ABBREVIATIONS or "." in bare or (len(bare) == 1 and bare.isalpha()):
                return False
        return True


async def split_stream(deltas: AsyncIterator[TextDelta],
                       splitter: SentenceSplitter) -> AsyncIterator[Sentence]:
    """TextDelta stream -> Sentence stream (one turn)."""
    splitter.reset()
    index = 0
    turn_id = None
    async for delta in deltas:
        turn_id = delta.turn_id
        for chunk in splitter.feed(delta.text):
            yield Sentence(turn_id, clock.now(), text=chunk, index=index)
            index += 1
    if turn_id is not None:
        for chunk in splitter.flush():
            yield Sentence(turn_id, clock.now(), text=chunk, index=index)
            index += 1
