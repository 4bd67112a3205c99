"""The tiny task: addition of two 2-3 digit integers, answered in R1's format.

The user turn is the bare expression ``A+B``. The assistant works column by column from the units, the way a
person adds on paper, then gives the answer:

    347+285  ->  <think>7+5=12 4+8+1=13 3+2+1=6</think><answer>632</answer>

Each column reads ``a+b(+carry)=s``; a missing digit is written as 0 so every step has the same shape. The
answer is the last column's sum followed by the units digits of the earlier columns, most significant first,
so a small model can read it off the working. Everything here is pure and seeded: no torch, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

NAME = "arithmetic"
DIGITS = (2, 3)  # operands have 2 or 3 digits unless a source says otherwise (`digits: [3, 4]`)


def operand(rng: random.Random, digits: tuple[int, ...] = DIGITS) -> int:
    n = rng.choice(digits)
    return rng.randint(10 ** (n - 1), 10**n - 1)


def prompt(a: int, b: int) -> str:
    return f"{a}+{b}"


def parse_prompt(text: str) -> tuple[int, int]:
    a, b = text.strip().split("+")
    return int(a), int(b)


def _columns(a: int, b: int, slip: int | None = None) -> tuple[list[str], int]:
    """The column steps for a+b and the answer they lead to. `slip`: the index of a column whose incoming carry
    is forgotten; every later step and the answer follow from that mistake, as a person's would."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry, digits = [], 0, []
    n = max(len(da), len(db))
    for i in range(n):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if i == slip:
            carry = 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}" if carry else f"{x}+{y}={s}")
        digits.append(str(s) if i == n - 1 else str(s % 10))
        carry = s // 10
    return steps, int("".join(reversed(digits)))


def working(a: int, b: int) -> str:
    """The column-by-column chain of thought for a+b."""
    return " ".join(_columns(a, b)[0])


def carried(a: int, b: int) -> list[int]:
    """The indices of the columns (units = 0) that receive a carry."""
    steps = _columns(a, b)[0]
    return [i for i, step in enumerate(steps) if step.count("+") == 2]


def solution(a: int, b: int, slip: int | None = None) -> str:
    """The full assistant turn in R1's format; with `slip`, the carry into that column is forgotten."""
    steps, total = _columns(a, b, slip)
    return f"<think>{' '.join(steps)}</think><answer>{total}</answer>"


def problems(n: int, seed: int, exclude: Iterable[tuple[int, int]] = (),
             digits: Iterable[int] = DIGITS) -> list[tuple[int, int]]:
    """`n` distinct problems from a seeded generator, none of them in `exclude`, each operand with a number of
    digits drawn from `digits`.

    Distinct so that "thousands of cold-start examples" means thousands of different problems, and `exclude`
    keeps training data disjoint from the held-out set.
    """
    digits = tuple(int(d) for d in digits)
    if not digits or any(d < 1 or d > 18 for d in digits):
        raise ValueError(f"arithmetic: digits must be whole numbers from 1 to 18, got {list(digits)}")
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[tuple[int, int]] = []
    space = sum(9 * 10 ** (d - 1) for d in set(digits)) ** 2
    if n > space - len(seen):
        raise ValueError(f"arithmetic: asked for {n} distinct problems, only {space - len(seen)} exist")
    while len(out) < n:
        pair = (operand(rng, digits), operand(rng, digits))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def records(pairs: Iterable[tuple[int, int]], with_solution: bool = True, slips: float = 0.0,
            seed: int = 0) -> Iterator[dict]:
    """Rows in r1pipe's normalized schema: prompt, answer and (for SFT data) the assistant solution.

    `slips` is the share of solutions, among those with a carry, that forget one carry (chosen at random) and so
    reach a wrong answer, the way a model-written cold start has slips a verifier would catch. `answer` stays
    the true sum. Seeded by `seed`, so a source's rows are the same on every machine.
    """
    rng = random.Random(f"slips-{seed}")
    for a, b in pairs:
        row = {"prompt": prompt(a, b), "answer": str(a + b)}
        if with_solution:
            cols = carried(a, b)
            slip = rng.choice(cols) if slips and cols and rng.random() < slips else None
            row["solution"] = solution(a, b, slip)
        yield row
