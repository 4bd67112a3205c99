"""Reward functions in TRL's signature, and how a config names and weights them. Answers are parsed in
r1pipe/answers.py and checked by the verifiers in r1pipe/verifiers.py; the parsing names are re-exported here,
where rewards, filters and evaluation have always read them.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping

from r1pipe import verifiers
from r1pipe.answers import (  # re-exported: what rewards, filters and evaluation read here
    answer_part,
    extract_answer,
    final_code,
    general_format,
    int_key,
    last_boxed,
    majority_answer,
    math_equal,
    parse_int,
    predicted_answer,
    reasoning,
    split_think,
    strict_format,
    too_big_to_verify,
)
from r1pipe.errors import R1Error, one_line

__all__ = [  # the parsing names included
    "COLUMNS", "REGISTRY", "accuracy", "answer_part", "build", "completion_text", "extract_answer",
    "final_code", "format_reward", "general_format", "int_key", "is_correct", "language_consistency",
    "language_share", "last_boxed", "length_cosine", "majority_answer", "math_equal", "overlong", "parse_int",
    "predicted_answer", "reasoning", "repetition", "response_prefix", "split_think", "strict_format",
    "tag_count", "too_big_to_verify", "weights", "whole_replies",
]


def is_correct(completion: str, gold: str, verifier: str = "integer") -> bool:
    """Is the completion's answer right by `verifier`: integer | math | code | yours (`package.module:function`,
    r1pipe/verifiers.py)?"""
    return bool(verifiers.get(verifier)(completion, gold))


# ----------------------------------------------------------------------------------------------------------
# Reward functions in TRL's signature: (completions, **columns) -> list[float | None]. `completions` are chat
# messages ([{"role": "assistant", "content": ...}]) or plain strings; dataset columns such as `answer` arrive
# as keyword lists. None means "does not apply to this row" (TRL then leaves it out of that row's sum).
# Each is registered under a stable name, which is also its name in TRL's logs (rewards/<name>/mean).


def completion_text(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # conversational: the assistant message(s)
        return "".join(_message_text(m) for m in c if isinstance(m, dict))
    return str(c)


# A tokenizer with a response template makes TRL parse each reply: the think part moves to a field of its own
# (`thinking` in LFM2.5's template), without its tags and the whitespace around it.
_THINK_FIELDS = ("reasoning_content", "thinking")


def _message_text(m: dict) -> str:
    # Put back in front, a well-formed reply reads as one again for format and language_consistency. A cut-off
    # reply parses as reasoning and no content: it reads back closed, with nothing after it, so it has no answer.
    content = m.get("content") or ""
    think = next((m[k] for k in _THINK_FIELDS if m.get(k) is not None), None)
    return content if think is None else f"<think>{think}</think>{content}"


def response_prefix(turns) -> str:
    """The part of the reply the prompt already wrote (`task.response_prefix`: the turns end with an assistant
    turn, which the model continues), or "". Every completion r1pipe returns or scores is the whole reply, this
    prefix included, so strict format and answers read the same however the question was asked."""
    if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and turns[-1].get("role") == "assistant":
        return turns[-1].get("content", "")
    return ""


def whole_replies(completions, prompts) -> list:
    """Completions with their prompt's `response_prefix` put back in front: TRL hands rewards only what was
    sampled, and format and answers are judged on the whole reply. A message TRL parsed is whole already: its
    parser reads the reply with the prompt before it, so a prefilled "<think>" comes back as its think field."""
    if not prompts:
        return list(completions)
    out = []
    for c, p in zip(completions, prompts):
        prefix = response_prefix(p)
        if not prefix or _parsed(c):
            out.append(c)
        elif isinstance(c, list):
            out.append([{"role": "assistant", "content": prefix + completion_text(c)}])
        else:
            out.append(prefix + c)
    return out


def _parsed(c) -> bool:
    return isinstance(c, list) and any(isinstance(m, dict) and any(k in m for k in _THINK_FIELDS) for m in c)


def accuracy(completions, answer=None, verifier=None, **_) -> list[float | None]:
    """1 if the completion's answer is right by its row's verifier (r1pipe/verifiers.py), else 0. A batch is
    checked at once: a code task's programs run in parallel."""
    n = len(completions)
    answers = answer if answer is not None else [None] * n
    names = verifier if verifier is not None else ["integer"] * n
    # a general prompt (no verifiable answer) gets None: TRL leaves it out of that row's sum
    rows = [i for i, gold in enumerate(answers) if not (gold is None or (isinstance(gold, str) and not gold.strip()))]
    golds = [a if isinstance(a, (str, list)) else str(a) for a in answers]  # a list of tests stays a list
    ok = verifiers.verify_many([completion_text(completions[i]) for i in rows], [golds[i] for i in rows],
                               [names[i] or "integer" for i in rows])
    out: list[float | None] = [None] * n
    for i, passed in zip(rows, ok):
        out[i] = 1.0 if passed else 0.0
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
    """Share of chain-of-thought words in the target language (a `language` column overrides per row). A think
    part that never closes is reasoning to the end of the text."""
    langs = language if language is not None else [target_language] * len(completions)
    return [language_share(reasoning(completion_text(c)), lang or target_language) for c, lang in zip(completions, langs)]


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


# Scripts written without spaces between words (Chinese, Japanese): each character is a unit of its own.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNIT = re.compile(rf"[{_UNSPACED}]|[^\W{_UNSPACED}]+|[^\w\s]")


def _units(text: str) -> list[str]:
    """What repetition counts in text: runs of letters and digits, single symbols and single characters of
    unspaced scripts, so "7+5=12" written over and over without spaces, or Chinese, repeats as it would in tokens
    (whitespace-split words would see one long word, or none)."""
    return _UNIT.findall(text)


def repetition(completions, completion_ids=None, ngram: int = 3, max_penalty: float = -1.0, **_) -> list[float | None]:
    """Penalty for repeated n-grams: max_penalty x (1 - unique/total), 0 for a completion shorter than n. The
    n-grams are of token ids, which TRL passes (as its own repetition reward counts them: any language, any
    spacing), or of the text's `_units` when there are none."""
    ids = completion_ids or [None] * len(completions)
    out: list[float | None] = []
    for c, i in zip(completions, ids):
        units = list(i) if i is not None else _units(completion_text(c))
        grams = list(zip(*(units[k:] for k in range(ngram))))
        out.append(0.0 if not grams else max_penalty * (1 - len(set(grams)) / len(grams)))
    return out


def overlong(completions, completion_ids=None, max_length: int = 512, buffer: int = 64, **_) -> list[float | None]:
    """DAPO's soft overlong punishment: 0 up to max_length - buffer, then linear down to -1 at max_length, -1
    beyond. buffer 0 is the hard cut-off (-1 past max_length, else 0)."""
    ids = completion_ids or [None] * len(completions)
    out: list[float | None] = []
    for c, i in zip(completions, ids):
        n, start = _length(c, i), max_length - buffer
        out.append(0.0 if n <= start else -1.0 if n > max_length else -(n - start) / buffer)
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

# What TRL passes every reward on each call: its own arguments, then every dataset column (r1pipe's rows carry
# answer, verifier, kind; a source's extra fields add language, tests...). A setting by one of these names would
# replace the per-row list with one value, which a reward then reads letter by letter.
COLUMNS = frozenset({"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                     "environments", "answer", "verifier", "kind", "language", "tests", "solution"})


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What build() checks of each registered reward's settings, on the values a run would use (the config's over the
# defaults): (setting, test(value, all settings), what it must be). Types come before the tests that compare.
_RULES: dict[str, list[tuple[str, Callable[[object, dict], bool], str]]] = {
    "language_consistency": [
        ("target_language", lambda v, p: isinstance(v, str) and v in _SCRIPTS, f"must be one of {', '.join(_SCRIPTS)}"),
    ],
    "length_cosine": [
        ("max_length", lambda v, p: _whole(v) and v >= 1, "must be a whole number >= 1"),
        *[(k, lambda v, p: _number(v), "must be a number") for k in ("min_correct", "max_correct", "min_wrong",
                                                                      "max_wrong")],
        ("max_correct", lambda v, p: v >= p["min_correct"], "must be >= min_correct ({min_correct})"),
        ("max_wrong", lambda v, p: v >= p["min_wrong"], "must be >= min_wrong ({min_wrong})"),
        ("max_wrong", lambda v, p: v <= p["min_correct"],
         "must be <= min_correct ({min_correct}): else a wrong answer outscores a right one"),
    ],
    "repetition": [
        ("ngram", lambda v, p: _whole(v) and v >= 1, "must be a whole number >= 1"),
        ("max_penalty", lambda v, p: _number(v) and v <= 0, "must be a number <= 0 (above 0 it rewards repeating)"),
    ],
    "overlong": [
        ("max_length", lambda v, p: _whole(v) and v >= 1, "must be a whole number >= 1"),
        ("buffer", lambda v, p: _whole(v) and 0 <= v <= p["max_length"],
         "must be a whole number from 0 (a hard cut-off) to max_length ({max_length})"),
    ],
}


def build(spec: dict[str, dict], columns=()) -> tuple[list, list[float]]:
    """Reward functions and weights from config ({name: {weight: w, **params}}), named for TRL's logs.
    A reward set to null is left out (how a preset removes one it inherits). `columns`: the extra columns the
    stage's data carries (data.extra_fields), which TRL passes too and no setting may be named.

    Raises:
        R1Error: an unknown reward or setting, a setting named like a per-row column, a setting of the wrong
            type or out of range, a weight that is no number. Stages call this when their config is checked,
            before any model loads."""
    funcs = []
    for name, params in spec.items():
        if params is None:
            continue
        function = _settings(name, params).get("function")
        fn = _lookup(name, function)
        settings = {k: v for k, v in params.items() if k not in ("weight", "function")}
        _check(name, fn, settings, _RULES.get(name, []) if function is None else [], COLUMNS | set(columns))
        funcs.append(_bind(name, fn, settings))
    if not funcs:
        raise R1Error("no reward functions configured", hint="set rewards: {accuracy: {weight: 1.0}, ...}")
    return funcs, weights(spec)


def weights(spec: dict[str, dict]) -> list[float]:
    """One weight per configured reward (default 1.0), in the order build() returns the functions."""
    out = []
    for name, params in spec.items():
        if params is None:
            continue
        w = _settings(name, params).get("weight", 1.0)
        if not _number(w):
            raise R1Error(f"reward {name}: weight={w!r} must be a number", hint="e.g. weight: 1.0")
        out.append(float(w))
    return out


def _settings(name: str, params) -> Mapping:
    if not isinstance(params, Mapping):
        raise R1Error(f"reward {name}: expected its settings, got {params!r}",
                      hint=f"e.g. {name}: {{weight: 1.0}}")
    return params


def _lookup(name: str, function: str | None):
    """A registered reward, or your own: `my_reward: {function: "package.module:func", weight: 1.0}`
    (TRL's signature, imported from your code; `name` is what the logs call it)."""
    if function is None:
        if name in REGISTRY:
            return REGISTRY[name]
        raise R1Error(f"unknown reward {name!r}", hint=f"rewards: {', '.join(REGISTRY)}, or set function: module:func")
    if not isinstance(function, str) or ":" not in function:
        raise R1Error(f"reward {name}: function={function!r} must be 'package.module:function'")
    return verifiers.user_function(function, f"reward {name!r} from {function!r}", f"reward {name}: {function!r}",
                                   "a reward is f(completions, **columns)")


def _check(name: str, fn, settings: dict, rules: list, columns=COLUMNS) -> None:
    """One line for the first setting build() refuses: a per-row column, a parameter fn does not take, a rule."""
    import inspect

    params = inspect.signature(fn).parameters
    for key in settings:
        if key in columns:
            also = "; for one language, set target_language" if key == "language" else ""
            raise R1Error(f"reward {name}: {key} is a per-row column TRL passes from the dataset, not a setting",
                          hint="put it in the data" + also)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    accepted = {k for k, p in params.items() if p.kind not in variadic} - columns
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise R1Error(f"reward {name} has no parameter {unknown[0]!r}",
                      hint=f"it takes: {', '.join(sorted(accepted)) or 'none'}")
    values = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty} | settings
    for key, ok, must in rules:
        if not ok(values[key], values):
            raise R1Error(f"reward {name}: {key}={values[key]!r} {must.format_map(values)}")


def _bind(name: str, fn, params: dict):
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
