"""Pre-flight checks of the stages about to run, before any model loads: each stage's config against its TRL
config class at the world size its launcher will start, the GRPO batch arithmetic, the launcher, and the data
sources' kinds, each hub model within reach. Used by every run and by `run-all --dry-run` (r1pipe/preflight.py),
which adds the data itself. Also the warning for a preset's batch sizes set for another number of processes.
"""

from __future__ import annotations

import math

from r1pipe import benchmarks, data, hub, launch, needs, stages, verifiers
from r1pipe import config as config_mod
from r1pipe.errors import R1Error


def validate(cfg, names: list[str]) -> None:
    """Pre-flight checks of each stage's config (TRL field names and types, batch arithmetic), no model loaded."""
    code_checked_in: list[str] = []  # what runs model-written programs: the sandbox must work before it starts
    if names and cfg.eval.after_stage:
        from r1pipe.evaluation import benchmark_specs, check_settings

        check_settings(config_mod.to_plain(cfg.eval))
        code_checked_in += [f"eval.benchmarks.{b}" for b, spec in benchmark_specs(config_mod.to_plain(cfg.eval)).items()
                            if benchmarks.verifier(spec) == "code"]
    launcher = launch.spec(cfg)
    launch.check(launcher)
    # a source that names two kinds (a +KEY={path: ...} merged into a builtin) fails here, naming the task key
    origins = {f"task.{k}": v for k, v in config_mod.to_plain(cfg.task).items()} if cfg.get("task") else {}
    for name in names:
        stage = stages.get(name)
        stage_cfg = config_mod.stage_config(cfg, name)
        data.check_sources(stage_cfg, name, origins)
        world = launch.world_size(launcher) if launch.distributes(launcher, stage) else 1
        if world > 1:
            launch.check_installed(launcher)
        if stage.grpo:
            launch.check_grpo_batch(name, stage_cfg["trainer"], world)
        sharding = launch.shards_weights(launcher) if launch.distributes(launcher, stage) else None
        if stage_cfg.get("peft") is not None and sharding:
            # the merge at the end needs each weight whole on a rank (training.save_trained)
            raise R1Error(f"{name}.peft: a LoRA stage saves its adapter merged into whole weights, which {sharding} "
                          "splits across ranks", hint=f"use launcher=deepspeed_zero2 or torchrun (every rank holds the "
                          f"frozen base once), or {name}.peft=null")
        if stage_cfg.get("verifier") is not None:
            verifiers.check_name(stage_cfg["verifier"], f"{name}.verifier")
        if config_mod.runs_code(stage_cfg):
            code_checked_in.append(name)
        if hasattr(stage.module, "validate"):
            stage.module.validate(stage_cfg, world_size=world)  # the processes the launcher will start (batch rules)
        if not needs.elsewhere():  # a --dry-run checks each model's files and reports what it cannot reach
            for key, model in stage.models(stage_cfg).items():
                # a hub id neither cached nor reachable fails now, not when its stage starts hours later (after
                # the stage's own checks, which say more about a mistyped name)
                hub.require(model, f"{name}.{key}", revision=stage.revision(stage_cfg, key))
    if code_checked_in:
        check_sandbox(cfg, code_checked_in)


def check_sandbox(cfg, users: list[str]) -> None:
    """The sandbox settings, and that programs can run under them here (a bubblewrap that cannot start fails
    now, in one line, not at the first GRPO step)."""
    from r1pipe import sandbox

    settings = verifiers.check_sandbox(config_mod.to_plain(cfg.get("sandbox")))
    try:
        sandbox.check(settings["mode"])
    except R1Error as e:
        if needs.defer("bubblewrap, able to start (apt install bubblewrap)", ", ".join(users)):  # a --dry-run here
            return
        who = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        raise R1Error(f"{who} run{'s' if len(users) == 1 else ''} model-written programs: {e.message}",
                      hint=e.hint) from e


def world_size_warnings(cfg, names: list[str]) -> list[str]:
    """A preset whose batch sizes were set for N training processes (run.world_size), started on another number:
    every optimizer step then sees another batch than the preset's comments say (R1's 128 becomes 16 on one
    process of a preset sized for 8). A warning, not an error: a smaller machine may be what you mean."""
    want = (cfg.get("run") or {}).get("world_size")
    if want is None:
        return []
    if not isinstance(want, int) or isinstance(want, bool) or want < 1:
        raise R1Error(f"run.world_size={want!r} must be a whole number >= 1, or null",
                      hint="the training processes the preset's batch sizes are set for, e.g. run.world_size=8")
    spec = launch.spec(cfg)
    have = launch.world_size(spec)
    if have == want or not any(stages.get(n).distributed for n in names):
        return []
    share = f"{_ratio(have, want)} of" if have < want else f"{_ratio(have, want)} times"
    start = "launcher=local" if want == 1 else f"launcher.nproc x launcher.nnodes = {want}"
    return [f"{cfg.preset}'s batch sizes are set for {want} training process{'es' if want > 1 else ''} "
            f"(run.world_size={want}); launcher {spec['name']} starts {have}, so each optimizer step sees {share} "
            f"the batch its comments give. Start {want} ({start}), or multiply each stage's "
            f"gradient_accumulation_steps by {_ratio(want, have)} and set run.world_size={have}"]


def _ratio(a: int, b: int) -> str:
    """a/b in lowest terms ("1/8", "3/2"), or a whole number ("8")."""
    g = math.gcd(a, b)
    return f"{a // g}" if b // g == 1 else f"{a // g}/{b // g}"
