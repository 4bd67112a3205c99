"""Decontamination: drop training rows that overlap the evaluation sets, before a stage trains on them.

Two tests, because evaluation sets come in two kinds. Short synthetic prompts ("123+45") can only be compared
whole: they match when their normalized forms are equal. Text benchmarks (GSM8K, MATH) are also compared by
shared word 8-grams (a common contamination test; n is configurable): a training question that embeds
eight consecutive words of an evaluation question is treated as a copy of it.

Normalization (decided here, and what the tests pin down):
  * Unicode NFKC, then lowercase, so full-width digits and ligatures compare equal to their plain forms;
    the minus sign, times, divide and middle dot become - * / *.
  * Thousands commas inside numbers go ("1,000" == "1000"; so does the pair "(1,234)", a rare cost);
    a decimal point between digits stays ("0.5").
  * Tokens are words (runs of letters), numbers, LaTeX commands (\\frac) and single math symbols
    (+ - * / = ^ < > ( ) [ ] { } | ! % _ and any Unicode math symbol). Each symbol is its own token, so
    whitespace inside an expression does not matter: "12+34" == " 12 + 34 ", but "12+345" differs.
  * Everything else (. , ; : ? ' " $ and other punctuation) is dropped: sentence punctuation and TeX's $
    delimiters should not hide a copied sentence. Exact matching uses every token; n-grams use words,
    numbers and LaTeX commands only, so two formulas that merely share symbols are not a copy.
  * Scripts written without spaces (Chinese, Japanese) become one token per run of letters, so for them only
    exact matches and long shared runs are found.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from r1pipe.errors import R1Error

_TRANSLATE = str.maketrans({"\u2212": "-", "\u00d7": "*", "\u00f7": "/", "\u00b7": "*", "\u22c5": "*"})
# The comma comes first so the engine can scan for it literally; the digit before it is a lookbehind.
_THOUSANDS = re.compile(r",(?<=\d,)(?=\d{3}(?!\d))")
# ASCII punctuation outside the kept symbols is simply never matched; a non-ASCII non-word character is
# matched and then kept only if it is a math symbol (Python's re has no Unicode-category classes).
_TOKEN = re.compile(r"\\[^\W\d_]+|\d+(?:\.\d+)*|[^\W\d_]+|[-+*/=^<>()\[\]{}|!%_]|[^\x00-\x7f\w\s]")


def tokens(text: str) -> list[str]:
    """Normalized tokens of a text (see the module docstring for what is kept)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_TRANSLATE)
    toks = _TOKEN.findall(_THOUSANDS.sub("", text))
    if text.isascii():  # the common case needs no per-token check
        return toks
    return [t for t in toks if len(t) > 1 or t.isascii() or t.isalnum() or unicodedata.category(t) == "Sm"]


def normalize(text: str) -> str:
    """The normalized form used for exact matching: tokens joined by single spaces."""
    return " ".join(tokens(text))


def _grams(toks: list[str], n: int) -> Iterable[tuple[str, ...]]:
    # zip over n shifted views: the n-grams in order, built in C rather than by slicing in a Python loop
    return zip(*(toks[i:] for i in range(n)))


def words(toks: list[str]) -> list[str]:
    """The tokens n-grams are made of: words, numbers and LaTeX commands, not lone symbols. Formulas share
    symbols all the time (`x^2 + 3x + 2` and `x^2 + 3x + 7`); counting them as words would flag clean math."""
    return [t for t in toks if t[-1].isalnum() or len(t) > 1]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the normalized text (empty when it has fewer than n words)."""
    return set(_grams(words(tokens(text)), n))


class Index:
    """The evaluation texts, normalized once, for O(length) look-ups of a training text.

    Holds the set of normalized eval texts (exact) and the set of n-grams of every eval text with at least
    n tokens; a look-up hashes the training text's own n-grams, so its cost does not grow with the number
    of evaluation texts."""

    def __init__(self, texts: Iterable[str], n: int = 8):
        if n < 1:
            raise R1Error(f"decontamination n-gram size must be at least 1, got {n}", hint="8 is the usual choice")
        self.n = n
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for text in texts:
            toks = tokens(text)
            if not toks:  # an empty eval text would otherwise match every empty training text
                continue
            self.exact.add(" ".join(toks))
            self.grams.update(_grams(words(toks), n))

    def hit(self, text: str) -> str | None:
        """Why `text` is contaminated: "exact", f"{n}-gram", or None when it is clean."""
        toks = tokens(text)
        if not toks:
            return None
        if " ".join(toks) in self.exact:
            return "exact"
        ws = words(toks)
        if len(ws) >= self.n and not self.grams.isdisjoint(_grams(ws, self.n)):
            return f"{self.n}-gram"
        return None


def field_text(value: Any) -> str | None:
    """The text to check in a field: a string as it is, a chat list as its messages' content joined by
    newlines (so an eval question pasted into any turn is found); anything else is not checked."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [m["content"] for m in value if isinstance(m, dict) and isinstance(m.get("content"), str)]
        return "\n".join(parts) if parts else None
    return None


def filter_rows(
    rows: list[dict[str, Any]], index: Index, fields: tuple[str, ...] = ("prompt",)
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(kept rows in their original order, report). A row goes when any of `fields` it has is contaminated;
    the report counts it once, under the first field's reason."""
    kept: list[dict[str, Any]] = []
    report: dict[str, Any] = {"checked": len(rows), "removed": 0, "exact": 0, "ngram": 0, "examples": []}
    for row in rows:
        reason, text = None, ""
        for field in fields:
            text = field_text(row.get(field)) or ""
            reason = index.hit(text) if text else None
            if reason:
                break
        if reason is None:
            kept.append(row)
            continue
        report["removed"] += 1
        report["exact" if reason == "exact" else "ngram"] += 1
        if len(report["examples"]) < 3:
            report["examples"].append(text[:80])
    return kept, report
