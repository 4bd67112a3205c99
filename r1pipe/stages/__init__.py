"""The stage registry: every fact about a stage comes from its own module, and nothing else lists stages.

A stage is one module (here, named as in the paper, or anywhere, added with `register`) and one YAML
(`conf/stage/<NAME>.yaml`, or `stage/<NAME>.yaml` under the module's CONF_DIR). The module declares:

    NAME, VERSION           its name (module, config key, directory, manifest) and the code version in its
                            fingerprint (bumped by hand when a change alters what it computes)
    PARENTS or parents(cfg) the stages it reads (reasoning_rl starts from cold_sft, or from base in R1-Zero)
    OUTPUTS                 what `run` writes through ctx.output(key)
    run(ctx)                the work; returns the manifest's metrics
optional:
    SOURCES                 the data sources it reads (Source: config key, columns, task data or not). Task
                            data is decontaminated against the eval benchmarks, checked by --dry-run, named
                            in the model card; ctx.load_rows refuses a source a stage did not declare
    PROGRESS                files an interrupted attempt leaves that a rerun resumes from (globs under the
                            stage's directory; Trainer checkpoints always count)
    DISTRIBUTED = True      a launcher may run `run` on several ranks at once (trainer stages); `prepare(ctx)`
                            is then their one-process part (generation), run first by the launching process
    GRPO = True             it trains with GRPO (batch rules, slurm's vLLM server)
    EVALUATE = False        its `model` output writes no answers (a reward model): no reasoning evaluation
    validate(cfg, world_size)  pre-flight checks that load no model
    models_named(cfg)       the config keys naming a model to load (a local directory's content is fingerprinted)
    CONF_DIR                a directory holding stage/<NAME>.yaml, for a stage outside r1pipe

Modules import torch/TRL inside `run`, so reading the registry stays cheap. docs/stages.md: adding a stage.

    base ──> cold_sft ──> reasoning_rl ──> rejection_sampling ──> second_sft ──> alignment_rl ──> distill
      └──────────────────────────────────────> reward_model ──────────────────────────┘
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from r1pipe.errors import R1Error

# r1pipe's own stages, in topological order; run-all walks the registry front to back.
BUILTIN = ("base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl",
           "distill")
PREFERENCES = "preferences"  # a Source's columns: chosen/rejected pairs (data.load_preferences)


@dataclass(frozen=True)
class Source:
    """A data source a stage reads: the dotted key of its config that holds it, the columns it needs (or
    PREFERENCES), whether it is task data (decontaminated against the eval benchmarks; False for a held-out
    set or a tokenizer corpus), and `when`, the configs in which the stage reads it at all."""

    key: str
    need: tuple[str, ...] | str
    task: bool = True
    when: Callable[[dict[str, Any]], bool] | None = None

    def read_by(self, cfg: dict[str, Any]) -> bool:
        return isinstance(at(cfg, self.key), dict) and (self.when is None or bool(self.when(cfg)))


def at(node: Any, dotted: str) -> Any:
    """`node[a][b]` for "a.b", None where a level is missing."""
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


@dataclass(frozen=True)
class Stage:
    """One registered stage: its module, read through the protocol above with its defaults filled in."""

    module: ModuleType

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def version(self) -> str:
        """Deliberately not a hash of the source: a comment or a refactor must not retrain every model of every
        run (the manifest records the git commit for the exact code)."""
        return f"{self.name}/v{self.module.VERSION}"

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.module.OUTPUTS)

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(getattr(self.module, "SOURCES", ()))

    @property
    def progress(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, "PROGRESS", ()))

    @property
    def distributed(self) -> bool:
        return bool(getattr(self.module, "DISTRIBUTED", False))

    @property
    def grpo(self) -> bool:
        return bool(getattr(self.module, "GRPO", False))

    @property
    def evaluates(self) -> bool:
        return bool(getattr(self.module, "EVALUATE", True))

    @property
    def conf_dir(self) -> Path | None:
        d = getattr(self.module, "CONF_DIR", None)
        return Path(d) if d else None

    def parents(self, config: dict[str, Any] | None = None) -> tuple[str, ...]:
        """The stages it reads, given its resolved config (None: the module's defaults)."""
        if hasattr(self.module, "parents"):
            return tuple(self.module.parents(config or {}))
        return tuple(self.module.PARENTS)

    def reads(self, config: dict[str, Any]) -> list[Source]:
        """The sources this config makes it read."""
        return [s for s in self.sources if s.read_by(config)]

    def reads_task_data(self, config: dict[str, Any]) -> bool:
        """Whether it trains on task data under this config: its config then carries the decontamination
        settings (switching them changes its fingerprint) and its manifest says what was removed."""
        return any(s.task and (s.when is None or s.when(config)) for s in self.sources)

    def models(self, config: dict[str, Any]) -> dict[str, Any]:
        """{config key: local path or hub id} for each model it loads that no stage writes (models_named)."""
        named = self.module.models_named(config) if hasattr(self.module, "models_named") else {}
        return {k: v for k, v in named.items() if v}

    @staticmethod
    def revision(config: dict[str, Any], key: str) -> str | None:
        """The hub revision pinned beside a model key: `revision` for `model`, `student.revision` for
        `student.model`."""
        return at(config, key.removesuffix("model") + "revision")

    def local_models(self, config: dict[str, Any]) -> dict[str, Path]:
        """{config key: directory} for each model it loads that is a directory here (as transformers decides: a
        directory is loaded from disk, anything else is a hub id). Their content enters its fingerprint."""
        return {k: Path(str(v)).expanduser() for k, v in self.models(config).items()
                if Path(str(v)).expanduser().is_dir()}

    def check(self) -> None:
        """The protocol, checked at registration: a module that breaks it fails here, naming what is wrong."""
        mod = self.module
        where = f"stage module {mod.__name__}"
        for attr in ("NAME", "VERSION", "OUTPUTS", "run"):
            if not hasattr(mod, attr):
                raise R1Error(f"{where} has no {attr}", hint="see r1pipe/stages/__init__.py for what a stage declares")
        if not hasattr(mod, "PARENTS") and not hasattr(mod, "parents"):
            raise R1Error(f"{where} declares neither PARENTS nor parents(cfg)", hint="PARENTS = () for a root stage")
        if not isinstance(mod.NAME, str) or not mod.NAME.isidentifier():
            raise R1Error(f"{where}: NAME must be an identifier (it names a config key and a directory)")
        if not isinstance(mod.VERSION, int) or not callable(mod.run):
            raise R1Error(f"{where}: VERSION must be an int and run a function")
        for s in self.sources:
            if not isinstance(s, Source):
                raise R1Error(f"{where}: SOURCES holds {s!r}", hint="declare each as stages.Source(key, need)")


_REGISTRY: dict[str, Stage] = {}


def _registry() -> dict[str, Stage]:
    """The registry, r1pipe's own stages loaded first (all or none: a failed import leaves it empty)."""
    if not _REGISTRY:
        builtin = [Stage(importlib.import_module(f"r1pipe.stages.{name}")) for name in BUILTIN]
        for stage in builtin:
            stage.check()
        _REGISTRY.update((s.name, s) for s in builtin)
    return _REGISTRY


def register(mod: ModuleType) -> Stage:
    """Add a stage (after every stage registered before it: its parents must come first)."""
    stage = Stage(mod)
    stage.check()
    known = _registry()
    if stage.name in known and known[stage.name].module is not mod:
        raise R1Error(f"a stage named {stage.name} is already registered", hint="give the new stage another NAME")
    known[stage.name] = stage
    return stage


def unregister(name: str) -> None:
    if name in BUILTIN:
        raise R1Error(f"{name} is one of r1pipe's own stages")
    _registry().pop(name, None)


def names() -> list[str]:
    """Every registered stage, in topological order."""
    return list(_registry())


def get(name: str) -> Stage:
    reg = _registry()
    if name not in reg:
        raise R1Error(f"unknown stage {name!r}", hint=f"stages are: {', '.join(reg)}")
    return reg[name]


def module(name: str) -> ModuleType:
    return get(name).module


def parents(name: str, config: dict | None = None) -> tuple[str, ...]:
    return get(name).parents(config)
