"""alignment_rl: the second RL stage, for helpfulness and harmlessness while keeping reasoning (DeepSeek-R1 §2.3.4).

    r1pipe run --stage alignment_rl conf=tiny

GRPO from second_sft on a mix of prompts. Reasoning prompts keep the rule rewards (accuracy, format); general
prompts are judged by reward models: helpfulness on the summary only, harmlessness on the whole response
(`r1pipe/preference.py`). The language-consistency reward applies to both. Every reward returns None where it
does not apply, and TRL sums only the rest. Preference rewards can be limited to the last `preference_steps`
steps (R1: the last 400 of 1,700, against reward hacking). Rollouts at temperature 0.7 (R1).

Before training and after it, the starting and the trained model answer held-out general prompts (phrasings no
training prompt uses), and each preference reward scores the answers: `heldout_preference` in the manifest,
with the paired difference and its standard error. The reasoning evaluation runs as for every model stage.
The trainer: block is trl.GRPOConfig, field for field.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from r1pipe import data, preference, rewards, stages, training
from r1pipe.errors import R1Error
from r1pipe.manifest import read_json_dict, write_json_atomic
from r1pipe.stages import Source, reasoning_rl

NAME = "alignment_rl"
VERSION = 1  # bump when a change alters what this stage computes (it is part of the fingerprint)
OUTPUTS = ("model", "adapter")  # adapter: LoRA only (a peft: block), model: merged with it
# held-out general prompts only measure the models (not trained on, so not decontaminated)
SOURCES = (Source("data", ("prompt", "answer")), Source("general_data", ("prompt",)),
           Source("general_heldout", ("prompt",), task=False))
PROGRESS = ("general_before.json",)  # the starting model's held-out answers (prepare() writes them)
DISTRIBUTED = True  # a launcher runs run() on every rank; rank 0 alone measures the held-out preference
GRPO = True


def parents(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The starting model, then every stage a preference reward names as its model (e.g. reward_model)."""
    init = cfg.get("init") or "second_sft"
    judges = [p["model"] for p in (cfg.get("preference_rewards") or {}).values()
              if p and p.get("model") in stages.names()]
    return tuple(dict.fromkeys([init, *judges]))


def models_named(cfg: dict[str, Any]) -> dict[str, Any]:
    """Each preference reward's model that is not a stage (a local path or a hub id)."""
    return {f"preference_rewards.{name}.model": p["model"] for name, p in (cfg.get("preference_rewards") or {}).items()
            if p and p.get("model") not in stages.names()}


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    from trl import GRPOConfig

    block = reasoning_rl.validation_block(reasoning_rl.trainer_block(NAME, cfg, _weights(cfg)), world_size)
    training.trl_config(GRPOConfig, NAME, block, Path("unused"), seed=0)
    training.lora(NAME, cfg)
    rewards.build(cfg["rewards"])
    reasoning_rl.check_rollouts(NAME, cfg)
    for name, p in (cfg.get("preference_rewards") or {}).items():
        if p is None:
            continue
        for key in ("model", "scope"):
            if not p.get(key):
                raise R1Error(f"{NAME}.preference_rewards.{name}.{key} is not set",
                              hint="model: a stage name (reward_model), a local path or a hub id; scope: summary | response")
        preference.judged_text("", p["scope"])
        model = str(p["model"])
        if model not in stages.names() and not Path(model).exists() and model.count("/") != 1:
            raise R1Error(f"{NAME}.preference_rewards.{name}.model={model!r} is not a stage, a local path or a hub id",
                          hint="e.g. reward_model (the stage), ./my_rm, or org/name")
        if name in cfg["rewards"]:
            raise R1Error(f"{NAME}: reward {name!r} is both a rule reward and a preference reward", hint="rename one")
    if any(p for p in (cfg.get("preference_rewards") or {}).values()) and not cfg.get("general_data"):
        raise R1Error(f"{NAME}: preference rewards judge general prompts, but general_data is not set",
                      hint=f"set {NAME}.general_data, or preference_rewards=null for reasoning prompts alone")
    if cfg.get("preference_steps") is not None and int(cfg["trainer"].get("max_steps", -1)) <= 0:
        raise R1Error(f"{NAME}.preference_steps needs trainer.max_steps (the last N of how many steps?)",
                      hint="set trainer.max_steps, or preference_steps=null to use them on every step")


def _weights(cfg: dict[str, Any]) -> list[float]:
    """One weight per reward, rule rewards first, then preference rewards: the order run() builds them in."""
    return rewards.weights(cfg["rewards"]) + rewards.weights(cfg.get("preference_rewards") or {})


def prepare(ctx) -> None:
    """Under a launcher, once, before the ranks start: the starting model's answers to the held-out general
    prompts (the 'before' of heldout_preference), written for rank 0 to read."""
    cfg = ctx.config
    heldout = _heldout(cfg)
    if heldout and any(p for p in (cfg.get("preference_rewards") or {}).values()):
        init_dir = ctx.parent_output(parents(cfg)[0], "model")
        model, tokenizer = ctx.load_model(init_dir)
        _before(ctx, model, tokenizer, heldout, cfg)


def _heldout(cfg) -> list[dict[str, Any]]:
    """Each distinct held-out general prompt once: repeats would shrink the standard errors falsely."""
    if not cfg.get("general_heldout"):
        return []
    rows = data.load_rows(cfg["general_heldout"], need=("prompt",), where="alignment_rl.general_heldout")
    return list({r["prompt"]: r for r in rows}.values())


def _before(ctx, model, tokenizer, heldout, cfg) -> dict[str, list]:
    """The starting model's answers, computed once per attempt (prepare() or run(), whichever comes first)."""
    path = ctx.dir / "general_before.json"
    cached = read_json_dict(path)
    if cached and cached.get("prompts") == [r["prompt"] for r in heldout]:
        return cached["answers"]
    from r1pipe.generation import on_accelerator

    # on the GPU only when sampling here: ranks under ZeRO-3/FSDP read the cache and keep their model where the
    # launcher's sharding expects it (a whole model on every GPU first could not fit)
    answers = _general_answers(ctx, "before", on_accelerator(model), tokenizer, heldout, cfg)
    write_json_atomic(path, {"prompts": [r["prompt"] for r in heldout], "answers": answers})
    return answers


def run(ctx) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = ctx.config
    init = parents(cfg)[0]
    init_dir = ctx.parent_output(init, "model")
    args = training.trl_config(GRPOConfig, NAME, reasoning_rl.trainer_block(NAME, cfg, _weights(cfg)), ctx.trainer_dir, ctx.seed,
                                trust_remote_code=ctx.trust_remote_code)
    remote, dtype = ctx.trust_remote_code, cfg.get("dtype", "float32")

    start = 0
    if cfg.get("preference_steps") is not None:
        start = max(0, int(cfg["trainer"]["max_steps"]) - int(cfg["preference_steps"]))
    judges: dict[str, tuple[Any, str]] = {}  # name -> (RewardModel, scope); one model loaded once per path
    loaded: dict[str, Any] = {}
    for name, p in (cfg.get("preference_rewards") or {}).items():
        if p is None:
            continue
        path = str(ctx.parent_output(p["model"], "model")) if p["model"] in ctx.parent_manifests else p["model"]
        if path not in loaded:
            loaded[path] = preference.RewardModel(path, dtype=p.get("dtype", dtype), trust_remote_code=remote)
        judges[name] = (loaded[path], p["scope"])
    rule_funcs, _ = rewards.build(cfg["rewards"])
    pref_funcs = [preference.preference_reward(n, rm, scope, start) for n, (rm, scope) in judges.items()]

    reasoning = ctx.load_rows(cfg["data"], ("prompt", "answer"), "data")
    general = ctx.load_rows(cfg["general_data"], ("prompt",), "general_data") if cfg.get("general_data") else []
    rows = [{"turns": data.ask(r), "answer": r["answer"], "kind": "reasoning"} for r in reasoning]
    rows += [{"turns": data.ask(r), "answer": "", "kind": "general"} for r in general]
    random.Random(ctx.seed).shuffle(rows)
    dataset = Dataset.from_list([
        {"prompt": r["turns"], "answer": r["answer"], "verifier": cfg["verifier"], "kind": r["kind"]}
        for r in rows
    ])  # fmt: skip

    model, tokenizer = ctx.load_model(init_dir)
    heldout = _heldout(cfg)
    measure = bool(heldout and judges and training.is_main())
    before = _before(ctx, model, tokenizer, heldout, cfg) if measure else None

    rollout = reasoning_rl.rollout_func(cfg, args)
    trainer = GRPOTrainer(model=model, reward_funcs=rule_funcs + pref_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=training.lora(NAME, cfg), rollout_func=rollout)
    trainer.add_callback(reasoning_rl.samples_callback(trainer, ctx.dir / "samples.jsonl", cfg["log_samples"]))
    metrics = training.train(trainer, ctx.metrics_path)
    metrics["rollouts"] = "r1pipe engine" if rollout else "trl"

    summary = (f"GRPO from `{init}` on {len(reasoning)} reasoning and {len(general)} general prompts; rule rewards "
               f"{', '.join(f.__name__ for f in rule_funcs)}; preference rewards "
               f"{', '.join(f'{n} ({s})' for n, (_, s) in judges.items()) or 'none'}.")
    # the model as saved (LoRA: merged) answers the held-out prompts 'after'
    model = training.save_trained(trainer, tokenizer, ctx.output("model"),
                                  training.model_card(NAME, ctx.parent_manifests, cfg, summary),
                                  adapter=training.adapter_output(ctx))
    metrics.update(reasoning_prompts=len(reasoning), general_prompts=len(general), preference_from_step=start,
                   **reasoning_rl.last_logged(ctx.metrics_path))
    if before is not None:
        after = _general_answers(ctx, "after", model, tokenizer, heldout, cfg)
        metrics["heldout_preference"] = _compare(judges, heldout, before, after, init)
        _write_samples(ctx.dir / "general_samples.jsonl", heldout, before, after)
    return metrics


def _general_answers(ctx, when: str, model, tokenizer, rows, cfg) -> dict[str, list]:
    """Greedy and k sampled answers to the held-out general prompts (R1's evaluation sampling)."""
    from r1pipe.generation import Sampling, generate

    e = cfg["preference_eval"]
    common = dict(max_new_tokens=e["max_new_tokens"], batch_size=e["batch_size"], seed=e.get("seed", 0))
    prompts = [r["prompt"] for r in rows]
    greedy = [o[0] for o in generate(model, tokenizer, prompts, Sampling(n=1, **common), desc=f"general ({when})")]
    sampled = generate(model, tokenizer, prompts, Sampling(n=e["k"], temperature=e["temperature"], top_p=e["top_p"], **common),
                       desc=f"general ({when}, k={e['k']})") if e["k"] else [[] for _ in rows]
    return {"greedy": greedy, "samples": sampled}


def _scores(rm, scope: str, prompts: list[str], answers: dict[str, list]) -> tuple[list[float], list[float]]:
    """Per prompt: the greedy answer's score and the mean score of the sampled answers."""
    from r1pipe.preference import judged_text

    greedy = rm.score(prompts, [judged_text(a, scope) for a in answers["greedy"]])
    k = len(answers["samples"][0]) if answers["samples"] else 0
    if not k:
        return greedy, []
    flat = rm.score([p for p in prompts for _ in range(k)], [judged_text(a, scope) for s in answers["samples"] for a in s])
    return greedy, [sum(flat[i * k : (i + 1) * k]) / k for i in range(len(prompts))]


def _compare(judges, rows, before, after, init: str) -> dict[str, Any]:
    """Mean preference reward of the starting and the trained model on the same prompts, and the paired
    difference, for each preference reward, over greedy answers and over samples."""
    from r1pipe.evaluation import mean_se

    prompts = [r["prompt"] for r in rows]
    out: dict[str, Any] = {"prompts": len(rows), "baseline": init}
    for name, (rm, scope) in judges.items():
        b_greedy, b_sampled = _scores(rm, scope, prompts, before)
        a_greedy, a_sampled = _scores(rm, scope, prompts, after)
        res: dict[str, Any] = {"scope": scope}
        for label, b, a in (("greedy", b_greedy, a_greedy), ("sampled", b_sampled, a_sampled)):
            if not a:
                continue
            res[f"{label}_{init}"], res[f"{label}_{init}_se"] = mean_se(b)
            res[f"{label}_{NAME}"], res[f"{label}_{NAME}_se"] = mean_se(a)
            res[f"{label}_diff"], res[f"{label}_diff_se"] = mean_se([y - x for x, y in zip(b, a)])
        out[name] = res
    return out


def _write_samples(path: Path, rows, before, after) -> None:
    from r1pipe.evaluation import write_samples

    write_samples(path, [
        {"prompt": r["prompt"], "reference": r.get("solution"),
         "before": {"greedy": before["greedy"][i], "samples": before["samples"][i]},
         "after": {"greedy": after["greedy"][i], "samples": after["samples"][i]}}
        for i, r in enumerate(rows)
    ])  # fmt: skip
