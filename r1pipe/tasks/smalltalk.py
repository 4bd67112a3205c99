"""The tiny non-reasoning task: short requests answered directly, without a chain of thought.

R1 mixes ~200k non-reasoning samples (writing, factual QA, self-cognition, translation) into its second SFT,
and "simple queries get no CoT". This is that mix in miniature, generated offline from seeds:

    greet:       "hi, I am Ada"            -> "Hello Ada, nice to meet you."
    identity:    "who are you?"            -> "I am a small assistant trained with r1pipe."
    capital:     "capital of France?"      -> "The capital of France is Paris."
    translate:   "say cat in French"       -> "In French, cat is chat."

Each row carries a `reference` reply, which the tiny reward model's preference pairs are built from.
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


def example(rng: random.Random) -> dict[str, str]:
    kind = rng.choice(["greet", "identity", "capital", "translate"])
    if kind == "greet":
        name = rng.choice(NAMES)
        return {"prompt": f"hi, I am {name}", "reference": f"Hello {name}, nice to meet you."}
    if kind == "identity":
        return {"prompt": rng.choice(IDENTITY), "reference": "I am a small assistant trained with r1pipe."}
    if kind == "capital":
        country = rng.choice(sorted(CAPITALS))
        return {"prompt": f"capital of {country}?", "reference": f"The capital of {country} is {CAPITALS[country]}."}
    word = rng.choice(sorted(FRENCH))
    return {"prompt": f"say {word} in French", "reference": f"In French, {word} is {FRENCH[word]}."}


def records(n: int, seed: int) -> Iterator[dict[str, str]]:
    """Rows in r1pipe's schema: prompt, the reply as `solution` (no think part), and `reference`."""
    rng = random.Random(seed)
    for _ in range(n):
        ex = example(rng)
        yield {"prompt": ex["prompt"], "solution": ex["reference"], "reference": ex["reference"]}
