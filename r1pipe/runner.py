"""The runner: `r1pipe run` and `run-all`. It decides whether each stage runs, skips or resumes, and has it
executed; stages never decide this themselves. For one stage it
1. takes the run directory's lock,
2. checks that every parent is complete and its outputs intact (each file's size and mtime against the
   manifest; a file that moved is hashed again, and a changed one refuses the stage, naming the file),
3. takes the lock of the stage's store entry (r1pipe/store.py), waiting while another run writes it,
4. links a complete entry (a skip), resumes a partial attempt with the same fingerprint, or starts clean
   (r1pipe/state.py decides),
5. has it executed, its manifest written last and its model evaluated (r1pipe/execute.py).
"""

from __future__ import annotations

import logging
from typing import Any

from r1pipe import config as config_mod
from r1pipe import launch, store
from r1pipe import manifest as mf
from r1pipe.checks import validate, world_size_warnings
from r1pipe.errors import R1Error
from r1pipe.execute import evaluate_after, execute, wants_eval
from r1pipe.graph import chain, parents_of, select
from r1pipe.lock import RunLock
from r1pipe.state import Step, conf_overrides, corrupt, plan, states

log = logging.getLogger("r1pipe")


def run_stage(cfg, name: str, overrides: list[str], force: bool = False) -> dict[str, Any] | None:
    """Run one stage whose parents are complete. Returns its manifest (the existing one when skipped); on a
    multi-node launcher's nodes other than 0, which only start their workers, returns None."""
    launcher = launch.spec(cfg)
    if launch.is_follower(launcher):
        launch.check(launcher)
        launch.follow(cfg, name, launcher)
        return None
    return _run_stage(cfg, name, overrides, force)[0]


def _run_stage(cfg, name: str, overrides: list[str], force: bool) -> tuple[dict[str, Any], bool]:
    root = config_mod.run_dir(cfg)
    with RunLock(root):
        _adopt(cfg)
        st = states(cfg)
        if name not in st:
            raise R1Error(f"stage {name} is not in this recipe's run.stages", hint=f"stages here: {', '.join(st)}")
        for n in (name, *parents_of(cfg, name)):
            if st[n].newer:
                raise R1Error(st[n].reason)
        if st[name].state == "corrupt" and not force:
            raise corrupt(name, st[name].reason, " ".join(overrides))
        for p in parents_of(cfg, name):
            if not st[p].complete:
                raise incomplete_parent(name, p, st[p], overrides)
            store.use(root, p, st[p].dir, store.root(cfg))  # the child reads it through <run.dir>/<p>
            # the full check: every file whose size or mtime moved is hashed again before it is read
            problem = mf.outputs_intact(root / p, st[p].manifest, full=True)
            if problem:
                raise corrupt(p, problem, " ".join(overrides), reader=name)
        # One writer per entry: another run sharing the store may be writing this very entry; wait for it, then
        # look again (its result is ours: a skip).
        with store.lock(store.root(cfg), name, st[name].expected):
            s = states(cfg)[name]
            if s.expected != st[name].expected:  # a parent changed while this run waited for the entry
                raise R1Error(f"{name}: its parents changed while it waited for its store entry",
                              hint="run the same command again: it plans afresh")
            if s.state == "corrupt" and not force:
                raise corrupt(name, s.reason, " ".join(overrides))
            if s.complete and not force:
                store.link(root, name, s.dir)
                log.info("%s: complete, skipped (fingerprint %s)", name, s.expected[:12])
                return s.manifest, False
            validate(cfg, [name])
            _warn_world_size(cfg, [name])
            _record_run(cfg, overrides)
            parent_manifests = {p: st[p].manifest for p in parents_of(cfg, name)}
            return execute(cfg, name, s, parent_manifests, resume=(s.state == "partial" and not force)), True


def _record_run(cfg, overrides: list[str]) -> None:
    """<run.dir>/run.yaml: the overrides and the resolved config of the latest run or run-all here (what
    `r1pipe compare` reads to say which keys differ between runs); and the run registered with its store."""
    mf.write_yaml_atomic(config_mod.run_dir(cfg) / "run.yaml", {"overrides": list(overrides),
                                                                "config": config_mod.to_plain(cfg)})
    store.register(store.root(cfg), config_mod.run_dir(cfg))


def _adopt(cfg) -> None:
    """Stage directories of a run made before the store move into it (one rename each), under their
    fingerprints, and are linked back: nothing is retrained or lost by upgrading."""
    root = config_mod.run_dir(cfg)
    store.check(store.root(cfg))
    for name in chain(cfg):
        if store.adopt(root, name, store.root(cfg)):
            log.info("%s: moved into the store %s", name, store.root(cfg))


def _warn_world_size(cfg, names: list[str]) -> None:
    """Said for the stages that will train (every run-all, run, sweep member and seed goes through here)."""
    for warning in world_size_warnings(cfg, names):
        log.warning("%s", warning)


def incomplete_parent(name: str, parent: str, s, overrides: list[str]) -> R1Error:
    """The error for a stage whose parent is not complete (a real run and `run --stage --dry-run` say the same)."""
    force = " --force" if s.state == "corrupt" else ""
    return R1Error(f"stage {name} needs {parent}, which is {s.state} ({s.reason})",
                   hint=f"run it first: r1pipe run --stage {parent}{force} {' '.join(overrides)}".strip())


def check_one_node(launcher: dict[str, Any]) -> None:
    launch.check(launcher)
    if int(launcher.get("nnodes", 1)) > 1:
        raise R1Error("run-all runs on one node; across nodes, run one stage per job",
                      hint="r1pipe slurm --stage NAME writes a job per stage; chain them with sbatch --dependency")


def run_all(
    cfg, overrides: list[str], start: str | None = None, stop: str | None = None, force: bool = False
) -> list[Step]:
    targets = select(cfg, start, stop)
    check_one_node(launch.spec(cfg))
    with RunLock(config_mod.run_dir(cfg)):  # held across stages so no other writer slips in between
        _adopt(cfg)
        steps = plan(cfg, targets, force=force)
        validate(cfg, [s.stage for s in steps if s.action != "skip"])
        _warn_world_size(cfg, [s.stage for s in steps if s.action != "skip"])
        _record_run(cfg, overrides)
        done = []
        for step in steps:
            if step.action == "skip":
                done.append(_skip(cfg, step))
                continue
            # No force for a "run" planned because a parent ran: if the parent's new outputs are
            # byte-identical, the child's fingerprint still matches and it is rightly skipped.
            _, ran = _run_stage(cfg, step.stage, overrides, force=force)
            done.append(step if ran else Step(step.stage, "skip", "parents' outputs are byte-identical"))
    return done


def _skip(cfg, step: Step) -> Step:
    """A complete stage: skipped (its entry linked), unless its evaluation was interrupted or failed; then
    finish that."""
    root, store_root = config_mod.run_dir(cfg), store.root(cfg)
    with store.lock(store_root, step.stage, step.dir.name):  # another run may be evaluating it
        store.use(root, step.stage, step.dir, store_root)
        manifest = mf.read_manifest(root / step.stage)
        if not manifest.get("eval") and wants_eval(cfg, step.stage, manifest):
            problem = mf.outputs_intact(root / step.stage, manifest, full=True)
            if problem:  # never evaluate (and cache under the recorded hash) bytes that changed
                raise corrupt(step.stage, problem, conf_overrides(cfg))
            log.info("%s: complete; evaluating it (its evaluation did not finish)", step.stage)
            evaluate_after(cfg, step.stage, manifest)
            return Step(step.stage, "evaluate", "complete, evaluation had not finished", step.dir)
    log.info("%s: complete, skipped", step.stage)
    return step
