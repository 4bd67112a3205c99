"""rejection_sampling: sample the RL model, keep what is correct and readable, mix in non-reasoning data
(DeepSeek-R1 §2.3.3).

    r1pipe run --stage rejection_sampling conf=tiny

The reasoning_rl model samples k completions per prompt (the generation engine: batched, resumable in
shards). The verifier and R1's readability rules decide which survive (`r1pipe/filters.py`); exact duplicates
go and at most `max_per_prompt` stay per prompt. Non-reasoning rows (answered without a chain of thought) are
mixed in at `non_reasoning.ratio` of the result. The output is a Hugging Face dataset in TRL's
conversational format, `data/train.parquet` (`datasets.load_dataset(path)` reads it; TRL's SFTTrainer trains on
it as it is), with provenance columns; every dropped sample is in `rejected.parquet` with its reason.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

NAME = "rejection_sampling"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("data", "rejected")
log = logging.getLogger("r1pipe")


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "reasoning_rl",)


def validate(cfg: dict[str, Any]) -> None:
    """Checks that need no model: sampling settings, backend, filter language."""
    from r1pipe.errors import R1Error
    from r1pipe.rewards import language_share

    s = cfg.get("sampling") or {}
    for key in ("backend", "k", "temperature", "top_p", "max_new_tokens", "batch_size", "shard_size"):
        if key not in s:
            raise R1Error(f"{NAME}.sampling.{key} is missing", hint="see conf/stage/rejection_sampling.yaml")
    if s["backend"] not in ("transformers", "vllm"):
        raise R1Error(f"{NAME}.sampling.backend={s['backend']!r}", hint="use transformers or vllm")
    for key in ("k", "batch_size", "shard_size", "max_new_tokens"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise R1Error(f"{NAME}.sampling.{key}={s[key]!r} must be a positive integer")
    language_share("", cfg["filters"].get("language", "en"))  # an unknown language fails here, not mid-run


def run(ctx) -> dict[str, Any]:
    from datasets import Dataset

    from r1pipe import data, filters, rewards
    from r1pipe.generation import Sampling, generate_sharded, make_engine

    cfg = ctx.config
    source = parents(cfg)[0]
    source_fp = ctx.parent_manifests[source]["fingerprint"]
    rows = data.load_rows(cfg["data"], need=("prompt", "answer"))
    s = cfg["sampling"]
    sampling = Sampling(
        n=s["k"], temperature=s["temperature"], top_p=s["top_p"], max_new_tokens=s["max_new_tokens"],
        batch_size=s["batch_size"], seed=ctx.seed,
    )
    engine = make_engine(
        ctx.parent_output(source, "model"), backend=s["backend"], dtype=cfg.get("dtype", "float32"),
        trust_remote_code=ctx.trust_remote_code,
    )
    completions, rate = generate_sharded(
        engine, [r["prompt"] for r in rows], sampling, ctx.dir / "shards", s["shard_size"], log=log
    )

    kept, rejected = [], []
    for pid, (row, comps) in enumerate(zip(rows, completions)):
        reasons = filters.select(comps, row["answer"], cfg["verifier"], cfg["filters"])
        for j, (text, reason) in enumerate(zip(comps, reasons)):
            rec = {
                "messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": text}],
                "source": "reasoning",
                "prompt_id": pid,
                "sample_index": j,
                "source_stage": source,
                "source_fingerprint": source_fp,
                "answer": row["answer"],
                "reward_accuracy": float(rewards.is_correct(text, row["answer"], cfg["verifier"])),
                "reward_format": float(rewards.strict_format(text)),
                "reward_language": rewards.language_share(rewards.split_think(text)[0], cfg["filters"].get("language", "en")),
                "filter_reason": reason,
            }
            (kept if reason == "kept" else rejected).append(rec)

    mix = _non_reasoning(cfg["non_reasoning"], len(kept), ctx.seed)
    train = kept + mix
    random.Random(ctx.seed).shuffle(train)
    if len(kept) < cfg["min_kept"]:
        from r1pipe.errors import R1Error

        raise R1Error(
            f"{NAME}: {len(kept)} of {len(rows) * s['k']} samples passed the filters, min_kept is {cfg['min_kept']}",
            hint="sample more (sampling.k), loosen filters, or check the source model's accuracy",
        )
    out = ctx.output("data")
    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(train, features=_features()).to_parquet(str(out / "train.parquet"))
    features = _features()
    dropped = Dataset.from_list(rejected, features=features) if rejected else Dataset.from_dict(
        {k: [] for k in features}, features=features  # same columns even when nothing was dropped
    )
    dropped.to_parquet(str(ctx.output("rejected", "rejected.parquet")))

    total = len(rows) * s["k"]
    by_reason = Counter(r["filter_reason"] for r in rejected)
    return {
        "prompts": len(rows),
        "samples": total,
        "kept": len(kept),
        "acceptance_rate": len(kept) / total,
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


def _non_reasoning(cfg: dict[str, Any], n_reasoning: int, seed: int) -> list[dict[str, Any]]:
    """Non-reasoning rows so that they make up `ratio` of the final dataset (R1: ~200k of ~800k). With no
    reasoning rows at all (min_kept: 0) the whole non-reasoning source is used."""
    from r1pipe import data

    ratio = cfg.get("ratio") or 0.0
    if ratio <= 0 or not cfg.get("data"):
        return []
    source = cfg["data"]
    if n_reasoning:
        n = max(1, round(n_reasoning * ratio / (1 - ratio)))
        source = {**source, "size": n} if "builtin" in source else source
    rows = data.load_rows(source, need=("prompt", "solution"))
    if n_reasoning:
        rows = (rows * (n // len(rows) + 1))[:n]  # a small real dataset is repeated up to the ratio
    return [
        {
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["solution"]}],
            "source": "non_reasoning", "prompt_id": -1, "sample_index": i, "source_stage": "data",
            "source_fingerprint": "", "answer": "", "reward_accuracy": None, "reward_format": None,
            "reward_language": None, "filter_reason": "kept",
        }
        for i, r in enumerate(rows)
    ]
