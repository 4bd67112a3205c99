"""The stage graph one config runs: which stages (`run.stages`, in the registry's order), what each reads,
and the slice `run-all --from/--to` selects. Pure functions of the config and the registry: nothing on disk.
"""

from __future__ import annotations

from r1pipe import config as config_mod
from r1pipe import stages
from r1pipe.errors import R1Error


def chain(cfg) -> list[str]:
    """The stages this config runs, in graph order (`run.stages`; R1-Zero, for one, has no cold_sft)."""
    order = stages.names()
    chosen = list(cfg.run.get("stages") or order)
    for name in chosen:
        stages.get(name)  # unknown names fail here, with the list of stages
        for p in parents_of(cfg, name):
            stages.get(p)
            if order.index(p) >= order.index(name):
                raise R1Error(f"stage {name} cannot read {p}: it comes later in the graph", hint="check its init:")
            if p not in chosen:
                raise R1Error(f"stage {name} reads {p}, which run.stages leaves out", hint=f"add {p} to run.stages")
    return [s for s in order if s in chosen]


def parents_of(cfg, name: str) -> tuple[str, ...]:
    return stages.parents(name, config_mod.stage_config(cfg, name))


def select(cfg, start: str | None, stop: str | None) -> list[str]:
    """The stages from `start` to `stop` (inclusive) of this config's chain."""
    order = chain(cfg)
    for s in (start, stop):
        if s is not None and s not in order:
            stages.get(s)  # an unknown name fails with the list of stages
            raise R1Error(f"stage {s} is not in this recipe", hint=f"run.stages: {', '.join(order)}")
    i = order.index(start) if start else 0
    j = order.index(stop) + 1 if stop else len(order)
    if i >= j:
        raise R1Error(f"--from {start} comes after --to {stop}", hint=f"stage order: {' -> '.join(order)}")
    return order[i:j]
