"""second_sft: SFT of the BASE model on rejection sampling's data (DeepSeek-R1 §2.3.3).

    r1pipe run --stage second_sft conf=tiny

R1 does not continue from the RL model: it retrains the base on ~800k samples (600k filtered reasoning
samples from the RL checkpoint + 200k non-reasoning), 2 epochs. `init` picks the model to train (base by
default, or any earlier stage); the data is rejection_sampling's `data/` dataset as TRL reads it. The
trainer: block is trl.SFTConfig, field for field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "second_sft"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("model", "adapter")  # adapter: LoRA only (a peft: block), model: merged with it
DISTRIBUTED = True  # a launcher (launcher=torchrun ...) runs run() on every rank
DATA = "rejection_sampling"


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "base", DATA)


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import SFTConfig

    from r1pipe.training import lora, trl_config

    trl_config(SFTConfig, NAME, cfg, Path("unused"), seed=0)
    lora(NAME, cfg)


def run(ctx) -> dict[str, Any]:
    from datasets import load_dataset

    from r1pipe import training

    data_dir = ctx.parent_output(DATA, "data")
    dataset = load_dataset("parquet", data_files=str(data_dir / "train.parquet"), split="train")
    dataset = dataset.select_columns(["messages"])  # provenance columns stay in the parent's dataset
    init = parents(ctx.config)[0]
    summary = f"SFT of `{init}` on {len(dataset)} rejection-sampled and non-reasoning examples."
    return training.sft(ctx, NAME, init, dataset, summary)
