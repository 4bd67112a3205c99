"""rejection_sampling: sample the RL model, keep what is correct and readable, mix in non-reasoning data
(DeepSeek-R1 §2.3.3).

    r1pipe run --stage rejection_sampling conf=tiny

The reasoning_rl model samples k completions per prompt (the generation engine: batched, resumable in
shards). The verifier and R1's readability rules decide which survive (`r1pipe/filters.py`); exact duplicates
go and at most `max_per_prompt` stay per prompt. Non-reasoning rows (answered without a chain of thought) are
mixed in at `non_reasoning.ratio` of the result. The output is a Hugging Face dataset in TRL's
conversational format, `data/train.parquet` (`datasets.load_dataset(path)` reads it; TRL's SFTTrainer trains on
it as it is), with provenance columns; every dropped sample is in `rejected.parquet` with its reason.
The machinery is `r1pipe/traces.py`, which distill shares.
"""

from __future__ import annotations

from typing import Any

from r1pipe import traces
from r1pipe.stages import Source

NAME = "rejection_sampling"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("data", "rejected")
SOURCES = (Source("data", ("prompt", "answer")), Source("non_reasoning.data", ("prompt", "solution")))
PROGRESS = ("shards/shard-*.jsonl",)  # each finished generation shard


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "reasoning_rl",)


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    traces.validate_sampling(NAME, cfg.get("sampling") or {}, cfg["filters"])


def run(ctx) -> dict[str, Any]:
    cfg = ctx.config
    rows = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")
    return traces.dataset(ctx, parents(cfg)[0], rows)[1]
