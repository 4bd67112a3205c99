"""reasoning_rl: GRPO with rule-based rewards (DeepSeek-R1 §2.2-2.3, GRPO from DeepSeekMath §4.1).

    r1pipe run --stage reasoning_rl conf=tiny          # from cold_sft
    r1pipe run-all conf=tiny_zero                      # R1-Zero: straight from base

For each prompt TRL's GRPOTrainer samples a group of `num_generations` completions, scores them with the
configured rewards (accuracy + format + language consistency, summed with their weights), and pushes up the
completions that beat their group's mean. No value model, no neural reward (R1: reward hacking).

Optionally (`difficulty_filter`) the starting model first samples each prompt k times; prompts it always or
never solves are dropped, since a group whose rewards are all equal has zero advantage and teaches nothing.
The trainer: block is trl.GRPOConfig, field for field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1pipe import data, generation, rewards, training
from r1pipe.errors import R1Error
from r1pipe.launch import generation_batch
from r1pipe.manifest import read_jsonl, write_jsonl_atomic
from r1pipe.stages import Source

NAME = "reasoning_rl"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("model", "adapter")  # adapter: LoRA only (a peft: block), model: merged with it
SOURCES = (Source("data", ("prompt", "answer")),)
PROGRESS = ("difficulty.jsonl",)  # the difficulty filter's pass rates (written whole, after k samples a prompt)
DISTRIBUTED = True  # a launcher (launcher=torchrun ...) runs run() on every rank
GRPO = True


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("init") or "cold_sft",)


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import GRPOConfig

    training.trl_config(GRPOConfig, NAME, validation_block(trainer_block(NAME, cfg), world_size), Path("unused"), seed=0)
    training.lora(NAME, cfg)
    rewards.build(cfg["rewards"], columns=data.extra_fields(cfg["data"]))
    check_rollouts(NAME, cfg)
    dtype = (cfg.get("difficulty_filter") or {}).get("dtype")
    if dtype not in (None, "bfloat16"):
        from r1pipe.errors import R1Error

        raise R1Error(f"{NAME}.difficulty_filter.dtype must be bfloat16 or null (the model's own), got {dtype!r}")


def check_rollouts(stage: str, cfg: dict[str, Any]) -> None:
    if cfg.get("rollouts", "auto") not in ROLLOUTS:
        raise R1Error(f"{stage}.rollouts must be {', '.join(ROLLOUTS[:-1])} or {ROLLOUTS[-1]}, got {cfg['rollouts']!r}")


ROLLOUTS = ("auto", "engine", "trl")


def rollout_func(cfg: dict[str, Any], args):
    """GRPO's rollout_func for this stage's `rollouts`: r1pipe's engine, or None (TRL's own generation).
    auto: the engine on a CPU, where it is 2-3x faster than model.generate; TRL's on a GPU, where the engine's
    loop (float32 weights under bf16 autocast) measured 1.8x slower per GRPO step on an H200 (docs/gpu.md)."""
    import os

    import torch

    which = cfg.get("rollouts", "auto")
    if which == "auto":
        # and TRL's where the ranks hold only shards of the weights (FSDP, ZeRO-3: set by accelerate launch),
        # which the engine cannot sample from
        sharded = (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
                   or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")
        which = "trl" if sharded or (torch.cuda.is_available() and not args.use_cpu) else "engine"
    return generation.grpo_rollout(args) if which == "engine" else None


def validation_block(cfg: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The config to check GRPOConfig's batch rules with, as they will be under `world_size` processes.

    GRPOConfig derives generation_batch_size from the world size of the process that builds it, which is 1
    in the r1pipe that launches the workers: give it the launched value, exactly as TRL computes it there."""
    t = cfg["trainer"]
    if world_size == 1 or t.get("generation_batch_size") is not None or t.get("steps_per_generation") is not None:
        return cfg
    return {**cfg, "trainer": {**t, "generation_batch_size": generation_batch(t, world_size)}}


def trainer_block(stage: str, cfg: dict[str, Any], weights: list[float] | None = None) -> dict[str, Any]:
    """The stage config with reward weights moved into trainer.reward_weights, where TRL reads them."""
    trainer = dict(cfg.get("trainer") or {})
    if "reward_weights" in trainer:
        raise R1Error(f"{stage}.trainer.reward_weights is set from rewards.<name>.weight", hint="set the weights there")
    trainer["reward_weights"] = rewards.weights(cfg["rewards"]) if weights is None else weights
    return {**cfg, "trainer": trainer}


def prepare(ctx) -> None:
    """Under a launcher, once, before the ranks start: the difficulty filter's sampling, cached on disk for
    every rank to read (generation in one process never waits at a rank barrier)."""
    cfg = ctx.config
    if cfg["difficulty_filter"]["enabled"]:
        init_dir = ctx.parent_output(parents(cfg)[0], "model")
        rows = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")
        model, tokenizer = ctx.load_model(init_dir)
        _difficulty_filter(ctx, model, tokenizer, rows, cfg)


def run(ctx) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = ctx.config
    init = parents(cfg)[0]
    init_dir = ctx.parent_output(init, "model")
    args = training.trl_config(GRPOConfig, NAME, trainer_block(NAME, cfg), ctx.trainer_dir, ctx.seed,
                               trust_remote_code=ctx.trust_remote_code)
    reward_funcs, _ = rewards.build(cfg["rewards"], columns=data.extra_fields(cfg["data"]))
    rows = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")

    model, tokenizer = ctx.load_model(init_dir)

    filter_stats: dict[str, Any] = {"enabled": False}
    if cfg["difficulty_filter"]["enabled"]:
        rows, filter_stats = _difficulty_filter(ctx, model, tokenizer, rows, cfg)

    # every column a source maps reaches the rewards (TRL passes them by name): a code task's tests, a per-row verifier
    dataset = Dataset.from_list([{**data.extra_columns(r), "prompt": data.ask(r), "answer": r["answer"],
                                  "verifier": verifier_of(r, cfg)} for r in rows])
    # With a peft: block TRL trains a LoRA adapter, and its reference model for the KL term is this same model
    # with the adapter switched off: no second copy is loaded
    rollout = rollout_func(cfg, args)
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=training.lora(NAME, cfg), rollout_func=rollout,
    )
    trainer.add_callback(samples_callback(trainer, ctx.dir / "samples.jsonl", cfg["log_samples"]))
    metrics = training.train(trainer, ctx.metrics_path)
    metrics["rollouts"] = "r1pipe engine" if rollout else "trl"

    card = training.model_card(
        NAME, ctx.parent_manifests, cfg,
        f"GRPO from `{init}` on {len(rows)} prompts with rewards {', '.join(f.__name__ for f in reward_funcs)}.",
    )
    training.save_trained(trainer, tokenizer, ctx.output("model"), card, adapter=training.adapter_output(ctx))
    return {**metrics, "prompts": len(rows), "difficulty_filter": filter_stats, **last_logged(ctx.metrics_path)}


def verifier_of(row: dict[str, Any], cfg: dict[str, Any]) -> str:
    """A row's verifier: its own `verifier` column when the source maps one (math and code prompts in one
    dataset), else the stage's."""
    from r1pipe import verifiers

    return verifiers.check_name(row.get("verifier") or cfg["verifier"], f"{NAME}.data: a row's verifier")


def _difficulty_filter(ctx, model, tokenizer, rows, cfg):
    """Keep prompts the starting model solves sometimes but not always (cached on disk for resume)."""
    from r1pipe import verifiers
    from r1pipe.generation import Sampling, generate

    f = cfg["difficulty_filter"]
    cache = ctx.dir / "difficulty.jsonl"
    # The stage directory holds only this attempt's files (a fresh attempt starts empty), so a cache whose
    # prompts match is this attempt's: a resumed run's, or prepare()'s under a launcher
    cached = read_jsonl(cache)
    if [c["prompt"] for c in cached] == [r["prompt"] for r in rows]:
        rates = [c["pass_rate"] for c in cached]
    else:
        sampling = Sampling(
            n=f["k"], temperature=f["temperature"], top_p=1.0, max_new_tokens=f["max_new_tokens"],
            batch_size=f["batch_size"], seed=ctx.seed,
        )
        import torch

        from r1pipe.generation import on_accelerator

        # On the GPU only when sampling here (in place: a local trainer keeps it there); ranks under ZeRO-3/FSDP
        # read prepare()'s cache and keep their model where the launcher's sharding expects it
        model = on_accelerator(model)
        # bf16 autocast: pass rates need no more precision than evaluation's bf16 samples have
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=f.get("dtype") == "bfloat16"):
            outs = generate(model, tokenizer, [data.ask(r) for r in rows], sampling, desc="difficulty filter")
        verdicts = verifiers.verify_groups(outs, [r["answer"] for r in rows], [verifier_of(r, cfg) for r in rows])
        rates = [sum(ok) / len(ok) for ok in verdicts]
        # whole or absent: a resume never reads a torn cache
        write_jsonl_atomic(cache, [{"prompt": r["prompt"], "pass_rate": rate} for r, rate in zip(rows, rates)])
    kept = [r for r, rate in zip(rows, rates) if f["min_pass_rate"] < rate < f["max_pass_rate"]]
    stats = {
        "enabled": True,
        "k": f["k"],
        "prompts_in": len(rows),
        "kept": len(kept),
        "dropped_always_solved": sum(rate >= f["max_pass_rate"] for rate in rates),
        "dropped_never_solved": sum(rate <= f["min_pass_rate"] for rate in rates),
        "mean_pass_rate": sum(rates) / len(rates),
    }
    if not kept:
        from r1pipe.errors import R1Error

        raise R1Error(
            f"{NAME}: the difficulty filter dropped all {len(rows)} prompts (mean pass rate {stats['mean_pass_rate']:.2f})",
            hint="disable it (reasoning_rl.difficulty_filter.enabled=false) or start from a better model",
        )
    return kept, stats


def samples_callback(trainer, path: Path, every: int):
    """Every `every` logging steps, append a few of the latest completions with their rewards to samples.jsonl,
    so a user can read what the policy writes. Reads GRPOTrainer's own completion log."""
    from transformers import TrainerCallback

    from r1pipe.rewards import completion_text

    class Samples(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs_ = getattr(trainer, "_logs", None)
            if not every or not logs_ or not state.is_world_process_zero or state.global_step % every:
                return
            prompts, completions = list(logs_["prompt"])[-4:], list(logs_["completion"])[-4:]
            rewards = {k: list(v)[-4:] for k, v in logs_["rewards"].items()}
            with open(path, "a") as f:
                for i, (p, c) in enumerate(zip(prompts, completions)):
                    rec = {"step": state.global_step, "prompt": completion_text(p), "completion": completion_text(c),
                           "rewards": {k: v[i] for k, v in rewards.items() if i < len(v)}}
                    f.write(json.dumps(rec) + "\n")

    return Samples()


def last_logged(metrics_path: Path) -> dict[str, Any]:
    """Means over the last 10 logged steps of the signals a user watches: reward, accuracy, length, KL."""
    from r1pipe.training import read_jsonl

    lines = [r for r in read_jsonl(metrics_path) if "reward" in r][-10:]
    keys = ("reward", "rewards/accuracy/mean", "rewards/format/mean", "completions/mean_length", "kl")
    out = {}
    for k in keys:
        vals = [r[k] for r in lines if isinstance(r.get(k), (int, float))]
        if vals:
            out[f"final_{k.replace('/', '_')}"] = sum(vals) / len(vals)
    return out
