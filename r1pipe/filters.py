"""Rejection-sampling filters (DeepSeek-R1 §2.3.3): pure functions from a sample to the reason it is dropped.

R1 keeps only correct responses and drops chain-of-thought "with mixed languages, long paragraphs, and code
blocks". Each check returns None to keep the sample or a short reason, which is recorded in the dataset, so
every dropped row can be traced to the rule that dropped it.
"""

from __future__ import annotations

from typing import Any

from r1pipe import rewards, verifiers

REASONS = ("no_answer", "wrong", "format", "mixed_language", "long_paragraph", "code_block", "duplicate", "over_cap")


def readability(text: str, cfg: dict[str, Any]) -> str | None:
    """R1's readability rules on the chain of thought; each is off when its setting is null/false."""
    think, _ = rewards.split_think(text)
    if cfg.get("min_language_share") is not None:
        if rewards.language_share(think, cfg.get("language", "en")) < cfg["min_language_share"]:
            return "mixed_language"
    if cfg.get("max_paragraph_chars"):
        if any(len(p) > cfg["max_paragraph_chars"] for p in think.split("\n\n")):
            return "long_paragraph"
    if cfg.get("drop_code_blocks") and "```" in think:  # in the reasoning: a code task answers with a code block
        return "code_block"
    return None


def judge(text: str, gold: str, verifier: str, cfg: dict[str, Any], correct: bool | None = None) -> str | None:
    """Why a sample is dropped (None: keep). Correctness first, then format, then readability. `correct`: the
    verifier's verdict, when the caller already has it."""
    if (verifiers.final_code(text) if verifier == "code" else rewards.extract_answer(text)) is None:
        return "no_answer"
    if not (verifiers.verify_many([text], [gold], verifier)[0] if correct is None else correct):
        return "wrong"
    if cfg.get("require_format", True) and not rewards.strict_format(text):
        return "format"
    return readability(text, cfg)


def select(samples: list[str], gold: str, verifier: str, cfg: dict[str, Any],
           correct: list[bool] | None = None) -> list[str]:
    """One reason per sample of one prompt ("kept" for the survivors): exact duplicates of a kept sample are
    dropped, and at most `max_per_prompt` are kept. `correct`: the verifier's verdicts, when already known (a
    caller that checks many prompts' samples in one batch)."""
    if correct is None:
        correct = verifiers.verify_many(samples, [gold] * len(samples), verifier)
    reasons, seen, kept = [], set(), 0
    cap = cfg.get("max_per_prompt")
    for text, ok in zip(samples, correct):
        reason = judge(text, gold, verifier, cfg, correct=ok)
        if reason is None and cfg.get("dedupe", True) and text.strip() in seen:
            reason = "duplicate"
        if reason is None and cap is not None and kept >= cap:
            reason = "over_cap"
        if reason is None:
            seen.add(text.strip())
            kept += 1
        reasons.append(reason or "kept")
    return reasons
