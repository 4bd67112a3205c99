"""second_sft: SFT of the BASE model on rejection sampling's data (DeepSeek-R1 §2.3.3).

    r1pipe run --stage second_sft conf=tiny

R1 does not continue from the RL model: it retrains the base on ~800k samples (600k filtered reasoning
samples from the RL checkpoint + 200k non-reasoning), 2 epochs. `init` picks the model to train (base by
default, or any earlier stage); the data is rejection_sampling's `data/` dataset as TRL reads it. The
trainer: block is trl.SFTConfig, field for field.

`baseline.enabled` also trains the init model on `baseline.data` (the cold-start data) for as many optimizer
steps as second_sft took: a matched control, so the report can tell what the rejection-sampled data adds from
what more steps add (second_sft usually trains far longer than cold_sft).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe import training
from r1pipe.stages import Source

NAME = "second_sft"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
# adapter: LoRA only (a peft: block), model: merged with it; baseline: the matched control, when enabled
OUTPUTS = ("model", "adapter", "baseline")
# the matched baseline's data (the cold-start data), read only when it is on
SOURCES = (Source("baseline.data", ("prompt", "solution"), when=lambda cfg: (cfg.get("baseline") or {}).get("enabled")),)
DISTRIBUTED = True  # a launcher (launcher=torchrun ...) runs run() on every rank
DATA = "rejection_sampling"


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "base", DATA)


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import SFTConfig

    from r1pipe.training import baseline_cfg, lora, trl_config

    trl_config(SFTConfig, NAME, cfg, Path("unused"), seed=0)
    if (cfg.get("baseline") or {}).get("enabled"):
        trl_config(SFTConfig, f"{NAME}.baseline", baseline_cfg(cfg, steps=1), Path("unused"), seed=0)
    lora(NAME, cfg)


def run(ctx) -> dict[str, Any]:
    from datasets import load_dataset

    data_dir = ctx.parent_output(DATA, "data")
    dataset = load_dataset("parquet", data_files=str(data_dir / "train.parquet"), split="train")
    dataset = dataset.select_columns(["messages"])  # provenance columns stay in the parent's dataset
    init = parents(ctx.config)[0]
    summary = f"SFT of `{init}` on {len(dataset)} rejection-sampled and non-reasoning examples."
    metrics = training.sft(ctx, NAME, init, dataset, summary)
    if (ctx.config.get("baseline") or {}).get("enabled"):
        init_dir = ctx.parent_output(init, "model")
        model, tokenizer = ctx.load_model(init_dir)
        steps = metrics["global_step"]
        metrics["baseline"] = training.train_baseline(
            ctx, NAME, model, tokenizer, steps,
            f"`{init}` trained on {{rows}} baseline examples alone, for second_sft's {steps} optimizer steps.")
    return metrics
