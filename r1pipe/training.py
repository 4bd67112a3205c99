"""What every TRL-trained stage shares: building the TRL config, resuming, logging, saving.

The stage's `trainer:` block goes to the TRL config class unchanged; r1pipe only adds what it owns
(output_dir, the seed) and CPU-safe defaults a user can override. Its `peft:` block, when set, is a
peft.LoraConfig that TRL's trainers take as `peft_config`: the stage then trains a LoRA adapter, and saves
the model with the adapter merged in (plus the adapter alone) so that children read a plain model.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from r1pipe import data, models, needs
from r1pipe.config import check_peft_block, check_trainer_block
from r1pipe.errors import R1Error
from r1pipe.manifest import read_json_dict, read_jsonl, write_jsonl_atomic
from r1pipe.models import first_line

log = logging.getLogger("r1pipe")
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def _target_machine(stage: str, block: dict[str, Any]) -> dict[str, Any]:
    """The block as TRL can check it on this machine while --dry-run checks it for another: what only the
    target can honour (bf16 needs a GPU) is noted as a need and left out of the check."""
    import torch

    for key in ("bf16", "fp16"):
        if block.get(key) and not torch.cuda.is_available() and not block.get("use_cpu"):
            needs.defer("a GPU", f"{stage}.trainer.{key}")
            block = {**block, key: False}
    return block


def trl_config(config_cls: type, stage: str, stage_cfg: dict[str, Any], output_dir: Path, seed: int,
               trust_remote_code: bool = False):
    block = dict(stage_cfg.get("trainer") or {})
    check_trainer_block(stage, block, config_cls)
    if needs.elsewhere():
        block = _target_machine(stage, block)
    if block.get("use_vllm") and needs.missing("vllm", f"{stage}.trainer.use_vllm"):
        # TRL would say so only once the models have loaded
        raise R1Error(f"{stage}.trainer.use_vllm is true, but vLLM is not installed",
                      hint=f"pip install 'r1pipe[vllm]' on the GPU machine, or {stage}.trainer.use_vllm=false")
    if "trust_remote_code" in getattr(config_cls, "__dataclass_fields__", {}):
        block.setdefault("trust_remote_code", trust_remote_code)  # GRPO loads its reference model itself
    block.setdefault("seed", seed)
    block.setdefault("data_seed", seed)
    block.setdefault("report_to", "none")
    _check_trackers(stage, block["report_to"])
    # The Trainer's default hides a NaN/inf loss from the logs (it logs a running average instead); r1pipe
    # wants to see it, to fail the stage before a poisoned checkpoint is taken as finished work.
    block.setdefault("logging_nan_inf_filter", False)
    # The Trainer asks DDP to look for unused parameters whenever gradient checkpointing is off: an extra
    # pass over the graph every step for models that have none (set it true for one that does)
    block.setdefault("ddp_find_unused_parameters", False)
    # Tokens trained on, for the manifest's compute record: kept in the Trainer's state, so a resumed run
    # counts the steps before its checkpoint too. GRPO counts its prompt and completion tokens into the same
    # field itself (its batches have no input_ids for the Trainer to count).
    if "num_generations" not in getattr(config_cls, "__dataclass_fields__", {}):
        block.setdefault("include_num_input_tokens_seen", "non_padding")
    try:
        return config_cls(output_dir=str(output_dir), **block)
    except (ValueError, TypeError) as e:
        raise R1Error(f"{stage}.trainer: trl.{config_cls.__name__} rejects it: {first_line(e)}") from e


# report_to's names (transformers' integrations) -> the package each needs. r1pipe passes report_to through
# unchanged; it only checks the package first, so a missing one fails (or, in --dry-run, is listed) before a
# model loads rather than when the Trainer starts.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
            "comet_ml": "comet_ml", "clearml": "clearml", "swanlab": "swanlab", "dvclive": "dvclive",
            "neptune": "neptune", "codecarbon": "codecarbon", "azure_ml": "azureml"}


def _check_trackers(stage: str, report_to: Any) -> None:
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in TRACKERS:
            raise R1Error(f"{stage}.trainer.report_to: unknown tracker {name!r}",
                          hint=f"one of: none, {', '.join(TRACKERS)}")
        package = TRACKERS[name]
        install = "pip install 'r1pipe[tracking]'" if name == "tensorboard" else f"pip install {package}"
        if needs.missing(package, f"{stage}.trainer.report_to", install=install):
            raise R1Error(f"{stage}.trainer.report_to names {name}, but its package ({package}) is not installed",
                          hint=f"{install}, or {stage}.trainer.report_to=none")


def lora(stage: str, stage_cfg: dict[str, Any], task_type: str = "CAUSAL_LM"):
    """The stage's `peft:` block as the peft.LoraConfig TRL's trainers take as `peft_config`; None (full
    fine-tuning) when the block is null. Checked like the trainer: block, before any model loads. task_type is
    r1pipe's to set (SEQ_CLS for the reward model) unless the block gives one."""
    block = stage_cfg.get("peft")
    if block is None:
        return None
    if needs.missing("peft", f"{stage}.peft", extra="lora"):
        raise R1Error(f"{stage}.peft is set, but peft is not installed",
                      hint=f"pip install 'r1pipe[lora]', or {stage}.peft=null for full fine-tuning")
    try:
        from peft import LoraConfig
    except ImportError:
        return None  # a --dry-run for another machine, which noted peft as its need: the fields wait for it

    check_peft_block(stage, block, LoraConfig)
    try:
        return LoraConfig(**{"task_type": task_type, **block})
    except (ValueError, TypeError) as e:
        raise R1Error(f"{stage}.peft: peft.LoraConfig rejects it: {first_line(e)}") from e


def last_checkpoint(trainer_dir: Path) -> Path | None:
    """The newest checkpoint that finished saving (the Trainer writes trainer_state.json last)."""
    if not trainer_dir.is_dir():
        return None
    done = [
        (int(m.group(1)), p)
        for p in trainer_dir.iterdir()
        # the Trainer writes trainer_state.json last, and a kill while it did leaves it torn
        if (m := _CKPT.match(p.name)) and read_json_dict(p / "trainer_state.json") is not None
    ]
    return max(done)[1] if done else None


def train(trainer, metrics_path: Path) -> dict[str, Any]:
    """Run `trainer`, resuming from the last complete checkpoint if there is one. Returns summary metrics."""
    ckpt = last_checkpoint(Path(trainer.args.output_dir))
    resumed_step = 0
    if ckpt is not None:
        resumed_step = int(_CKPT.match(ckpt.name).group(1))
        # lines logged after the checkpoint will be logged again (samples.jsonl too, when there is one)
        for path in (metrics_path, metrics_path.with_name("samples.jsonl")):
            if is_main():  # rank 0 alone logs, so rank 0 alone trims
                _truncate_metrics(path, resumed_step)
        log.info("resuming from %s (step %d)", ckpt, resumed_step)
    trainer.add_callback(_metrics_callback(metrics_path))
    # Everything built so far (config, data, the CLI's modules) lives as long as training does: keep it out of
    # the cyclic GC's scans, which a GRPO step's many short-lived objects trigger over and over. Unfrozen
    # after, so a finished stage's trainer can be collected before the next stage of a run-all.
    gc.collect()
    gc.freeze()
    try:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        gc.unfreeze()
    # The loss is only seen at logging steps, and a resume from a checkpoint saved at max_steps trains no
    # step at all: the weights themselves are the last word on whether training went wrong.
    bad = next((n for n, p in trainer.model.named_parameters() if not p.detach().isfinite().all()), None)
    if bad is not None:
        raise R1Error(f"training left non-finite weights ({bad}) at step {trainer.state.global_step}",
                      hint="lower the learning rate or check the data; the stage was not marked complete")
    counts = parameter_counts(trainer.model)
    accelerator = getattr(trainer, "accelerator", None)
    return {
        # how accelerate ran it: NO (one process), MULTI_GPU (DDP, on CPUs too), FSDP, DEEPSPEED
        "distributed": accelerator.distributed_type.value if accelerator is not None else None,
        "global_step": trainer.state.global_step,
        "resumed_from_step": resumed_step,
        "train_loss": result.training_loss,
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 2),
        **counts,
        "compute": compute_record(trainer.args, trainer.state.global_step, trainer.state.num_input_tokens_seen,
                                  counts, read_jsonl(metrics_path)),
    }


def compute_record(args, steps: int, tokens: int, counts: dict[str, int], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """What a stage's training cost, so that its effect can be read beside its compute: optimizer steps,
    examples (GRPO: completions), tokens trained on (non-padding; GRPO: prompt + completion), tokens sampled
    (GRPO) and approximate FLOPs. FLOPs count 6N per trained token (4N under LoRA: the frozen weights get no
    weight gradients), plus for GRPO 2N per token to sample it and 2N for the reference model when beta > 0;
    N is every parameter, the output layer included; attention's own FLOPs are left out (short sequences)."""
    n = counts["total_parameters"]
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    record: dict[str, Any] = {"optimizer_steps": steps, "examples": steps * per_step, "tokens": int(tokens)}
    per_token = 6 if counts["trainable_parameters"] == n else 4
    if hasattr(args, "num_generations"):  # GRPO: every trained token was sampled first
        record["generated_tokens"] = sampled_tokens(logs, per_step / max(1, getattr(args, "num_iterations", 1)))
        per_token += 2 + (2 if getattr(args, "beta", 0.0) else 0)
    record["flops"] = float(per_token * n * tokens)
    return record


def sampled_tokens(logs: list[dict[str, Any]], completions_per_step: float) -> int:
    """Tokens GRPO sampled, from its log: each line's mean completion length is over the completions of the
    steps since the line before (every generation call makes the same number of them)."""
    total, prev = 0.0, 0
    for row in logs:
        if "completions/mean_length" in row and "step" in row:
            total += row["completions/mean_length"] * (row["step"] - prev) * completions_per_step
            prev = row["step"]
    return int(round(total))


def parameter_counts(model) -> dict[str, int]:
    """The parameters that train and all of them: equal under full fine-tuning; under LoRA the adapter's few
    against the frozen model plus the adapter. ZeRO-3 leaves a rank an empty shard and the size in ds_numel."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() or getattr(p, "ds_numel", 0)
        total += n
        trainable += n if p.requires_grad else 0
    return {"trainable_parameters": trainable, "total_parameters": total}


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    write_jsonl_atomic(path, keep)  # a kill here leaves the old log or the new one, never a half-written one


def _metrics_callback(path: Path):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """One JSON line per logging step; a NaN or infinite loss stops the stage before anything is saved."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not state.is_world_process_zero:
                return
            # train_loss: the average the Trainer logs at the very end; grad_norm: NaN weights-to-be even when
            # the loss of the step itself was still finite
            for key in ("loss", "train_loss", "grad_norm"):
                loss = logs.get(key)
                if isinstance(loss, (int, float)) and not math.isfinite(loss):
                    raise R1Error(
                        f"{key} is {loss} at step {state.global_step}",
                        hint="lower the learning rate or check the data; the stage was not marked complete",
                    )
            with open(path, "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return MetricsCallback()


def is_main() -> bool:
    """Rank 0 of a launched stage, or the one process of a local one (RANK is set by torchrun/accelerate)."""
    return int(os.environ.get("RANK", "0")) == 0


def save_trained(trainer, tokenizer, path: Path, card: str, adapter: Path | None = None):
    """Save a trainer's model as save_model does; returns the model as saved. Under several processes every
    rank takes part (DeepSpeed ZeRO-3 and FSDP gather the sharded weights) and rank 0 alone writes.

    A LoRA-trained model (the stage's peft: block) is saved merged: `path` then holds a plain model, which
    children and plain transformers load as any other, without peft. The adapter alone goes to `adapter`
    first (small; peft's PeftModel.from_pretrained puts it on the starting model)."""
    from accelerate.utils import is_peft_model

    acc = trainer.accelerator
    model = trainer.model
    if is_peft_model(model):
        if adapter is not None and acc.is_main_process:
            model.save_pretrained(str(adapter), safe_serialization=True)
        # Every rank holds the whole model (checks.validate refuses LoRA under weight-sharding launchers), so
        # each merges its own copy: no rank waits on rank 0, and each is left with the model it saved
        model = model.merge_and_unload()
        if acc.is_main_process:
            save_model(model, tokenizer, path, card)
        acc.wait_for_everyone()
        return model
    if acc.num_processes == 1 and not getattr(trainer, "is_deepspeed_enabled", False) \
            and not getattr(trainer, "is_fsdp_enabled", False):
        save_model(model, tokenizer, path, card)
        return model
    trainer.save_model(str(path))
    if acc.is_main_process:
        (path / "training_args.bin").unlink(missing_ok=True)  # a pickle; r1pipe's model directories carry none
        models.save_tokenizer(tokenizer, path)
        (path / "README.md").write_text(card)
    acc.wait_for_everyone()
    return model


def adapter_output(ctx) -> Path | None:
    """Where a stage that trains LoRA keeps its adapter (the `adapter` output); None under full fine-tuning."""
    return ctx.output("adapter") if ctx.config.get("peft") is not None else None


def save_model(model, tokenizer, path: Path, card: str) -> None:
    """An HF directory: safetensors weights, config, generation config, tokenizer + chat template, model card."""
    model.save_pretrained(str(path), safe_serialization=True)
    models.save_tokenizer(tokenizer, path)
    (path / "README.md").write_text(card)


def model_card(stage: str, parents: dict[str, dict[str, Any]], config: dict[str, Any], summary: str) -> str:
    """The card a stage saves with its model: what the stage did, in its own words. Once the stage is
    complete the runner rewrites it with the whole lineage and the evaluation (r1pipe.modelcard), keeping
    this summary between the markers."""
    from r1pipe.modelcard import SUMMARY_END, SUMMARY_START

    lineage = ", ".join(f"{p} (`{m['fingerprint'][:12]}`)" for p, m in parents.items()) or "config"
    return (f"---\nlibrary_name: transformers\ntags: [r1pipe, {stage}]\n---\n\n# r1pipe `{stage}` model\n\n"
            f"{SUMMARY_START}\n{summary}\n{SUMMARY_END}\n\nRead: {lineage}.\n")


def sft(ctx, stage: str, init: str, dataset, summary: str) -> dict[str, Any]:
    """SFT of `init`'s model on a conversational `messages` dataset with trl.SFTTrainer: what cold_sft and
    second_sft share. Resumes from the last checkpoint; saves the model to the `model` output."""

    init_dir = ctx.parent_output(init, "model")
    model, tokenizer = ctx.load_model(init_dir)
    card = model_card(stage, ctx.parent_manifests, ctx.config, summary)
    return sft_model(ctx, stage, model, tokenizer, dataset, ctx.config, ctx.trainer_dir, ctx.metrics_path,
                     ctx.output("model"), card, adapter=adapter_output(ctx))


def baseline_cfg(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """The settings of a stage's baseline: the stage's own, for as many optimizer steps as the stage's model
    took (a control at equal compute: on less data, the same settings would stop after fewer steps), with
    baseline.trainer's overrides last."""
    overrides = (cfg.get("baseline") or {}).get("trainer") or {}
    return {**cfg, "trainer": {**cfg["trainer"], "max_steps": steps, **overrides}}


def train_baseline(ctx, stage: str, model, tokenizer, steps: int, summary: str) -> dict[str, Any]:
    """A stage's matched control (its `baseline:` block): `model` trained by SFT on baseline.data (the
    cold-start data) for `steps` optimizer steps, saved to the stage's `baseline` output, which evaluation
    scores beside the stage's model (eval.json `baseline`, `vs_baseline`). Resumable like the stage."""
    from datasets import Dataset

    cfg = ctx.config
    rows = ctx.load_rows(cfg["baseline"]["data"], ("prompt", "solution"), "baseline_data")
    dataset = Dataset.from_list([{"messages": m["messages"]} for m in data.sft_messages(rows)])
    out = ctx.output("baseline")
    card = model_card(f"{stage} baseline", ctx.parent_manifests, cfg, summary.format(rows=len(rows)))
    metrics = sft_model(ctx, f"{stage}.baseline", model, tokenizer, dataset, baseline_cfg(cfg, steps),
                        ctx.dir / "baseline_trainer", ctx.dir / "baseline_metrics.jsonl", out / "model", card,
                        adapter=out / "adapter" if cfg.get("peft") is not None else None)
    return {**metrics, "data_rows": len(rows)}


def sft_model(ctx, stage, model, tokenizer, dataset, cfg, trainer_dir: Path, metrics_path: Path, out: Path,
              card: str, adapter: Path | None = None) -> dict[str, Any]:
    """trl.SFTTrainer on a loaded model (LoRA when cfg has a peft: block), resumable from `trainer_dir`; saves
    the result to `out` (and a LoRA adapter to `adapter`)."""
    from trl import SFTConfig, SFTTrainer

    args = trl_config(SFTConfig, stage, cfg, trainer_dir, ctx.seed)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora(stage, cfg))
    metrics = train(trainer, metrics_path)
    save_trained(trainer, tokenizer, out, card, adapter=adapter)
    return {**metrics, "examples": len(dataset)}
