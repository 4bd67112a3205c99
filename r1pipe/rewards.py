"""Answer parsing and verification: pure functions over completion text, shared by rewards and evaluation.

R1's format is `<think>reasoning</think>` followed by the answer; r1pipe's tasks put the final answer in
`<answer>…</answer>`. Strict format and lenient answer extraction are kept apart on purpose: early RL gains
are often format learning, and an evaluation must be able to tell the two apart.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import re

from r1pipe.errors import R1Error, one_line

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


_GENERAL = re.compile(r"\A\s*(?:<think>((?:(?!</?think>|</?answer>).)*)</think>)?((?:(?!</?think>|</?answer>).)*)\Z", re.S)


def general_format(text: str) -> bool:
    """A general (non-verifiable) reply: at most one think part, first, then a non-empty reply with no tags."""
    m = _GENERAL.match(text)
    return m is not None and bool(m.group(2).strip())


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
    pred = extract_answer(completion)
    if pred is None and verifier == "math":
        pred = last_boxed(completion.rsplit("</think>", 1)[-1])
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
            key = parse_int(a)
            if key is None:
                continue
            same = next((g for g in groups if parse_int(g[0]) == key), None)
        else:
            same = next((g for g in groups if g[0] == a or math_equal(a, g[0], cache_gold=False)), None)
        if same is None:
            groups.append([a])
        else:
            same.append(a)
    return max(groups, key=len)[0] if groups else None  # max keeps the first of equal lengths


def is_correct(completion: str, gold: str, verifier: str = "integer") -> bool:
    """Does the completion's extracted answer equal the gold answer? verifier: integer | math.

    Lenient on purpose (strict format is counted apart): for math, an answer in a final \\boxed{} after the
    reasoning counts when there is no <answer> block, as public math benchmarks are usually answered."""
    pred = predicted_answer(completion, verifier)
    if pred is None:
        return False
    if verifier == "integer":
        p, g = parse_int(pred), parse_int(gold)
        return p is not None and p == g
    if verifier == "math":
        return math_equal(pred, gold)
    raise ValueError(f"unknown verifier {verifier!r} (integer | math)")


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


# An exponent that holds another exponent (9^{9^{9}}, 9^9^9) or has 8+ digits: sympy would compute the power
# exactly, for minutes and gigabytes, and no timeout can interrupt one C-level integer power.
_HUGE_POWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\d+\s*\^|\^\s*\{?\s*\d{8,}|\*\*\s*\(?[^()]*\*\*")


def too_big_to_verify(text: str) -> bool:
    """Whether an answer is too long or holds a power too big to check (it then counts as not equal)."""
    return len(text) > 2000 or bool(_HUGE_POWER.search(text))


def _boxed(text: str) -> str:
    # math-verify finds a bare number or expression most reliably when it is boxed.
    return text if "\\boxed" in text else f"\\boxed{{{text}}}"


# ----------------------------------------------------------------------------------------------------------
# Reward functions in TRL's signature: (completions, **columns) -> list[float | None]. `completions` are chat
# messages ([{"role": "assistant", "content": ...}]) or plain strings; dataset columns such as `answer` arrive
# as keyword lists. None means "does not apply to this row" (TRL then leaves it out of that row's sum).
# Each is registered under a stable name, which is also its name in TRL's logs (rewards/<name>/mean).


def completion_text(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # conversational: the assistant message(s)
        return "".join(m.get("content", "") for m in c if isinstance(m, dict))
    return str(c)


def response_prefix(turns) -> str:
    """The part of the reply the prompt already wrote (`task.response_prefix`: the turns end with an assistant
    turn, which the model continues), or "". Every completion r1pipe returns or scores is the whole reply, this
    prefix included, so strict format and answers read the same however the question was asked."""
    if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and turns[-1].get("role") == "assistant":
        return turns[-1].get("content", "")
    return ""


def whole_replies(completions, prompts) -> list:
    """Completions with their prompt's `response_prefix` put back in front: TRL hands rewards only what was
    sampled, and format and answers are judged on the whole reply."""
    if not prompts:
        return list(completions)
    out = []
    for c, p in zip(completions, prompts):
        prefix = response_prefix(p)
        if not prefix:
            out.append(c)
        elif isinstance(c, list):
            out.append([{"role": "assistant", "content": prefix + completion_text(c)}])
        else:
            out.append(prefix + c)
    return out


def accuracy(completions, answer=None, verifier=None, **_) -> list[float | None]:
    """1 if the extracted answer equals the gold one (integer exact match or math-verify), else 0."""
    n = len(completions)
    answers = answer if answer is not None else [None] * n
    verifiers = verifier if verifier is not None else ["integer"] * n
    out: list[float | None] = []
    for c, gold, v in zip(completions, answers, verifiers):
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            out.append(None)  # a general prompt: no verifiable answer
        else:
            out.append(1.0 if is_correct(completion_text(c), str(gold), v or "integer") else 0.0)
    return out


def format_reward(completions, answer=None, **_) -> list[float | None]:
    """1 for exactly `<think>…</think>` then `<answer>…</answer>` and nothing else, else 0. On a general prompt
    (a row whose `answer` is empty) the format is `general_format`: an optional think part, then a plain reply."""
    answers = answer if answer is not None else ["x"] * len(completions)
    return [
        1.0 if (strict_format if (gold or "").strip() else general_format)(completion_text(c)) else 0.0
        for c, gold in zip(completions, answers)
    ]


def tag_count(completions, **_) -> list[float | None]:
    """0.25 for each of the four tags that appears exactly once: partial credit on the way to the format."""
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    return [sum(0.25 for t in tags if completion_text(c).count(t) == 1) for c in completions]


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)  # runs of letters; digits and symbols belong to no language
_SCRIPTS = {
    "en": lambda ch: ch.isascii(),
    "zh": lambda ch: "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf",
    "ru": lambda ch: "\u0400" <= ch <= "\u04ff",
}


def language_share(text: str, language: str = "en") -> float:
    """Share of words written in the target language's script (R1's language-consistency reward).
    Text without words is consistent by definition (1.0)."""
    if language not in _SCRIPTS:
        raise R1Error(f"no script check for language {language!r}", hint=f"languages: {', '.join(_SCRIPTS)}")
    in_script = _SCRIPTS[language]
    words = _WORD.findall(text)
    if not words:
        return 1.0
    return sum(all(in_script(ch) for ch in w) for w in words) / len(words)


def language_consistency(completions, language=None, target_language: str = "en", **_) -> list[float | None]:
    """Share of chain-of-thought words in the target language (a `language` column overrides per row)."""
    langs = language if language is not None else [target_language] * len(completions)
    return [language_share(split_think(completion_text(c))[0], lang or target_language) for c, lang in zip(completions, langs)]


def _length(c, ids) -> int:
    return len(ids) if ids is not None else len(completion_text(c))


def length_cosine(
    completions, answer=None, verifier=None, completion_ids=None, max_length: int = 512,
    min_correct: float = 0.5, max_correct: float = 1.0, min_wrong: float = -1.0, max_wrong: float = -0.5, **_,
) -> list[float | None]:
    """Cosine-scaled length reward (Yeo et al. 2025): short correct answers earn most, long wrong ones lose
    least. Replaces accuracy when used, so weight accuracy 0 alongside it."""
    ok = accuracy(completions, answer=answer, verifier=verifier)
    ids = completion_ids or [None] * len(completions)
    out: list[float | None] = []
    for c, i, correct in zip(completions, ids, ok):
        if correct is None:
            out.append(None)
            continue
        frac = min(_length(c, i), max_length) / max_length
        lo, hi = (min_correct, max_correct) if correct else (max_wrong, min_wrong)
        out.append(lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * frac)))
    return out


def repetition(completions, ngram: int = 3, max_penalty: float = -1.0, **_) -> list[float | None]:
    """Penalty for repeated word n-grams: max_penalty x (1 - unique/total). 0 for text shorter than n."""
    out: list[float | None] = []
    for c in completions:
        words = completion_text(c).split()
        grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
        out.append(0.0 if not grams else max_penalty * (1 - len(set(grams)) / len(grams)))
    return out


def overlong(completions, completion_ids=None, max_length: int = 512, buffer: int = 64, **_) -> list[float | None]:
    """DAPO's soft overlong punishment: 0 up to max_length - buffer, then linear down to -1 at max_length."""
    ids = completion_ids or [None] * len(completions)
    out: list[float | None] = []
    for c, i in zip(completions, ids):
        excess = _length(c, i) - (max_length - buffer)
        out.append(0.0 if excess <= 0 else max(-1.0, -excess / buffer))
    return out


REGISTRY = {
    "accuracy": accuracy,
    "format": format_reward,
    "tag_count": tag_count,
    "language_consistency": language_consistency,
    "length_cosine": length_cosine,
    "repetition": repetition,
    "overlong": overlong,
}


def build(spec: dict[str, dict]) -> tuple[list, list[float]]:
    """Reward functions and weights from config ({name: {weight: w, **params}}), named for TRL's logs.
    A reward set to null is left out (how a preset removes one it inherits)."""
    funcs = []
    for name, params in spec.items():
        if params is None:
            continue
        fn = _lookup(name, params.get("function"))
        funcs.append(_bind(name, fn, {k: v for k, v in params.items() if k not in ("weight", "function")}))
    if not funcs:
        raise R1Error("no reward functions configured", hint="set rewards: {accuracy: {weight: 1.0}, ...}")
    return funcs, weights(spec)


def weights(spec: dict[str, dict]) -> list[float]:
    """One weight per configured reward (default 1.0), in the order build() returns the functions."""
    return [float(p.get("weight", 1.0)) for p in spec.values() if p is not None]


def _lookup(name: str, function: str | None):
    """A registered reward, or your own: `my_reward: {function: "package.module:func", weight: 1.0}`
    (TRL's signature, imported from your code; `name` is what the logs call it)."""
    if function is None:
        if name in REGISTRY:
            return REGISTRY[name]
        raise R1Error(f"unknown reward {name!r}", hint=f"rewards: {', '.join(REGISTRY)}, or set function: module:func")
    import importlib

    module, _, attr = function.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise R1Error(f"cannot import reward {name!r} from {function!r}: {e}", hint="is the module on PYTHONPATH?") from e


def _bind(name: str, fn, params: dict):
    import inspect

    accepted = set(inspect.signature(fn).parameters)
    unknown = set(params) - accepted
    if unknown:
        raise R1Error(f"reward {name} has no parameter {sorted(unknown)[0]!r}", hint=f"it takes: {sorted(accepted - {'completions', '_'})}")

    where = getattr(fn, "__module__", "?") + ":" + getattr(fn, "__qualname__", name)

    def reward(completions, **kwargs):
        # TRL calls this deep inside a training step: a failure here must still say which reward and why.
        try:
            out = fn(whole_replies(completions, kwargs.get("prompts")), **{**kwargs, **params})
        except R1Error:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised as one line naming the reward
            raise R1Error(f"reward {name} ({where}) raised {type(e).__name__}: {one_line(e, 200)}",
                          hint="fix the function; rerunning resumes the stage from its last checkpoint") from e
        if not isinstance(out, (list, tuple)) or len(out) != len(completions) or not all(
            v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)) for v in out
        ):
            got = f"{type(out).__name__} of {len(out)}" if isinstance(out, (list, tuple)) else type(out).__name__
            raise R1Error(f"reward {name} ({where}) returned {got} for {len(completions)} completions",
                          hint="a reward returns one float (or None) per completion")
        return out

    reward.__name__ = name
    return reward
