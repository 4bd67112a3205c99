"""Executing one stage whose plan says run or resume: the attempt, its bookkeeping and its rollback.

1. the old directory is set aside (a rerun) or kept (a resume), and the attempt is marked in progress;
2. the stage's `run(ctx)` (or its launched ranks) writes outputs under `.staging/`;
3. outputs move into place and are hashed and fsynced, then `manifest.json` is written last;
4. a model output is evaluated and its cards written (neither can fail the finished stage).
A failure anywhere before 3 leaves no manifest, so nothing half-done is ever taken as complete; it reaches the
user as one line naming the stage (a full disk says so, whatever the library called it), and a rerun that
fails puts the previous outputs back when they are still valid.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from r1pipe import attemptlog, evaluation, launch, modelcard, stages, store
from r1pipe import config as config_mod
from r1pipe import manifest as mf
from r1pipe.context import StageContext
from r1pipe.errors import R1Error, one_line
from r1pipe.lock import held_fds
from r1pipe.resources import PeakRSS, disk_full, gpu_peak_mb
from r1pipe.state import has_progress

log = logging.getLogger("r1pipe")

REPLACED = ".replaced"  # <store>/<stage>/.replaced/<fingerprint>: a --force rerun's previous outputs, until it succeeds


def execute(
    cfg, name: str, s: mf.StageState, parent_manifests: dict[str, dict[str, Any]], resume: bool
) -> dict[str, Any]:
    """Run the stage in its store entry (`s.dir`, which <run.dir>/<name> now links to), then evaluate it.
    Whatever the stage raises becomes one line that names it (the cause stays chained for --debug). Nothing
    here touches another entry, so finished work survives any failure; and a --force rerun that fails puts the
    entry's previous outputs back exactly as they were when the attempt left nothing to resume.
    The caller holds the run directory's lock and the entry's."""
    root, entry = config_mod.run_dir(cfg), s.dir
    previous = None if resume else _set_aside(entry)
    linked_before = store.current(root, name)
    if linked_before is not None and linked_before != entry:
        store.hold(root, name, linked_before)  # what a failure falls back to: gc keeps it meanwhile
    entry.mkdir(parents=True, exist_ok=True)
    store.link(root, name, entry)  # <run.dir>/<name> shows the attempt as it runs (its log, its checkpoints)
    log_path = attemptlog.next_path(entry)
    with attemptlog.Tee(log_path):
        try:
            manifest = _attempt(cfg, name, s, parent_manifests, resume)
        except BaseException as e:
            err = _as_one_line(name, e, entry)
            if isinstance(e, Exception):
                attemptlog.record_failure(entry, err.message if isinstance(err, R1Error) else str(err), log_path)
            _roll_back(cfg, name, s, previous, linked_before, failed=isinstance(e, Exception))
            if isinstance(e, Exception):
                store.hold(root, name, None)
            if err is e:
                raise
            raise err from e
        shutil.rmtree(entry.parent / REPLACED / entry.name, ignore_errors=True)  # also after a resumed attempt
        (entry / attemptlog.LAST_ERROR).unlink(missing_ok=True)
        store.hold(root, name, None)
        # Evaluation comes after the manifest: a failed or interrupted evaluation never costs a finished stage
        # (the next run-all, or `r1pipe eval --stage NAME`, finishes it from its cached shards).
        return evaluate_after(cfg, name, manifest)


def _roll_back(cfg, name: str, s: mf.StageState, previous: Path | None, linked_before: Path | None,
               failed: bool) -> None:
    """After an attempt that did not finish: a --force rerun's previous outputs go back into the entry when
    the attempt left nothing to resume; and a failed attempt under a new config gives the run back its link to
    the finished entry it used (the failed one stays in the store; the same config again resumes it). A kill or
    Ctrl-C leaves the link on the attempt, which the next run resumes."""
    root, entry = config_mod.run_dir(cfg), s.dir
    if previous is not None and previous.exists() and (
        not has_progress(entry, name) or _fingerprint_of(previous) == s.expected
    ):
        shutil.rmtree(entry, ignore_errors=True)
        previous.rename(entry)
        log.info("%s: the previous outputs are back in place", name)
    elif failed and linked_before and linked_before != entry and linked_before.is_dir():
        store.link(root, name, linked_before)


def _as_one_line(name: str, e: BaseException, entry: Path) -> BaseException:
    """What reaches the user: one line naming the stage (a full disk says so, whatever the library called it);
    Ctrl-C and exits pass through unchanged."""
    if isinstance(e, R1Error):
        if not e.message.startswith(name):
            e.message = f"{name}: {e.message}"
        return e
    if not isinstance(e, Exception):
        return e
    if disk_full(e, entry.parent):
        return R1Error(
            f"{name}: no space left on the device holding {entry} ({one_line(e)})",
            hint="free some space (r1pipe gc deletes what no run uses, or set store.dir to a bigger disk) and run "
            "again without --force: finished stages are kept and an interrupted one resumes from its last checkpoint",
        )
    return R1Error(f"{name} failed: {type(e).__name__}: {one_line(e)}",
                   hint="finished stages are unchanged; --debug shows the traceback")


def _attempt(
    cfg, name: str, s: mf.StageState, parent_manifests: dict[str, dict[str, Any]], resume: bool
) -> dict[str, Any]:
    root = config_mod.run_dir(cfg)
    stage_dir = root / name
    stage = stages.get(name)
    stage_cfg = config_mod.stage_config(cfg, name)
    parent_names = list(parent_manifests)
    mf.write_json_atomic(stage_dir / mf.IN_PROGRESS, {"fingerprint": s.expected})
    mf.write_yaml_atomic(stage_dir / "config.yaml", stage_cfg)

    ctx = StageContext(
        name=name,
        config=stage_cfg,
        dir=stage_dir,
        parent_manifests=parent_manifests,
        parent_dirs={p: root / p for p in parent_names},
        seed=int(stage_cfg.get("seed", cfg.seed)),
        resume=resume,
        trust_remote_code=bool(cfg.get("trust_remote_code", False)),
        contamination_against=_benchmarks(cfg) if (stage_cfg.get("decontaminate") or {}).get("enabled") else {},
    )
    log.info("%s: %s (fingerprint %s)", name, "resuming" if resume else "running", s.expected[:12])
    started, t0 = attemptlog.now(), time.time()
    memory = PeakRSS().start()
    gpu_peak_mb(reset=True)
    launcher = launch.spec(cfg)
    try:
        if launch.distributes(launcher, stage):  # the stage's work runs under torchrun/accelerate; the books stay here
            if hasattr(stage.module, "prepare"):  # its one-process part (generation), before the ranks start
                stage.module.prepare(ctx)
            metrics = launch.run(ctx, launcher, lock_fds=held_fds())
        else:
            metrics = stage.module.run(ctx) or {}
    finally:
        peak_rss_mb = memory.stop()
    peak_gpu_mb = gpu_peak_mb()
    shutil.rmtree(stage_dir / launch.LAUNCH_DIR, ignore_errors=True)

    # Outputs move into place only now: a crash above leaves them in .staging, never where a reader looks.
    hashes = {}
    for key, rel in ctx.outputs.items():
        final = stage_dir / rel
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        (stage_dir / mf.STAGING / rel).rename(final)
        hashes[key] = mf.hash_path(final)
        mf.fsync_tree(final)  # on disk before the manifest that vouches for them (a power cut, not only a kill)
    shutil.rmtree(stage_dir / mf.STAGING, ignore_errors=True)

    manifest = {
        "schema": mf.SCHEMA,
        "stage": name,
        "status": "complete",
        "fingerprint": s.expected,
        "parents": [mf.parent_lineage(parent_manifests[p]) for p in parent_names],
        "config": stage_cfg,
        "inputs": s.inputs,  # local model directories read: path, content digest, per-file stamps (fast path)
        "outputs": dict(ctx.outputs),
        "hashes": hashes,
        "metrics": metrics,
        # None: the stage reads no task data; {} : it does, and checked nothing (decontaminate.enabled=false)
        "decontamination": ctx.decontamination if "decontaminate" in stage_cfg else None,
        "eval": {},
        "launch": ctx.launch,
        # RSS: this process and its children (launched ranks); GPU: this process's CUDA allocations, None
        # where it used no GPU (on the CPU, or when the work ran in launched ranks)
        "resources": {"peak_rss_mb": peak_rss_mb, "peak_gpu_mb": peak_gpu_mb},
        "env": mf.environment(),
        "seed": ctx.seed,
        "resumed": resume,
        "invocation": invocation(),
        "started_at": started,
        "finished_at": attemptlog.now(),
        "duration_s": round(time.time() - t0, 2),
    }
    mf.write_json_atomic(stage_dir / mf.MANIFEST, manifest)
    (stage_dir / mf.IN_PROGRESS).unlink(missing_ok=True)
    write_cards(root, stage_dir, manifest)
    log.info("%s: complete in %.1fs", name, manifest["duration_s"])
    return manifest


def _fingerprint_of(stage_dir: Path) -> str | None:
    try:
        return (mf.read_manifest(stage_dir) or {}).get("fingerprint")
    except R1Error:
        return None


def _set_aside(entry: Path) -> Path | None:
    """Move an entry out of the way for a fresh attempt (one rename: a kill leaves it either in place or set
    aside, never half-deleted). A complete entry (a --force rerun) replaces what was set aside before; one
    without a manifest (an attempt that left nothing to resume) is simply deleted."""
    aside = entry.parent / REPLACED / entry.name
    if entry.exists():
        if (entry / mf.MANIFEST).exists():
            shutil.rmtree(aside, ignore_errors=True)
            aside.parent.mkdir(parents=True, exist_ok=True)
            entry.rename(aside)
        else:
            (entry / mf.IN_PROGRESS).unlink(missing_ok=True)  # first: a kill mid-delete resumes nothing
            shutil.rmtree(entry)
    return aside if aside.exists() else None


def wants_eval(cfg, name: str, manifest: dict[str, Any]) -> bool:
    # a reward model's `model` writes no answers (EVALUATE = False)
    return ("model" in manifest.get("outputs", {}) and stages.get(name).evaluates and bool(cfg.eval.after_stage)
            and bool(config_mod.stage_config(cfg, name).get("eval", True)))


def evaluate_after(cfg, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a complete stage's model and record it in its manifest; a failure is logged, not raised."""
    if not wants_eval(cfg, name, manifest):
        return manifest
    try:
        return record_eval(cfg, name, manifest)
    except Exception as e:  # noqa: BLE001 - reported, and the stage stays complete
        log.error("%s: evaluation failed (%s); the stage is complete, retry with r1pipe eval --stage %s",
                  name, one_line(e), name)
        if log.isEnabledFor(logging.DEBUG):
            raise
    return manifest


def record_eval(cfg, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a complete stage's model now (`r1pipe eval`, or after the stage): eval.json, then the manifest
    and the model cards with the figures. Raises what evaluation raises; the manifest is untouched then."""
    root = config_mod.run_dir(cfg)
    stage_dir = root / name
    manifest = {**manifest, "eval": evaluation.evaluate_stage(cfg, stage_dir, manifest)}
    mf.write_json_atomic(stage_dir / mf.MANIFEST, manifest)
    write_cards(root, stage_dir, manifest)
    return manifest


def _benchmarks(cfg) -> dict[str, dict[str, Any]]:
    from r1pipe.evaluation import benchmark_specs

    return benchmark_specs(config_mod.to_plain(cfg.eval))


def write_cards(root: Path, stage_dir: Path, manifest: dict[str, Any]) -> None:
    """Model cards from the lineage. A card is documentation: failing to write one never fails a stage."""
    try:
        modelcard.write_cards(root, stage_dir, manifest)
    except Exception as e:  # noqa: BLE001 - reported; the stage and its outputs are untouched
        log.error("%s: could not write the model card (%s)", manifest["stage"], e)
        if log.isEnabledFor(logging.DEBUG):
            raise


def invocation() -> dict[str, Any]:
    """Who ran the attempt, where and how: what a stage's history needs beside its config."""
    import getpass
    import os
    import socket
    import sys

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        user = None
    return {"argv": ["r1pipe", *sys.argv[1:]], "user": user, "host": socket.gethostname(), "cwd": os.getcwd(),
            "pid": os.getpid()}
