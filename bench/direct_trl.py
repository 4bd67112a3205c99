"""The plain alternative r1pipe is measured against: TRL's trainer called directly, nothing else.

    python bench/direct_trl.py sft  SPEC.json
    python bench/direct_trl.py grpo SPEC.json

SPEC (written by bench.bench.direct_spec from the very config and rows the r1pipe stage uses): the model
directory and dtype, a JSONL of training rows, the trainer block (TRL field names), the seed, and for GRPO
the reward weights. The script loads the model, builds the dataset, trains, saves the model, and prints the
train loss, runtime and peak GPU memory as JSON. The reward functions are r1pipe's pure functions (the work
being compared is the trainer's).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(kind: str, spec_path: str) -> None:
    t0 = time.perf_counter()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = json.loads(Path(spec_path).read_text())
    rows = [json.loads(line) for line in Path(spec["rows"]).read_text().splitlines()]
    from r1pipe.models import CHAT_TEMPLATE, SERVING_TEMPLATE

    tok = AutoTokenizer.from_pretrained(spec["model"])
    if tok.chat_template == SERVING_TEMPLATE:  # r1pipe saves models for serving; SFT's loss mask needs the markers
        tok.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=spec.get("dtype", "float32"))
    # the stage's trainer block as r1pipe passes it (it names report_to itself since trackers are configurable)
    common = {"report_to": "none", "seed": spec["seed"], "data_seed": spec["seed"], **spec["trainer"],
              "output_dir": spec["output_dir"]}
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=tok)
    else:
        from trl import GRPOConfig, GRPOTrainer

        from r1pipe.rewards import accuracy, format_reward, language_consistency

        trainer = GRPOTrainer(model=model, reward_funcs=[accuracy, format_reward, language_consistency],
                              args=GRPOConfig(reward_weights=spec["reward_weights"], **common),
                              train_dataset=Dataset.from_list(rows), processing_class=tok)
    import torch

    result = trainer.train()
    peak_gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_initialized() else None
    trainer.model.save_pretrained(Path(spec["output_dir"]) / "model")
    tok.save_pretrained(Path(spec["output_dir"]) / "model")
    print("DIRECT " + json.dumps({"train_loss": result.training_loss, "train_runtime_s": result.metrics["train_runtime"],
                                  "global_step": trainer.state.global_step, "in_process_s": time.perf_counter() - t0,
                                  "peak_gpu_mb": peak_gpu_mb}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
