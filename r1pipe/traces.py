"""Reasoning traces from a model: sample, verify, filter, and write a dataset TRL trains on.

What rejection_sampling (the RL model's samples, for the second SFT) and distill (the final teacher's samples,
for a student) share. A model samples k completions per prompt with the generation engine (batched, resumable
in shards); the verifier and R1's readability rules decide which survive (`r1pipe/filters.py`); non-reasoning
rows are mixed in; the result is TRL's conversational format with provenance columns, and every dropped sample
is kept with the reason it was dropped.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from r1pipe import data, filters, rewards, verifiers
from r1pipe.errors import R1Error

log = logging.getLogger("r1pipe")


def validate_sampling(stage: str, s: dict[str, Any], filters_cfg: dict[str, Any]) -> None:
    """Checks that need no model: sampling settings, backend, filter language."""
    from r1pipe.rewards import language_share

    for key in ("backend", "k", "temperature", "top_p", "max_new_tokens", "batch_size", "shard_size"):
        if key not in s:
            raise R1Error(f"{stage}.sampling.{key} is missing", hint=f"see conf/stage/{stage}.yaml")
    if s["backend"] not in ("transformers", "vllm"):
        raise R1Error(f"{stage}.sampling.backend={s['backend']!r}", hint="use transformers or vllm")
    for key in ("k", "batch_size", "shard_size", "max_new_tokens"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise R1Error(f"{stage}.sampling.{key}={s[key]!r} must be a positive integer")
    language_share("", filters_cfg.get("language", "en"))  # an unknown language fails here, not mid-run


def dataset(ctx, source: str, rows: list[dict[str, str]], save: bool = True) -> tuple[list[dict[str, Any]], dict]:
    """R1's trace dataset from `source`'s model: sample and judge k completions per prompt, mix in the
    non-reasoning rows, shuffle, and write outputs `data` (train.parquet) and `rejected` (every dropped sample
    with its reason). `save=False`: the same rows, nothing written (the other ranks of a launched stage).
    Returns the training rows and the manifest's statistics."""
    cfg = ctx.config
    kept, rejected, rate = sample_and_filter(ctx, source, rows, cfg)
    mix = non_reasoning(cfg["non_reasoning"], len(kept), ctx.seed,
                        load=lambda src, need: ctx.load_rows(src, need, "non_reasoning"))
    samples = len(rows) * cfg["sampling"]["k"]
    train = _write(ctx.name, kept, rejected, mix, ctx.seed, ctx.output("data"),
                   ctx.output("rejected", "rejected.parquet"), cfg["min_kept"], samples, save=save)
    return train, _stats(rows, samples, kept, rejected, mix, train, rate)


def sample_and_filter(ctx, source: str, rows: list[dict[str, str]], cfg: dict[str, Any]):
    """Sample `source`'s model on `rows` and judge every sample. Returns (kept, rejected, samples_per_s)."""
    from r1pipe.generation import Sampling, generate_sharded, make_engine

    s = cfg["sampling"]
    sampling = Sampling(
        n=s["k"], temperature=s["temperature"], top_p=s["top_p"], max_new_tokens=s["max_new_tokens"],
        batch_size=s["batch_size"], seed=ctx.seed,
    )
    engine = make_engine(
        ctx.parent_output(source, "model"), backend=s["backend"], dtype=s.get("dtype") or cfg.get("dtype", "float32"),
        trust_remote_code=ctx.trust_remote_code,
    )
    completions, rate = generate_sharded(
        engine, [data.ask(r) for r in rows], sampling, ctx.dir / "shards", s["shard_size"], log=log
    )
    source_fp = ctx.parent_manifests[source]["fingerprint"]
    language = cfg["filters"].get("language", "en")
    kept, rejected = [], []
    # every sample checked in one batch: a code task's programs run in parallel
    # a row's own verifier, when the source maps a verifier column (math and code prompts in one dataset)
    names = [verifiers.check_name(row.get("verifier") or cfg["verifier"], f"{ctx.name}: a row's verifier")
             for row in rows]
    verdicts = verifiers.verify_groups(completions, [row["answer"] for row in rows], names)
    for pid, (row, comps, name, correct) in enumerate(zip(rows, completions, names, verdicts)):
        reasons = filters.select(comps, row["answer"], name, cfg["filters"], correct=correct)
        for j, (text, reason) in enumerate(zip(comps, reasons)):
            rec = {
                "messages": data.chat(row) + [{"role": "assistant", "content": text}],
                "source": "reasoning",
                "prompt_id": pid,
                "sample_index": j,
                "source_stage": source,
                "source_fingerprint": source_fp,
                "answer": row["answer"],
                "reward_accuracy": float(correct[j]),
                "reward_format": float(rewards.strict_format(text)),
                "reward_language": rewards.language_share(rewards.reasoning(text), language),
                "filter_reason": reason,
            }
            (kept if reason == "kept" else rejected).append(rec)
    return kept, rejected, rate


def _write(stage: str, kept, rejected, mix, seed: int, data_dir: Path, rejected_path: Path | None, min_kept: int,
          samples: int, save: bool = True) -> list[dict[str, Any]]:
    """Shuffle kept + non-reasoning rows into `data_dir/train.parquet`; dropped samples to `rejected_path`.
    `save=False`: the same rows, nothing written (the other ranks of a launched stage)."""
    from datasets import Dataset

    if len(kept) < min_kept:
        raise R1Error(
            f"{stage}: {len(kept)} of {samples} samples passed the filters, min_kept is {min_kept}",
            hint="sample more (sampling.k), loosen filters, or check the source model's accuracy",
        )
    train = kept + mix
    random.Random(seed).shuffle(train)
    if not save:
        return train
    data_dir.mkdir(parents=True, exist_ok=True)
    features = _features()
    Dataset.from_list(train, features=features).to_parquet(str(data_dir / "train.parquet"))
    if rejected_path is not None:
        dropped = Dataset.from_list(rejected, features=features) if rejected else Dataset.from_dict(
            {k: [] for k in features}, features=features  # same columns even when nothing was dropped
        )
        dropped.to_parquet(str(rejected_path))
    return train


def _stats(rows, samples: int, kept, rejected, mix, train, rate) -> dict[str, Any]:
    by_reason = Counter(r["filter_reason"] for r in rejected)
    return {
        "prompts": len(rows),
        "samples": samples,
        "kept": len(kept),
        "acceptance_rate": len(kept) / samples,
        "prompts_with_a_kept_sample": len({r["prompt_id"] for r in kept}),
        "filtered": {reason: by_reason.get(reason, 0) for reason in filters.REASONS},
        "non_reasoning": len(mix),
        "rows": len(train),
        "samples_per_s": round(rate, 1) if rate else None,
    }


def _features():
    """The dataset's schema, explicit so that all-null columns (non-reasoning rewards) keep their types."""
    from datasets import Features, Value

    text = Value("string")
    return Features({
        "messages": [{"role": text, "content": text}],
        "source": text, "prompt_id": Value("int64"), "sample_index": Value("int64"), "source_stage": text,
        "source_fingerprint": text, "answer": text, "reward_accuracy": Value("float64"),
        "reward_format": Value("float64"), "reward_language": Value("float64"), "filter_reason": text,
    })  # fmt: skip


def non_reasoning(cfg: dict[str, Any], n_reasoning: int, seed: int, load=None) -> list[dict[str, Any]]:
    """Non-reasoning rows so that they make up `ratio` of the final dataset (R1: ~200k of ~800k). With no
    reasoning rows at all (min_kept: 0) the whole non-reasoning source is used. `load(source, need)` reads
    the rows (a stage passes its decontaminating loader)."""
    load = load or (lambda source, need: data.load_rows(source, need=need))
    ratio = cfg.get("ratio") or 0.0
    if ratio <= 0 or not cfg.get("data"):
        return []
    source = cfg["data"]
    if n_reasoning:
        n = max(1, round(n_reasoning * ratio / (1 - ratio)))
        source = {**source, "size": n} if "builtin" in source else source
    rows = load(source, ("prompt", "solution"))
    if n_reasoning:
        rows = (rows * (n // len(rows) + 1))[:n]  # a small real dataset is repeated up to the ratio
    return [
        {
            "messages": data.chat(r) + [{"role": "assistant", "content": r["solution"]}],
            "source": "non_reasoning", "prompt_id": -1, "sample_index": i, "source_stage": "data",
            "source_fingerprint": "", "answer": "", "reward_accuracy": None, "reward_format": None,
            "reward_language": None, "filter_reason": "kept",
        }
        for i, r in enumerate(rows)
    ]
