"""Short chunks' audio, kept and replayed instead of synthesized again.

A reply's first chunk is short (three words, or a clause) and it is on the critical
path: V2V waits for its synthesis. A small LLM opens its replies the same few ways
("I'm glad!", "That's a great", "Okay."), and a chunk's audio depends only on its text
and the voice: the TTS synthesizes each chunk on its own. So the audio of every chunk
of up to ``max_words`` words is kept (the newest ``size`` texts), and a chunk whose
exact text was synthesized before is played from here at once, its TTS skipped.

Only audio that this session's TTS made is replayed: nothing is made ahead.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np


class AudioCache:
    def __init__(self, size: int, max_words: int):
        self.size, self.max_words = size, max_words
        self._audio: OrderedDict[str, np.ndarray] = OrderedDict()

    def keeps(self, text: str) -> bool:
        """A chunk of ``text`` is short enough to be kept."""
        return self.size > 0 and 0 < len(text.split()) <= self.max_words

    def get(self, text: str) -> Optional[np.ndarray]:
        """A copy of the audio made for exactly ``text``, or None."""
        audio = self._audio.get(text)
        if audio is None:
            return None
        self._audio.move_to_end(text)
        return audio.copy()

    def put(self, text: str, audio: np.ndarray) -> None:
        if not self.keeps(text) or not len(audio):
            return
        self._audio[text] = np.array(audio, dtype=np.float32)  # its own copy
        self._audio.move_to_end(text)
        while len(self._audio) > self.size:
            self._audio.popitem(last=False)

    def __len__(self) -> int:
        return len(self._audio)
