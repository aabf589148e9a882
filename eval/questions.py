"""The spoken question set of the reply-quality benchmark, and how a reply is scored.

One conversation, in this order, as a user would speak it: factual questions (each
with the facts a good answer contains), follow-ups that need the history ("And what
about Germany?", "What is my name?"), and statements and commands, where a parrot
gives itself away by repeating them. The audio is only the carrier: it is synthesized
and the pipeline's own ASR transcribes it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Question:
    text: str
    expect: Optional[str]  # regex a good answer matches (None: no single fact expected)
    kind: str  # "fact", "follow-up" (needs the history), "open", "statement"


QUESTIONS: tuple[Question, ...] = (
    Question("What is the capital of France?", r"\bparis\b", "fact"),
    Question("And what about Germany?", r"\bberlin\b", "follow-up"),
    Question("How many days are in a week?", r"\b(seven|7)\b", "fact"),
    Question("Tell me a fun fact about the moon.", r"\bmoon\b|\blunar\b", "open"),
    Question("The arrangement will avoid any conflicts of interest.", None, "statement"),
    Question("Go forward ten meters.", None, "statement"),
    Question("How many hours are in a day?", r"\b(24|twenty[- ]four)\b", "fact"),
    Question("What color is the sky on a clear day?", r"\bblue\b", "fact"),
    Question("Who wrote Romeo and Juliet?", r"\bshakespeare\b", "fact"),
    Question("What is two plus three?", r"\b(five|5)\b", "fact"),
    Question("I am going to the store later.", None, "statement"),
    Question("What is the largest planet in our solar system?", r"\bjupiter\b", "fact"),
    Question("How many legs does a spider have?", r"\b(eight|8)\b", "fact"),
    Question("What language do people speak in Spain?", r"\bspanish\b", "fact"),
    Question("My name is Anna.", None, "statement"),
    Question("What is the opposite of hot?", r"\bcold\b", "fact"),
    Question("Can you suggest something healthy for breakfast?",
             r"\b(oat\w*|eggs?|fruits?|yog(h)?urt|toast|porridge|berr(y|ies)|banana\w*|"
             r"cereal|smoothie\w*|granola|muesli|avocado|nuts)\b", "open"),
    Question("What is my name?", r"\banna\b", "follow-up"),
    Question("How many months are in a year?", r"\b(twelve|12)\b", "fact"),
    Question("What do bees make?", r"\bhoney\b", "fact"),
    Question("The weather is nice today.", None, "statement"),
    Question("Which animal is called the king of the jungle?", r"\blions?\b", "fact"),
    Question("At what temperature does water boil in Celsius?", r"\b(100|hundred)\b", "fact"),
    Question("Thank you, that is all for now.", None, "statement"),
)

# A second set, of the same kinds, not used while the default profile's prompt, primer
# and echo guard were chosen: a check that they were not fitted to the first one.
HELDOUT: tuple[Question, ...] = (
    Question("What is the capital of Japan?", r"\btokyo\b", "fact"),
    Question("And the capital of Spain?", r"\bmadrid\b", "follow-up"),
    Question("How many minutes are in an hour?", r"\b(sixty|60)\b", "fact"),
    Question("I had pasta for dinner.", None, "statement"),
    Question("What is the tallest animal in the world?", r"\bgiraffes?\b", "fact"),
    Question("Open the window please.", None, "statement"),
    Question("What do cows drink?", r"\bwater\b", "fact"),
    Question("What is ten minus four?", r"\b(six|6)\b", "fact"),
    Question("Tell me something interesting about the ocean.", r"\b(ocean|sea|water)s?\b", "open"),
    Question("My brother lives in Chicago.", None, "statement"),
    Question("What planet do we live on?", r"\bearth\b", "fact"),
    Question("Where does my brother live?", r"\bchicago\b", "follow-up"),
    Question("How many sides does a triangle have?", r"\b(three|3)\b", "fact"),
    Question("What is the color of grass?", r"\bgreen\b", "fact"),
    Question("It is raining outside.", None, "statement"),
    Question("Who was the first person to walk on the moon?", r"\barmstrong\b", "fact"),
    Question("What gas do plants take in from the air?", r"\b(carbon dioxide|co2)\b", "fact"),
    Question("How many continents are there?", r"\b(seven|7)\b", "fact"),
    Question("I will call my mother tomorrow.", None, "statement"),
    Question("What is frozen water called?", r"\bice\b", "fact"),
    Question("Which season comes after winter?", r"\bspring\b", "fact"),
    Question("What is the largest ocean on Earth?", r"\bpacific\b", "fact"),
    Question("How many letters are in the English alphabet?", r"\b(26|twenty[- ]six)\b", "fact"),
    Question("Goodbye, talk to you soon.", None, "statement"),
)
SETS = {"main": QUESTIONS, "heldout": HELDOUT}

ECHO_OVERLAP = 0.6  # share of a reply's words taken from the user's words
# Words that carry no content of their own: a reply made of the user's words and these
# says nothing new ("You're going to the store later.", "Good evening! It is raining.").
FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's is are was were be been being am do does did
have has had will would can could shall should may might must not no yes to of in on at
by for with from about as and or but so if then than there here what which who whom whose
when where why how i me my mine you your yours you're you've you'll i'm i've i'll i'd we
us our ours we're they them their theirs they're he him his she her hers he's she's one
some any all very just also too really well oh okay ok sure great good nice hello hi hey
thanks thank please sorry evening morning afternoon day that's there's let's
""".split())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def overlap(reply: str, user: str) -> float:
    """Share of the reply's words that the user said (0 for an empty reply)."""
    r, u = words(reply), set(words(user))
    return sum(w in u for w in r) / len(r) if r else 0.0


def normalized(text: str) -> str:
    return " ".join(words(text))


def new_content_words(reply: str, user: str) -> list[str]:
    """The reply's words that are neither the user's nor function words."""
    said = set(words(user))
    return [w for w in words(reply) if w not in said and w not in FUNCTION_WORDS]


def score_reply(q: Question, user_text: str, reply: Optional[str]) -> dict:
    """One turn's scores. ``user_text``: what the ASR heard (echo is judged against
    it, as the LLM saw it); ``reply``: None when the turn got no reply."""
    reply = reply or ""
    answered = bool(q.expect and re.search(q.expect, reply.lower()))
    # A parrot: most of the reply is the user's own words, it says nothing new (no
    # content word the user did not say), and it does not answer. ("Paris is the capital
    # of France." reuses the question's words but answers it; "Cows drink milk." is a
    # wrong answer, not an echo.)
    echo = (bool(reply) and overlap(reply, user_text) > ECHO_OVERLAP and not answered
            and not new_content_words(reply, user_text))
    cut = bool(reply) and not re.search(r"[.!?…\"')\]]\s*$", reply.strip())
    return {"question": q.text, "kind": q.kind, "heard": user_text, "reply": reply,
            "expects_fact": q.expect is not None, "answered": answered, "echo": echo,
            "empty": not reply.strip(), "cut": cut,
            "overlap": round(overlap(reply, user_text), 2)}


def summarize(rows: list[dict]) -> dict:
    """answer_rate over the questions with an expected fact; echo, distinct, empty and
    cut rates over every question."""
    n = len(rows) or 1
    facts = [r for r in rows if r["expects_fact"]]
    replies = [normalized(r["reply"]) for r in rows if r["reply"].strip()]
    return {"questions": len(rows),
            "answer_rate": sum(r["answered"] for r in facts) / (len(facts) or 1),
            "echo_rate": sum(r["echo"] for r in rows) / n,
            "distinct_rate": len(set(replies)) / n,
            "empty_rate": sum(r["empty"] for r in rows) / n,
            "cut_rate": sum(r["cut"] for r in rows) / n,
            "questions_with_fact": len(facts)}
