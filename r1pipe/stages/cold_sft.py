"""cold_sft: supervised fine-tuning on a small set of readable long-CoT examples (DeepSeek-R1 §2.3.1).

    r1pipe run --stage cold_sft conf=tiny

R1 starts RL from a model tuned on "thousands" of curated chain-of-thought answers, so that RL begins from
readable output. TRL's SFTTrainer trains on the task's `cold_start` data in conversational form with the loss
on the assistant turn only (the chat template's {% generation %} markers), resuming from the last Trainer
checkpoint after an interruption. The trainer: block is trl.SFTConfig, field for field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe import data, training
from r1pipe.stages import Source

NAME = "cold_sft"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
PARENTS = ("base",)
OUTPUTS = ("model", "adapter")  # adapter: LoRA only (a peft: block), model: merged with it
SOURCES = (Source("data", ("prompt", "solution")),)
DISTRIBUTED = True  # a launcher (launcher=torchrun ...) runs run() on every rank


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import SFTConfig

    from r1pipe.training import lora, trl_config

    trl_config(SFTConfig, NAME, cfg, Path("unused"), seed=0)  # builds it: TRL's own checks run too
    lora(NAME, cfg)


def run(ctx) -> dict[str, Any]:
    from datasets import Dataset

    rows = ctx.load_rows(ctx.config["data"], ("prompt", "solution"), "data")
    dataset = Dataset.from_list([{"messages": m["messages"]} for m in data.sft_messages(rows)])
    summary = f"Cold-start SFT of the base model on {len(rows)} chain-of-thought examples."
    return training.sft(ctx, NAME, "base", dataset, summary)
