"""distill: teach a smaller student the final teacher's reasoning (DeepSeek-R1 §2.4).

    r1pipe run --stage distill conf=tiny

R1 distils by SFT only, no RL: small dense models trained on the ~800k samples of the final pipeline. Here the
teacher (alignment_rl by default) answers the task's prompts with the generation engine, the answers are
verified and filtered as in rejection sampling (`r1pipe/traces.py`; kept in `data/train.parquet`, dropped in
`rejected.parquet`), non-reasoning rows are mixed in, and TRL's SFTTrainer trains the student on the result.

The student is a smaller model (`student.model`: a hub id or path, e.g. Qwen/Qwen2.5-1.5B) or, when that is
null as in the tiny preset, one built from scratch with `student.arch` on the teacher's tokenizer. With a
shared vocabulary, `method: logits` trains it instead with TRL's DistillationTrainer (on-policy: the student
writes, the teacher's token distribution is the target), configured by the logit_trainer: block, which is
trl.DistillationConfig field for field (trainer: is trl.SFTConfig).

`baseline.enabled` also trains the same student architecture, with the same settings and for the same number of
optimizer steps, on `baseline.data` (the cold-start data), so the manifest and eval.json show what the teacher's
traces are worth over it at equal compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe import data, models, traces, training
from r1pipe.errors import R1Error
from r1pipe.stages import Source

NAME = "distill"
VERSION = 2  # bump when a change alters what this stage computes (it is part of the fingerprint)
# data, rejected: method sft; baseline: when enabled; adapter: LoRA only (a peft: block), model: merged with it
OUTPUTS = ("model", "data", "rejected", "baseline", "adapter")
SOURCES = (Source("data", ("prompt", "answer")), Source("non_reasoning.data", ("prompt", "solution")),
           Source("baseline.data", ("prompt", "solution"), when=lambda cfg: (cfg.get("baseline") or {}).get("enabled")))
PROGRESS = ("shards/shard-*.jsonl",)  # each finished shard of the teacher's traces
DISTRIBUTED = True  # a launcher runs run() on every rank, after prepare() wrote the traces
METHODS = ("sft", "logits")


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    return (cfg.get("teacher") or "alignment_rl",)


def models_named(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"student.model": (cfg.get("student") or {}).get("model")}


def _method(cfg: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The TRL config class of the chosen method and the stage config with that method's trainer block."""
    method = cfg.get("method", "sft")
    if method not in METHODS:
        raise R1Error(f"{NAME}.method={method!r}", hint=f"methods: {', '.join(METHODS)}")
    if method == "logits":
        from trl import DistillationConfig

        return DistillationConfig, {**cfg, "trainer": cfg.get("logit_trainer") or {}}
    from trl import SFTConfig

    return SFTConfig, cfg


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from r1pipe.training import baseline_cfg, lora, trl_config

    cls, method_cfg = _method(cfg)
    trl_config(cls, NAME, method_cfg, Path("unused"), seed=0)
    lora(NAME, cfg)
    if cfg.get("method", "sft") == "sft":
        traces.validate_sampling(NAME, cfg.get("sampling") or {}, cfg["filters"])
    student = cfg.get("student") or {}
    if not student.get("model") and not student.get("arch"):
        raise R1Error(f"{NAME}.student needs model (a hub id or path) or arch (to build one)", hint="see conf/stage/distill.yaml")
    if cfg.get("peft") is not None and not student.get("model"):
        # LoRA leaves the starting weights frozen, and a student built from arch starts from random ones
        raise R1Error(f"{NAME}.peft trains a LoRA adapter on a frozen student, but student.model is not set (a "
                      "student built from arch has random weights)",
                      hint=f"set {NAME}.student.model to a pretrained model, or {NAME}.peft=null")
    if (cfg.get("baseline") or {}).get("enabled"):
        if cfg.get("method", "sft") != "sft":
            raise R1Error(f"{NAME}.baseline compares SFT on two datasets; it needs method: sft",
                          hint=f"set {NAME}.baseline.enabled=false with method: logits")
        trl_config(cls, f"{NAME}.baseline", baseline_cfg(cfg, steps=1), Path("unused"), seed=0)


def prepare(ctx) -> None:
    """Under a launcher, once, before the ranks start: the teacher writes its traces (resumable shards), so
    the ranks only read them and train. Generation in one process never waits at a rank barrier."""
    cfg = ctx.config
    if cfg.get("method", "sft") == "sft":
        rows = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")
        traces.sample_and_filter(ctx, parents(cfg)[0], rows, cfg)


def run(ctx) -> dict[str, Any]:
    from datasets import Dataset

    cfg = ctx.config
    teacher = parents(cfg)[0]
    teacher_dir = ctx.parent_output(teacher, "model")
    rows = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")
    metrics: dict[str, Any] = {"method": cfg.get("method", "sft")}

    student, tokenizer = _student(ctx, teacher_dir)
    teacher_params = models.count_saved_parameters(teacher_dir)
    metrics.update(student_parameters=models.count_parameters(student), teacher_parameters=teacher_params)
    metrics["student_fraction"] = metrics["student_parameters"] / teacher_params

    if metrics["method"] == "sft":
        train, metrics["traces"] = traces.dataset(ctx, teacher, rows, save=training.is_main())
        dataset = Dataset.from_list([{"messages": r["messages"]} for r in train])
        summary = (f"A student distilled by SFT on {len(train)} traces of `{teacher}` (verified and filtered, "
                   f"{metrics['traces']['kept']} reasoning + {metrics['traces']['non_reasoning']} non-reasoning).")
        card = training.model_card(NAME, ctx.parent_manifests, cfg, summary)
        metrics.update(training.sft_model(ctx, NAME, student, tokenizer, dataset, cfg, ctx.trainer_dir,
                                          ctx.metrics_path, ctx.output("model"), card,
                                          adapter=training.adapter_output(ctx)))
    else:
        metrics.update(_logit_distill(ctx, student, tokenizer, teacher_dir, rows))  # on-policy: no fixed traces

    if (cfg.get("baseline") or {}).get("enabled"):
        metrics["baseline"] = _baseline(ctx, teacher_dir, metrics["global_step"])
    return metrics


def _student(ctx, teacher_dir: Path):
    """The student model and its tokenizer: a given smaller model, or one built from `arch` on the teacher's
    tokenizer (same vocabulary, so logit distillation works too)."""
    s, remote = ctx.config["student"], ctx.trust_remote_code
    dtype = ctx.config.get("dtype", "float32")
    if s.get("model"):
        tok = models.load_tokenizer(s["model"], trust_remote_code=remote, revision=s.get("revision"), check=False)
        model = models.load_causal_lm(s["model"], dtype=dtype, trust_remote_code=remote, revision=s.get("revision"))
        models.prepare_for_r1(tok, model, tags=s.get("tags") or "tokens")
        return model, tok
    tok = models.load_tokenizer(teacher_dir, trust_remote_code=remote)
    return models.build_model(tok, s["arch"], seed=ctx.seed), tok


def _logit_distill(ctx, student, tokenizer, teacher_dir: Path, rows) -> dict[str, Any]:
    """On-policy logit distillation with TRL's DistillationTrainer (student and teacher share the vocabulary)."""
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    teacher = models.load_causal_lm(teacher_dir, dtype=ctx.config.get("dtype", "float32"),
                                    trust_remote_code=ctx.trust_remote_code)
    if teacher.config.vocab_size != student.config.vocab_size:
        raise R1Error(f"{NAME}: method logits needs one vocabulary, but the teacher has {teacher.config.vocab_size} "
                      f"tokens and the student {student.config.vocab_size}", hint="use method: sft")
    args = training.trl_config(DistillationConfig, NAME, _method(ctx.config)[1], ctx.trainer_dir, ctx.seed)
    dataset = Dataset.from_list([{"prompt": data.ask(r)} for r in rows])
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset,
                                  processing_class=tokenizer, peft_config=training.lora(NAME, ctx.config))
    metrics = training.train(trainer, ctx.metrics_path)
    summary = f"A student distilled on-policy from `{parents(ctx.config)[0]}`'s logits on {len(rows)} prompts."
    training.save_trained(trainer, tokenizer, ctx.output("model"),
                          training.model_card(NAME, ctx.parent_manifests, ctx.config, summary),
                          adapter=training.adapter_output(ctx))
    return {**metrics, "prompts": len(rows)}


def _baseline(ctx, teacher_dir: Path, steps: int) -> dict[str, Any]:
    """The same student architecture and settings trained by SFT on baseline.data for the student's number of
    optimizer steps: what the student would be without the teacher, at the same compute."""
    student, tokenizer = _student(ctx, teacher_dir)
    return training.train_baseline(ctx, NAME, student, tokenizer, steps,
                                   "The distill student's architecture trained on {rows} baseline examples alone, "
                                   f"for the student's {steps} optimizer steps.")
