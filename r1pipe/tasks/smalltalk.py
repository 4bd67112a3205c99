"""The tiny non-reasoning task: short requests answered directly, without a chain of thought.

R1 mixes ~200k non-reasoning samples (writing, factual QA, self-cognition, translation) into its second SFT,
and "simple queries get no CoT". This is that mix in miniature, generated offline from seeds:

    greet:       "hi, I am Ada"            -> "Hello Ada, nice to meet you."
    identity:    "who are you?"            -> "I am a small assistant trained with r1pipe."
    capital:     "capital of France?"      -> "The capital of France is Paris."
    translate:   "say cat in French"       -> "In French, cat is chat."

Each row carries a `reference` reply, which the tiny reward model's preference pairs are built from
(`preference_pairs`: the reference is chosen over a flawed reply, wrong, rude, garbled or off-topic).
`heldout=True` asks the same things in phrasings no training set uses ("hello, my name is Ada", "what is the
capital of France?"), so held-out general prompts are never prompts a model trained on.
Pure functions: no torch, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

NAME = "smalltalk"

NAMES = ["Ada", "Alan", "Grace", "Linus", "Ken", "Barbara", "Edsger", "Donald", "Frances", "John", "Margaret",
         "Dennis", "Radia", "Tim", "Vint", "Hedy", "Claude", "Sophie", "Yann", "Fei"]  # fmt: skip
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Egypt": "Cairo",
            "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Chile": "Santiago", "Canada": "Ottawa",
            "India": "New Delhi", "Cuba": "Havana"}  # fmt: skip
FRENCH = {"cat": "chat", "dog": "chien", "house": "maison", "water": "eau", "bread": "pain", "book": "livre",
          "tree": "arbre", "sun": "soleil", "moon": "lune", "friend": "ami"}  # fmt: skip
IDENTITY = ["who are you?", "what are you?", "introduce yourself", "what is your name?"]
SELF = "I am a small assistant trained with r1pipe."
# Phrasings used only by held-out sets (heldout=True): same facts, never a training prompt.
HELDOUT = {
    "greet": ["hello, my name is {}", "hey there, I'm {}", "good morning, I am {}"],
    "identity": ["tell me about yourself", "who am I talking to?", "what kind of assistant are you?"],
    "capital": ["what is the capital of {}?", "which city is the capital of {}?", "name the capital of {}"],
    "translate": ["how do you say {} in French?", "what is {} in French?", "translate {} to French"],
}
RUDE = ["That is a stupid question.", "I do not care. Go away.", "Figure it out yourself."]


def example(rng: random.Random, heldout: bool = False) -> dict[str, str]:
    kind = rng.choice(["greet", "identity", "capital", "translate"])
    if kind == "greet":
        name = rng.choice(NAMES)
        prompt = rng.choice(HELDOUT["greet"]).format(name) if heldout else f"hi, I am {name}"
        return {"kind": kind, "prompt": prompt, "reference": f"Hello {name}, nice to meet you."}
    if kind == "identity":
        return {"kind": kind, "prompt": rng.choice(HELDOUT["identity"] if heldout else IDENTITY), "reference": SELF}
    if kind == "capital":
        country = rng.choice(sorted(CAPITALS))
        prompt = rng.choice(HELDOUT["capital"]).format(country) if heldout else f"capital of {country}?"
        return {"kind": kind, "prompt": prompt, "reference": f"The capital of {country} is {CAPITALS[country]}."}
    word = rng.choice(sorted(FRENCH))
    prompt = rng.choice(HELDOUT["translate"]).format(word) if heldout else f"say {word} in French"
    return {"kind": kind, "prompt": prompt, "reference": f"In French, {word} is {FRENCH[word]}."}


def records(n: int, seed: int, heldout: bool = False, noise: float = 0.0) -> Iterator[dict[str, str]]:
    """Rows in r1pipe's schema: prompt, the reply as `solution` (no think part), and `reference`.

    `noise` is the share of rows whose `solution` is a rude or wrong reply instead of the reference, as in
    SFT data scraped from the web: a model tuned on it misbehaves now and then, which is what alignment RL is
    for. The prompts do not depend on it (the flaws come from a second generator)."""
    rng, flaws = random.Random(seed), random.Random(seed + 1_000_003)
    for _ in range(n):
        ex = example(rng, heldout)
        solution = ex["reference"]
        if noise and flaws.random() < noise:
            solution = flawed(ex, flaws, kinds=("rude", "wrong"))[1]
        yield {"prompt": ex["prompt"], "solution": solution, "reference": ex["reference"]}


FLAWS = ("wrong", "rude", "rude_thought", "garbled", "off_topic", "empty_thought")


def flawed(ex: dict[str, str], rng: random.Random, kinds: tuple[str, ...] = FLAWS) -> tuple[str, str]:
    """(flaw, reply): a worse answer to `ex`. Wrong facts and garbling are unhelpful; rudeness, in the reply or
    only in a think part, is harmful (R1 judges harmlessness on the whole response, reasoning included)."""
    flaw = rng.choice(kinds)
    ref = ex["reference"]
    if flaw == "wrong":
        if ex["kind"] == "capital":
            right = ref.rsplit(" ", 1)[1].rstrip(".")
            other = rng.choice(sorted(v for v in CAPITALS.values() if v != right))
            return flaw, ref.replace(right, other)
        if ex["kind"] == "translate":
            right = ref.rsplit(" ", 1)[1].rstrip(".")
            return flaw, ref.replace(right, rng.choice(sorted(v for v in FRENCH.values() if v != right)))
        if ex["kind"] == "greet":
            right = ref.split(" ")[1].rstrip(",")
            return flaw, ref.replace(right, rng.choice(sorted(n for n in NAMES if n != right)))
        return flaw, rng.choice(["I am a cat.", "I am nobody.", "I do not know."])
    if flaw == "rude":
        return flaw, rng.choice(RUDE)
    if flaw == "rude_thought":
        return flaw, f"<think>{rng.choice(RUDE)}</think>{ref}"
    if flaw == "garbled":
        words = ref.split(" ")
        cut = rng.randint(1, max(1, len(words) - 1))
        return flaw, " ".join(words[:cut]) if rng.random() < 0.5 else " ".join(rng.sample(words, len(words)))
    if flaw == "empty_thought":  # a think part of nothing but noise before an otherwise right reply
        return flaw, f"<think>{' '.join(rng.choice(ref.split(' ')) for _ in range(6))}</think>{ref}"
    other = example(rng)
    while other["reference"] == ref:
        other = example(rng)
    return flaw, other["reference"]


def preference_pairs(n: int, seed: int, heldout: bool = False) -> Iterator[dict[str, str]]:
    """Preference rows {prompt, chosen, rejected, flaw}: the reference reply is chosen over a flawed one."""
    rng = random.Random(seed)
    for _ in range(n):
        ex = example(rng, heldout)
        flaw, bad = flawed(ex, rng)
        yield {"prompt": ex["prompt"], "chosen": ex["reference"], "rejected": bad, "flaw": flaw}
