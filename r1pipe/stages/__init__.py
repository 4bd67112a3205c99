"""The stage graph. Each stage is one module here, named as in the paper, declaring NAME, PARENTS, OUTPUTS
and `run(ctx)`. Modules import torch/TRL inside `run`, so reading the graph stays cheap for the CLI.

    base ──> cold_sft ──> reasoning_rl ──> rejection_sampling ──> second_sft ──> alignment_rl ──> distill
"""

from __future__ import annotations

import hashlib
import importlib
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType

from r1pipe import __version__
from r1pipe.errors import R1Error

# Topological order: run-all walks it front to back.
ORDER = ["base", "cold_sft"]


def module(name: str) -> ModuleType:
    if name not in ORDER:
        raise R1Error(f"unknown stage {name!r}", hint=f"stages are: {', '.join(ORDER)}")
    return importlib.import_module(f"r1pipe.stages.{name}")


def parents(name: str) -> tuple[str, ...]:
    return tuple(module(name).PARENTS)


def descendants(name: str) -> list[str]:
    out: list[str] = []
    for s in ORDER:
        if any(p == name or p in out for p in parents(s)):
            out.append(s)
    return out


@cache
def code_version(name: str) -> str:
    """Hash of the stage's source and r1pipe's version: editing a stage makes its outputs stale."""
    spec = find_spec(f"r1pipe.stages.{name}")
    source = Path(spec.origin).read_bytes() if spec and spec.origin else b""
    return hashlib.sha256(source + __version__.encode()).hexdigest()[:16]
