"""Pre-flight checks of the stages about to run, before any model loads: each stage's config against its TRL
config class at the world size its launcher will start, the GRPO batch arithmetic, the launcher, and the data
sources' kinds. Used by every run and by `run-all --dry-run` (r1pipe/preflight.py), which adds the data itself.
"""

from __future__ import annotations

from r1pipe import config as config_mod
from r1pipe import data, launch, stages
from r1pipe.errors import R1Error


def validate(cfg, names: list[str]) -> None:
    """Pre-flight checks of each stage's config (TRL field names and types, batch arithmetic), no model loaded."""
    if names and cfg.eval.after_stage:
        from r1pipe.evaluation import check_settings

        check_settings(config_mod.to_plain(cfg.eval))
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
        if hasattr(stage.module, "validate"):
            stage.module.validate(stage_cfg, world_size=world)  # the processes the launcher will start (batch rules)
