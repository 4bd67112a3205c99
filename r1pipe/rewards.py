"""Answer parsing and verification: pure functions over completion text, shared by rewards and evaluation.

R1's format is `<think>reasoning</think>` followed by the answer; r1pipe's tasks put the final answer in
`<answer>…</answer>`. Strict format and lenient answer extraction are kept apart on purpose: early RL gains
are often format learning, and an evaluation must be able to tell the two apart.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_STRICT = re.compile(
    r"\A\s*<think>((?:(?!</?think>|</?answer>).)*)</think>\s*<answer>((?:(?!</?answer>|</?think>).)*)</answer>\s*\Z",
    re.S,
)
_INT = re.compile(r"[+-]?\d+")


def extract_answer(text: str) -> str | None:
    """Lenient: the last complete <answer> block after </think> (or anywhere, if there is no </think>)."""
    tail = text.rsplit("</think>", 1)[-1]
    found = _ANSWER.findall(tail)
    return found[-1].strip() if found else None


def strict_format(text: str) -> bool:
    """Exactly one <think>…</think>, then exactly one <answer>…</answer>, nothing else around them."""
    return _STRICT.match(text) is not None


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, summary): the text inside <think> and the text after </think>."""
    if "</think>" not in text:
        return "", text
    head, tail = text.split("</think>", 1)
    return head.replace("<think>", "", 1), tail


def parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    cleaned = text.strip().replace(",", "").replace(" ", "")
    return int(cleaned) if _INT.fullmatch(cleaned) else None


def is_correct(completion: str, gold: str, verifier: str = "integer") -> bool:
    """Does the completion's extracted answer equal the gold answer? verifier: integer | math."""
    pred = extract_answer(completion)
    if pred is None:
        return False
    if verifier == "integer":
        p, g = parse_int(pred), parse_int(gold)
        return p is not None and p == g
    if verifier == "math":
        return math_equal(pred, gold)
    raise ValueError(f"unknown verifier {verifier!r} (integer | math)")


def math_equal(pred: str, gold: str) -> bool:
    # Timeouts off: math-verify's default uses signals, which fail outside the main thread.
    from math_verify import parse, verify

    gold_parsed = parse(_boxed(gold), parsing_timeout=None)
    pred_parsed = parse(_boxed(pred), parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _boxed(text: str) -> str:
    # math-verify finds a bare number or expression most reliably when it is boxed.
    return text if "\\boxed" in text else f"\\boxed{{{text}}}"
