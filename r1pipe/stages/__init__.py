"""The stage graph. Each stage is one module here, named as in the paper, declaring NAME, OUTPUTS, `run(ctx)`
and its parents: a PARENTS tuple, or `parents(config)` where the config picks them (reasoning_rl starts from
cold_sft, or from base in R1-Zero). Optional: `validate(config, world_size)`, pre-flight checks that load no
model; DISTRIBUTED = True when a launcher may run `run` on several ranks at once (trainer stages); and
`prepare(ctx)`, their one-process part (generation) that the launching process runs first; and
`models_named(config)`, the config keys naming a model to load (a local directory's content is fingerprinted).
Modules import torch/TRL inside `run`, so reading the graph stays cheap.

    base ──> cold_sft ──> reasoning_rl ──> rejection_sampling ──> second_sft ──> alignment_rl ──> distill
      └──────────────────────────────────────> reward_model ──────────────────────────┘
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from r1pipe.errors import R1Error

# Topological order: run-all walks it front to back.
ORDER = ["base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl", "distill"]


def module(name: str) -> ModuleType:
    if name not in ORDER:
        raise R1Error(f"unknown stage {name!r}", hint=f"stages are: {', '.join(ORDER)}")
    return importlib.import_module(f"r1pipe.stages.{name}")


def parents(name: str, config: dict | None = None) -> tuple[str, ...]:
    """The stages `name` reads, given its resolved config (None: the module's defaults)."""
    mod = module(name)
    if hasattr(mod, "parents"):
        return tuple(mod.parents(config or {}))
    return tuple(mod.PARENTS)


def local_models(name: str, config: dict) -> dict[str, Path]:
    """The local model directories the stage reads: {config key: directory} for each key its module's
    `models_named(config)` lists whose value is a directory here (as transformers decides: a directory is
    loaded from disk, anything else is a hub id). Their content enters the stage's fingerprint."""
    mod = module(name)
    named = mod.models_named(config) if hasattr(mod, "models_named") else {}
    return {key: Path(str(v)).expanduser() for key, v in named.items() if v and Path(str(v)).expanduser().is_dir()}


def code_version(name: str) -> str:
    """The stage's VERSION: bumped by hand when a change alters what the stage computes.

    Deliberately not a hash of the source: a comment or a refactor must not retrain every model of every run
    (the manifest records the git commit for the exact code)."""
    return f"{name}/v{module(name).VERSION}"
