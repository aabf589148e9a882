"""Word error rate with text normalisation (case, punctuation, numbers as words)."""
from __future__ import annotations

import re
from typing import Iterable

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_words(n // size) + f" {name}" + ("" if rest == 0 else
                                                           " " + number_words(rest))
    raise ValueError(n)


def _num(m: re.Match) -> str:
    digits = m.group(0).replace(",", "")
    if len(digits) > 4 and not m.group(0).count(","):  # a digit string: say each digit
        return " ".join(_ONES[int(d)] for d in digits)
    n = int(digits)
    if len(digits) == 4 and 1100 <= n < 2000 and n % 100:  # a year: "fourteen fifty five"
        return number_words(n // 100) + " " + number_words(n % 100)
    return number_words(n)


def normalize(text: str) -> list[str]:
    text = text.lower().replace("&", " and ").replace("%", " percent")
    text = re.sub(r"(?<=\w)'(?=\w)", "", text)  # don't -> dont
    text = re.sub(r"\d{1,3}(,\d{3})+|\d+", _num, text)
    text = re.sub(r"[^a-z ]+", " ", text.replace("-", " "))
    return text.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: Iterable[str], hyps: Iterable[str]) -> float:
    """Corpus WER: total edits / total reference words, after normalisation."""
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalize(ref), normalize(hyp)
        errors += edit_distance(r, h)
        words += len(r)
    return errors / max(1, words)
