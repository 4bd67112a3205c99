"""Where each stage of a run stands (complete, partial, stale, corrupt, missing), and the plan that follows:
skip, run, resume or rerun. Reads manifests and stats files; loads no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from r1pipe import config as config_mod
from r1pipe import manifest as mf
from r1pipe import stages, store
from r1pipe.errors import R1Error
from r1pipe.graph import chain, parents_of


def states(cfg, full: bool = False) -> dict[str, mf.StageState]:
    """The state of every stage, in graph order. Each child's expected fingerprint uses its parents' manifests.

    A stage's state is its store entry's (r1pipe/store.py): the entry for the fingerprint expected now. When
    that entry does not exist but the run links to another one, the stage is stale, and the reason names what
    changed (the other entry stays in the store). A run made before the store reads its stage directories
    as they are until the runner adopts them."""
    root = config_mod.run_dir(cfg)
    store_root = store.root(cfg)
    out: dict[str, mf.StageState] = {}
    for name in chain(cfg):
        stage = stages.get(name)
        parent_states = [out[p] for p in parents_of(cfg, name)]
        stage_cfg, now = config_mod.stage_config(cfg, name), store.current(root, name)
        # local model directories (base.model, a distill student, a reward model by path) by content
        inputs = mf.local_inputs(now or root / name, stage.local_models(stage_cfg))
        expected = None
        if all(p.complete for p in parent_states):
            expected = mf.fingerprint(
                name,
                stage_cfg,
                [mf.parent_lineage(p.manifest) for p in parent_states],
                stage.version,
                model_dirs={key: rec["sha256"] for key, rec in inputs.items()},
            )
        if store.is_legacy(root, name) or expected is None:
            where = now or store.entry(store_root, name, "none")
        else:
            where = store.entry(store_root, name, expected)
        # read through the run's link when it leads there: messages then name the paths the user knows
        read_at = root / name if now == where else where
        s = mf.stage_state(read_at, expected, has_progress(where, name), full=full, inputs=inputs, name=name)
        if s.state == "missing" and now is not None and now != where and expected is not None:
            before = mf.stage_state(now, expected, False, inputs=inputs, name=name)
            if before.state == "stale":  # the run used another entry: say what changed; that entry is kept
                s = before
                s.reason += f" (the entry it used, {now.name[:12]}, stays in the store)"
        s.dir, s.linked = where, now == where
        out[name] = s
    return out


def has_progress(stage_dir: Path, name: str) -> bool:
    """Work an interrupted attempt left behind that a rerun continues from: a Trainer checkpoint, or what the
    stage declares as PROGRESS (a finished generation shard, the difficulty filter's pass rates ...)."""
    trainer = stage_dir / "trainer"
    if trainer.is_dir() and any(mf.read_json_dict(c / "trainer_state.json") is not None for c in trainer.glob("checkpoint-*")):
        return True
    return any(any(stage_dir.glob(pattern)) for pattern in stages.get(name).progress)


# what run-all does with a stage: skip it (complete; its store entry linked), run it (a new entry: nothing yet,
# its config or a parent changed, or a parent will run), resume an interrupted attempt, rerun it (--force: its
# entry is replaced), or only evaluate it (complete, but its evaluation did not finish)
Action = Literal["skip", "run", "resume", "rerun", "evaluate"]


@dataclass
class Step:
    stage: str
    action: Action
    reason: str
    dir: Path | None = None  # the store entry a skipped stage is complete in (the runner links it)


def plan(cfg, targets: list[str], force: bool = False) -> list[Step]:
    """What `run-all` would do for `targets` (in order), without loading anything heavy."""
    st = states(cfg)
    will_run: set[str] = set()
    steps = []
    for name in targets:
        s = st[name]
        upstream = [p for p in parents_of(cfg, name) if p in will_run]
        if s.newer:  # another r1pipe's finished work: not ours to rebuild, even with --force
            raise R1Error(s.reason)
        if force:
            steps.append(Step(name, "rerun" if s.manifest else "run", "--force"))
        elif upstream:  # a new entry (or, if the parent's new outputs are byte-identical, a skip then)
            steps.append(Step(name, "run", f"parent {upstream[0]} will run"))
        elif s.state == "corrupt":  # nothing is touched: the user decides whether the change was meant
            raise corrupt(name, s.reason, conf_overrides(cfg))
        elif s.state == "complete":
            steps.append(Step(name, "skip", "complete, fingerprint matches" if s.linked
                              else "complete in the store (run-all links it)", s.dir))
            continue
        elif s.state == "partial":
            steps.append(Step(name, "resume", s.reason))
        elif s.state == "stale":  # a new entry: the one the run used stays in the store
            steps.append(Step(name, "run", s.reason))
        else:
            steps.append(Step(name, "run", s.reason))
        will_run.add(name)
    return steps


def corrupt(stage: str, problem: str, overrides: str, reader: str | None = None) -> R1Error:
    """The refusal to use (or build on) a stage whose finished files changed: what, where, and the rebuild."""
    what = f"stage {reader} cannot read {stage}" if reader else stage
    return R1Error(f"{what}: {problem}", hint=f"to rebuild it: r1pipe run --stage {stage} --force {overrides}".strip())


def conf_overrides(cfg) -> str:
    """The preset and run directory as overrides, for commands quoted in hints."""
    return f"conf={cfg.preset} run.dir={config_mod.run_dir(cfg)}"
