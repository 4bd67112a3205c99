"""reward_model: train the preference model alignment_rl scores general prompts with (optional stage).

    r1pipe run --stage reward_model conf=tiny

R1 judges general (non-verifiable) prompts with reward models (§2.3.4). When no ready one is given (a hub id or
path in alignment_rl.preference_rewards), this stage trains one: TRL's RewardTrainer (Bradley-Terry loss on
chosen/rejected pairs) on a sequence-classification model whose body starts from `init`'s model and whose
one-output head is new. The tiny preset trains it offline on synthetic pairs of the non-reasoning task, where
the reference reply is chosen over a wrong, rude, garbled or off-topic one. Its accuracy on held-out pairs,
phrased in ways no training pair is, goes to the manifest. The trainer: block is trl.RewardConfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe import data, models, training
from r1pipe.stages import PREFERENCES, Source

NAME = "reward_model"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("model", "adapter")  # adapter: LoRA only (a peft: block), model: merged with it
# held-out pairs only measure the trained model (not trained on, so not decontaminated)
SOURCES = (Source("data", PREFERENCES), Source("heldout", PREFERENCES, task=False))
DISTRIBUTED = True  # a launcher runs run() on every rank; rank 0 alone scores the held-out pairs
EVALUATE = False  # a reward model writes no answers: the reasoning evaluation does not apply
TASK_TYPE = "SEQ_CLS"  # peft's name for a sequence classifier: under LoRA it trains the new score head whole


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "base",)


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import RewardConfig

    from r1pipe.training import lora, trl_config

    trl_config(RewardConfig, NAME, cfg, Path("unused"), seed=0)
    lora(NAME, cfg, task_type=TASK_TYPE)


def run(ctx) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from r1pipe.preference import RewardModel

    cfg = ctx.config
    init = parents(cfg)[0]
    init_dir = ctx.parent_output(init, "model")
    args = training.trl_config(RewardConfig, NAME, cfg, ctx.trainer_dir, ctx.seed)
    pairs = ctx.decontaminate(data.load_preferences(cfg["data"], "reward_model.data"), "data",
                              ("prompt", "chosen", "rejected"))
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": p["prompt"]}],
         "chosen": [{"role": "assistant", "content": p["chosen"]}],
         "rejected": [{"role": "assistant", "content": p["rejected"]}]}
        for p in pairs
    ])  # fmt: skip

    remote = ctx.trust_remote_code
    tokenizer = models.load_tokenizer(init_dir, trust_remote_code=remote)
    torch.manual_seed(ctx.seed)  # the new score head is random: seed it
    model = AutoModelForSequenceClassification.from_pretrained(
        str(init_dir), num_labels=1, dtype=getattr(torch, cfg.get("dtype", "float32")), use_safetensors=True,
        trust_remote_code=remote,
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=training.lora(NAME, cfg, task_type=TASK_TYPE))
    metrics = training.train(trainer, ctx.metrics_path)

    out = ctx.output("model")
    summary = (f"A reward model (sequence classification, one output) trained with TRL's RewardTrainer from "
               f"`{init}` on {len(pairs)} preference pairs.")
    training.save_trained(trainer, tokenizer, out, training.model_card(NAME, ctx.parent_manifests, cfg, summary),
                          adapter=training.adapter_output(ctx))
    metrics["pairs"] = len(pairs)
    if cfg.get("heldout") and training.is_main():
        metrics["heldout"] = pair_accuracy(RewardModel(out, dtype=cfg.get("dtype", "float32"), trust_remote_code=remote),
                                           data.load_preferences(cfg["heldout"], "reward_model.heldout"))
    return metrics


def pair_accuracy(rm, pairs: list[dict[str, str]]) -> dict[str, Any]:
    """How often the reward model scores chosen above rejected, with the standard error, and the mean margin."""
    from r1pipe.evaluation import mean_se

    prompts = [p["prompt"] for p in pairs]
    chosen = rm.score(prompts, [p["chosen"] for p in pairs])
    rejected = rm.score(prompts, [p["rejected"] for p in pairs])
    acc, se = mean_se([float(c > r) for c, r in zip(chosen, rejected)])
    margin, _ = mean_se([c - r for c, r in zip(chosen, rejected)])
    return {"pairs": len(pairs), "accuracy": acc, "accuracy_se": se, "mean_margin": margin}
