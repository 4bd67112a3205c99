"""Answer parsing and the integer and math checks: pure functions over completion text, shared by rewards,
verifiers, filters and evaluation.

R1's format is `<think>reasoning</think>` followed by the answer; r1pipe's tasks put the final answer in
`<answer>…</answer>`. Strict format and lenient answer extraction are kept apart on purpose: early RL gains
are often format learning, and an evaluation must be able to tell the two apart.
"""

from __future__ import annotations

import functools
import logging
import re
import textwrap
import unicodedata

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_STRICT = re.compile(
    r"\A\s*<think>((?:(?!</?think>|</?answer>).)*)</think>\s*<answer>((?:(?!</?answer>|</?think>).)*)</answer>\s*\Z",
    re.S,
)
_INT = re.compile(r"[+-]?\d+")


def _unclosed_think(text: str) -> bool:
    return text.rfind("<think>") > text.rfind("</think>")


def answer_part(text: str) -> str | None:
    """What follows the reasoning: the text after the last </think>; the whole text when there is no think part;
    None when a <think> never closes. A reply cut off mid-thought (at max_completion_length) has not answered: a
    draft answer in it must not earn what closing the tag would lose."""
    return None if _unclosed_think(text) else text.rsplit("</think>", 1)[-1]


def extract_answer(text: str) -> str | None:
    """Lenient: the last complete <answer> block of the answer part (a bare <answer> without any think part counts;
    one inside a think part, closed or not, does not)."""
    part = answer_part(text)
    found = _ANSWER.findall(part) if part is not None else []
    return found[-1].strip() if found else None


def strict_format(text: str) -> bool:
    """Exactly one <think>…</think>, then exactly one <answer>…</answer>, nothing else around them."""
    return _STRICT.match(text) is not None


_GENERAL = re.compile(r"\A\s*(?:<think>((?:(?!</?think>|</?answer>).)*)</think>)?((?:(?!</?think>|</?answer>).)*)\Z", re.S)


def general_format(text: str) -> bool:
    """A general (non-verifiable) reply: at most one think part, first, then a non-empty reply with no tags."""
    m = _GENERAL.match(text)
    return m is not None and bool(m.group(2).strip())


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, summary): the text inside <think> and the text after </think>. Without a </think> it is
    ("", text): no finished reasoning, all of it summary (what rejection sampling's readability rules, the
    summary a preference model judges and evaluation's think/answer lengths read). The chain of thought of a
    reply cut off mid-thought is `reasoning(text)`."""
    if "</think>" not in text:
        return "", text
    head, tail = text.split("</think>", 1)
    return head.replace("<think>", "", 1), tail


_THINK_TAG = re.compile(r"</?think>")


def reasoning(text: str) -> str:
    """The chain of thought: split_think's reasoning, or when a <think> never closes, everything after it (a
    reply cut off mid-thought is reasoning to its end, so cutting it off cannot hide what it holds). "" when
    there is no think part."""
    if _unclosed_think(text):
        return _THINK_TAG.sub(" ", text.split("<think>", 1)[1])
    return split_think(text)[0]


def int_key(text: str | None) -> str | None:
    """An integer answer in one spelling, for comparing: sign and digits without leading zeros ("-0" is "0",
    "05" and "5,000" read as 5 and 5000), or None when it is no integer. Text, not int(): Python refuses to
    convert more than 4,300 digits, and one degenerate sample must not crash a GRPO step."""
    if text is None:
        return None
    cleaned = text.strip().replace(",", "").replace(" ", "")
    if not _INT.fullmatch(cleaned):
        return None
    negative, digits = cleaned[0] == "-", cleaned.lstrip("+-")
    if not digits.isascii():  # \d is any script's digits, as int() reads them: "١٢" is 12
        digits = "".join(str(unicodedata.decimal(d)) for d in digits)
    digits = digits.lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def parse_int(text: str | None) -> int | None:
    """The integer an answer gives, or None (also beyond int()'s 4,300 digits: compare with int_key instead)."""
    key = int_key(text)
    try:
        return None if key is None else int(key)
    except ValueError:
        return None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces allowed): how most math models give answers."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None  # unclosed: cut off by the token limit


def predicted_answer(completion: str, verifier: str = "integer") -> str | None:
    """The answer a completion gives: its last <answer> block after the reasoning, or for math a final
    \\boxed{} when there is none. What accuracy checks and what majority voting counts."""
    part = answer_part(completion)
    if part is None:
        return None
    if verifier == "code":  # the program a code reply gives
        return final_code(completion)
    pred = extract_answer(completion)
    if pred is None and verifier == "math":
        pred = last_boxed(part)
    return pred


def majority_answer(answers: list[str | None], verifier: str = "integer") -> str | None:
    """cons@k's vote: the answer most of `answers` give, counting equal answers as one ("05" and "5", "5,000" and
    "5000" for integers; math-verify's equivalence for math, so \\frac12 and 0.5 vote together). None, and for
    integers an answer that is no integer, does not vote; a tie goes to the answer given first. Returns one of
    the answers as written."""
    groups: list[list[str]] = []  # each: the answers equal to its first one
    for a in answers:
        if a is None:
            continue
        if verifier == "integer":
            key = int_key(a)
            if key is None:
                continue
            same = next((g for g in groups if int_key(g[0]) == key), None)
        elif verifier == "math":
            same = next((g for g in groups if g[0] == a or math_equal(a, g[0], cache_gold=False)), None)
        else:  # code, or yours: the same text (two programs are not compared by running them)
            same = next((g for g in groups if g[0].strip() == a.strip()), None)
        if same is None:
            groups.append([a])
        else:
            same.append(a)
    return max(groups, key=len)[0] if groups else None  # max keeps the first of equal lengths


def matches(completion: str, gold: str, verifier: str = "integer") -> bool:
    """Does the completion's answer equal the gold answer? The integer and math verifiers (r1pipe/verifiers.py
    has every verifier by name).

    Lenient on purpose (strict format is counted apart): for math, an answer in a final \\boxed{} after the
    reasoning counts when there is no <answer> block, as public math benchmarks are usually answered."""
    pred = predicted_answer(completion, verifier)
    if pred is None:
        return False
    if verifier == "integer":
        p = int_key(pred)
        return p is not None and p == int_key(gold)
    if verifier == "math":
        return math_equal(pred, gold)
    raise ValueError(f"matches() checks integer and math answers, not {verifier!r}")


def math_equal(pred: str, gold: str, cache_gold: bool = True) -> bool:
    if too_big_to_verify(pred) or too_big_to_verify(gold):
        return False
    import threading

    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread can take; elsewhere they are off, and
    # too_big_to_verify is what stands between a sampled power tower and a stalled training step.
    t = 5 if threading.current_thread() is threading.main_thread() else None
    if t is None:
        logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" on every call
    # GRPO checks every one of a group's completions against the same gold answer: parse it once
    gold_parsed = _parsed_gold(gold, t) if cache_gold else parse(_boxed(gold), parsing_timeout=t)
    pred_parsed = parse(_boxed(pred), parsing_timeout=t)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=t))


@functools.lru_cache(maxsize=1 << 16)
def _parsed_gold(gold: str, timeout: int | None):
    from math_verify import parse

    return parse(_boxed(gold), parsing_timeout=timeout)


# Numbers sympy would compute exactly, for seconds to minutes and gigabytes; no timeout can interrupt one
# C-level integer operation, and math-verify's own timeout works in the main thread only. Times are one
# math_equal(answer, "5") in a worker thread, unguarded:
_TOO_BIG = re.compile("|".join((
    r"\^\s*\{[^{}]*\^", r"\^\s*\d+\s*\^", r"\*\*\s*\(?[^()]*\*\*",  # a power tower: 9^{9^{9}}, 9^9^9, 2**(3**99)
    r"\^\s*\{?\s*\d{7,}",  # an exponent of 7+ digits: 10^{9999999} 5.8 s (10^{999999} 0.2 s)
    r"\d{6,}\s*!",  # a factorial of 6+ digits: 300000! 0.5 s, 999999! 3.8 s, 9999999! over 100 s
    r"!(?:\s|\\right|[)\]}])*!",  # a factorial of a factorial: math-verify reads 10!! as (10!)!, 33 s
    r"\^[^!]{0,20}?[)}]\s*!",  # a factorial of a power: (10^{7})!, over 40 s
    r"\\[dt]?binom\s*\{?\s*\d{6,}",  # \binom{1000000}{500000}: over 40 s (\binom{100000}{50000} 0.4 s)
    r"\\Gamma\s*(?:\\left)?\s*[({]\s*\d{6,}",  # \Gamma(1000000): 3.7 s
)))


def too_big_to_verify(text: str) -> bool:
    """Whether an answer is too long or holds a number too big to check (it then counts as not equal)."""
    return len(text) > 2000 or bool(_TOO_BIG.search(text))


def _boxed(text: str) -> str:
    # math-verify finds a bare number or expression most reliably when it is boxed.
    return text if "\\boxed" in text else f"\\boxed{{{text}}}"


# A fence opens a line: ``` (or more backticks), an optional language, anything after it (```python title=x);
# it closes at a line of at least as many backticks. Markdown's rule, so a ``` inside a string of the code does
# not end the block, and a ```bash block before the program is not paired with its fence.
_FENCE = re.compile(r"^[ \t]*(`{3,})[ \t]*([\w+.-]*)[^\n]*$")
_PYTHON = ("", "python", "py", "python3", "py3")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a text, as (language, code), the code dedented; an unclosed one is left out."""
    lines = text.replace("\r\n", "\n").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            close = re.compile(rf"[ \t]*`{{{len(m.group(1))},}}[ \t]*")
            end = next((j for j in range(i + 1, len(lines)) if close.fullmatch(lines[j])), None)
            if end is None:
                break
            out.append((m.group(2).lower(), textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"))
            i = end
        i += 1
    return out


def final_code(text: str) -> str | None:
    """The program a code reply gives: the last Python (or unlabelled) fenced block of its answer part (inside
    <answer> when there is one), or the <answer> itself when it holds no fence. None for a reply cut off
    mid-thought, or one with no code."""
    part = answer_part(text)
    if part is None:
        return None
    answers = _ANSWER.findall(part)
    if answers:
        part = answers[-1]
    # "<answer>```python" on one line: the fence still opens a line of the answer
    blocks = [code for lang, code in code_blocks(part.strip()) if lang in _PYTHON]
    if blocks:
        return blocks[-1]
    if answers and part.strip() and "```" not in part:
        return part.strip()
    return None
