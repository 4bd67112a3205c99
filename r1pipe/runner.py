"""The runner: decides whether each stage runs, skips or resumes; runs it; writes its manifest.

Stages never decide this themselves. For one stage the runner
1. takes the run directory's lock,
2. checks that every parent is complete and its outputs intact (each file's size and mtime against the
   manifest; a file that moved is hashed again, and a changed one refuses the stage, naming the file),
3. resumes a partial attempt with the same fingerprint, or starts clean (wiping an old or stale attempt),
4. calls the stage's `run(ctx)`, which writes outputs under `.staging/`,
5. moves outputs into place, hashes them, evaluates a model output, and writes `manifest.json` last.
A failure anywhere before step 5 leaves no manifest, so nothing half-done is ever taken as complete, and it
reaches the user as one line naming the stage (a full disk says so, whatever the library called it).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1pipe import config as config_mod
from r1pipe import data, launch
from r1pipe import manifest as mf
from r1pipe import stages
from r1pipe.errors import R1Error, one_line
from r1pipe.lock import RunLock, held_fd

log = logging.getLogger("r1pipe")


@dataclass
class StageContext:
    """Everything a stage may touch: its resolved config, its parents' outputs and its own directory."""

    name: str
    config: dict[str, Any]
    dir: Path
    parent_manifests: dict[str, dict[str, Any]]
    parent_dirs: dict[str, Path]
    seed: int
    resume: bool
    trust_remote_code: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    # eval benchmarks (name -> spec) that training data is checked against, and what each source lost
    contamination_against: dict[str, dict[str, Any]] = field(default_factory=dict)
    decontamination: dict[str, Any] = field(default_factory=dict)
    # how the stage's work ran: {launcher, world_size, ranks: [{rank, host, pid}]} (r1pipe/launch.py)
    launch: dict[str, Any] = field(default_factory=lambda: {"launcher": "local", "world_size": 1})
    _contamination_index: Any = None

    def load_rows(self, source: dict[str, Any], need: tuple[str, ...], label: str) -> list[dict[str, Any]]:
        """Training rows from a data source, with every row that overlaps an evaluation benchmark removed
        (config `decontaminate`); what was removed is counted under `label` in the manifest."""
        return self.decontaminate(data.load_rows(source, need=need, where=f"{self.name}.{label}"), label,
                                  ("question", "prompt", "solution"))

    def decontaminate(self, rows: list[dict[str, Any]], label: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        from r1pipe import decontam

        spec = self.config.get("decontaminate") or {}
        if not spec.get("enabled"):
            return rows
        if self._contamination_index is None:
            self._contamination_index, against = contamination_index(self.contamination_against, int(spec.get("ngram", 8)))
            self.decontamination["against"] = against
        kept, report = decontam.filter_rows(rows, self._contamination_index, fields=fields)
        self.decontamination.setdefault("sources", {})[label] = report
        if report["removed"]:
            log.warning("%s: decontamination removed %d of %d rows of %s (they overlap an eval benchmark)",
                        self.name, report["removed"], report["checked"], label)
        if not kept:
            raise R1Error(f"{self.name}: every row of {label} overlaps an evaluation benchmark",
                          hint="train on other data, or set decontaminate.enabled=false if that is intended")
        return kept

    def output(self, key: str, name: str | None = None) -> Path:
        """A path to write output `key` to (a directory or a file called `name`, default `key`); the runner
        moves it to `<stage>/<name>` once the stage succeeds."""
        name = name or key
        path = self.dir / mf.STAGING / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.outputs[key] = name
        return path

    def parent_output(self, stage: str, key: str) -> Path:
        manifest = self.parent_manifests[stage]
        if key not in manifest.get("outputs", {}):
            raise R1Error(f"stage {stage} has no output {key!r}", hint=f"its outputs: {list(manifest['outputs'])}")
        return self.parent_dirs[stage] / manifest["outputs"][key]

    @property
    def trainer_dir(self) -> Path:
        return self.dir / "trainer"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"


def contamination_index(against: dict[str, dict[str, Any]], ngram: int):
    """The decontamination index over the prompts of every benchmark in `against`, and {name: rows sha256}
    (what the manifest records, so evaluation can tell whether a benchmark was checked)."""
    from r1pipe import benchmarks, decontam
    from r1pipe.evaluation import questions_sha256

    texts, shas = [], {}
    for name, spec in against.items():
        rows = benchmarks.load(name, spec)
        texts += [r.get("question", r["prompt"]) for r in rows]  # the question itself, not the template
        shas[name] = questions_sha256(rows)
    return decontam.Index(texts, n=ngram), shas


def recipe(cfg) -> list[str]:
    """The stages this config runs, in graph order (`run.stages`; R1-Zero, for one, has no cold_sft)."""
    chosen = list(cfg.run.get("stages") or stages.ORDER)
    for name in chosen:
        stages.module(name)  # unknown names fail here, with the list of stages
        for p in parents_of(cfg, name):
            stages.module(p)
            if stages.ORDER.index(p) >= stages.ORDER.index(name):
                raise R1Error(f"stage {name} cannot read {p}: it comes later in the graph", hint="check its init:")
            if p not in chosen:
                raise R1Error(f"stage {name} reads {p}, which run.stages leaves out", hint=f"add {p} to run.stages")
    return [s for s in stages.ORDER if s in chosen]


def parents_of(cfg, name: str) -> tuple[str, ...]:
    return stages.parents(name, config_mod.stage_config(cfg, name))


def states(cfg, full: bool = False) -> dict[str, mf.StageState]:
    """The state of every stage, in graph order. Each child's expected fingerprint uses its parents' manifests."""
    root = config_mod.run_dir(cfg)
    out: dict[str, mf.StageState] = {}
    for name in recipe(cfg):
        parent_states = [out[p] for p in parents_of(cfg, name)]
        stage_cfg, stage_dir = config_mod.stage_config(cfg, name), root / name
        # local model directories (base.model, a distill student, a reward model by path) by content
        inputs = mf.local_inputs(stage_dir, stages.local_models(name, stage_cfg))
        expected = None
        if all(p.complete for p in parent_states):
            expected = mf.fingerprint(
                name,
                stage_cfg,
                [mf.parent_lineage(p.manifest) for p in parent_states],
                stages.code_version(name),
                model_dirs={key: rec["sha256"] for key, rec in inputs.items()},
            )
        out[name] = mf.stage_state(stage_dir, expected, _has_progress(stage_dir), full=full, inputs=inputs)
    return out


def _has_progress(stage_dir: Path) -> bool:
    """Work an interrupted attempt left behind: a Trainer checkpoint, a finished generation shard, or the
    difficulty filter's pass rates."""
    trainer = stage_dir / "trainer"
    if trainer.is_dir() and any(mf.read_json_dict(c / "trainer_state.json") is not None for c in trainer.glob("checkpoint-*")):
        return True
    # reasoning_rl's difficulty filter (written whole, after generating k samples for every prompt)
    return any((stage_dir / "shards").glob("shard-*.jsonl")) or (stage_dir / "difficulty.jsonl").is_file()


@dataclass
class Step:
    stage: str
    action: str  # skip | run | resume | rerun
    reason: str


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
        elif upstream:
            steps.append(Step(name, "rerun" if s.manifest else "run", f"parent {upstream[0]} will run"))
        elif s.state == "corrupt":  # nothing is touched: the user decides whether the change was meant
            raise _corrupt(name, s.reason, _conf(cfg))
        elif s.state == "complete":
            steps.append(Step(name, "skip", "complete, fingerprint matches"))
            continue
        elif s.state == "partial":
            steps.append(Step(name, "resume", s.reason))
        elif s.state == "stale":
            steps.append(Step(name, "rerun", s.reason))
        else:
            steps.append(Step(name, "run", s.reason))
        will_run.add(name)
    return steps


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
        mod = stages.module(name)
        stage_cfg = config_mod.stage_config(cfg, name)
        data.check_sources(stage_cfg, name, origins)
        world = launch.world_size(launcher) if launch.distributes(launcher, mod) else 1
        if world > 1:
            launch.check_installed(launcher)
        if "num_generations" in (stage_cfg.get("trainer") or {}):
            launch.check_grpo_batch(name, stage_cfg["trainer"], world)
        sharding = launch.shards_weights(launcher) if launch.distributes(launcher, mod) else None
        if stage_cfg.get("peft") is not None and sharding:
            # the merge at the end needs each weight whole on a rank (training.save_trained)
            raise R1Error(f"{name}.peft: a LoRA stage saves its adapter merged into whole weights, which {sharding} "
                          "splits across ranks", hint=f"use launcher=deepspeed_zero2 or torchrun (every rank holds the "
                          f"frozen base once), or {name}.peft=null")
        if hasattr(mod, "validate"):
            mod.validate(stage_cfg, world_size=world)  # the processes the launcher will start (batch rules)


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
        st = states(cfg)
        if name not in st:
            raise R1Error(f"stage {name} is not in this recipe's run.stages", hint=f"stages here: {', '.join(st)}")
        for n in (name, *parents_of(cfg, name)):
            if st[n].newer:
                raise R1Error(st[n].reason)
        if st[name].state == "corrupt" and not force:
            raise _corrupt(name, st[name].reason, " ".join(overrides))
        for p in parents_of(cfg, name):
            force_p = " --force" if st[p].state == "corrupt" else ""
            if not st[p].complete:
                raise R1Error(
                    f"stage {name} needs {p}, which is {st[p].state} ({st[p].reason})",
                    hint=f"run it first: r1pipe run --stage {p}{force_p} {' '.join(overrides)}".strip(),
                )
            # the full check: every file whose size or mtime moved is hashed again before it is read
            problem = mf.outputs_intact(root / p, st[p].manifest, full=True)
            if problem:
                raise _corrupt(p, problem, " ".join(overrides), reader=name)
        s = st[name]
        if s.complete and not force:
            log.info("%s: complete, skipped (fingerprint %s)", name, s.expected[:12])
            return s.manifest, False
        validate(cfg, [name])
        parent_manifests = {p: st[p].manifest for p in parents_of(cfg, name)}
        return _execute(cfg, name, s, parent_manifests, resume=(s.state == "partial" and not force)), True


def _execute(
    cfg, name: str, s: mf.StageState, parent_manifests: dict[str, dict[str, Any]], resume: bool
) -> dict[str, Any]:
    """Run the stage, then evaluate it. Whatever the stage raises becomes one line that names it (the cause
    stays chained for --debug). Nothing here touches another stage's directory, so finished stages survive
    any failure; and a rerun that fails puts this stage's previous outputs back exactly as they were when
    they are still valid (a --force rerun), or when the attempt left nothing to resume."""
    stage_dir = config_mod.run_dir(cfg) / name
    previous = None if resume else _set_aside(stage_dir)
    try:
        manifest = _execute_stage(cfg, name, s, parent_manifests, resume)
    except BaseException as e:
        if previous is not None and previous.exists() and (
            not _has_progress(stage_dir) or _fingerprint_of(previous) == s.expected
        ):
            shutil.rmtree(stage_dir, ignore_errors=True)
            previous.rename(stage_dir)
            log.info("%s: the previous outputs are back in place", name)
        if isinstance(e, R1Error):
            if not e.message.startswith(name):
                e.message = f"{name}: {e.message}"
            raise
        if not isinstance(e, Exception):
            raise  # Ctrl-C, exit: not an error of the stage
        if disk_full(e, stage_dir.parent):
            raise R1Error(
                f"{name}: no space left on the device holding {stage_dir} ({one_line(e)})",
                hint="free some space (or set run.dir to a bigger disk) and run again without --force: "
                "finished stages are kept and an interrupted one resumes from its last checkpoint",
            ) from e
        raise R1Error(f"{name} failed: {type(e).__name__}: {one_line(e)}",
                      hint="finished stages are unchanged; --debug shows the traceback") from e
    shutil.rmtree(stage_dir.parent / REPLACED / name, ignore_errors=True)  # also after a resumed attempt
    # Evaluation comes after the manifest: a failed or interrupted evaluation never costs a finished stage
    # (the next run-all, or `r1pipe eval --stage NAME`, finishes it from its cached shards).
    return evaluate_after(cfg, name, manifest)


def _fingerprint_of(stage_dir: Path) -> str | None:
    try:
        return (mf.read_manifest(stage_dir) or {}).get("fingerprint")
    except R1Error:
        return None


REPLACED = ".replaced"  # <run.dir>/.replaced/<stage>: a rerun's previous outputs, until the rerun succeeds


def _set_aside(stage_dir: Path) -> Path | None:
    """Move a stage's old directory out of the way for a fresh attempt (one rename: a kill leaves it either
    in place or set aside, never half-deleted). A directory with a manifest replaces what was set aside
    before; one without (an abandoned attempt, of another config) is simply deleted."""
    aside = stage_dir.parent / REPLACED / stage_dir.name
    if stage_dir.exists():
        if (stage_dir / mf.MANIFEST).exists():
            shutil.rmtree(aside, ignore_errors=True)
            aside.parent.mkdir(parents=True, exist_ok=True)
            stage_dir.rename(aside)
        else:
            (stage_dir / mf.IN_PROGRESS).unlink(missing_ok=True)  # first: a kill mid-delete resumes nothing
            shutil.rmtree(stage_dir)
    return aside if aside.exists() else None


def disk_full(e: BaseException, where: Path | None = None) -> bool:
    """Whether a failure was a full disk or quota, however the library reported it: an OSError (Python), a
    SafetensorError naming StorageFull (Rust), or, since torch.save reports a full disk only as "unexpected
    pos ..." or "file write failed", any failure while the disk under `where` is (nearly) full."""
    seen, err = 0, e
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    if where is not None:
        try:
            return shutil.disk_usage(where).free < LOW_DISK
        except OSError:
            return False
    return False


def gpu_peak_mb(reset: bool = False) -> float | None:
    """This process's peak CUDA memory (torch's allocator) since the last reset, in MB; None when torch was
    never imported or no GPU was used. Never imports torch: a stage that did not need it has no GPU figure."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


LOW_DISK = 64 << 20  # bytes free under which a failed write is taken for a full disk


def _execute_stage(
    cfg, name: str, s: mf.StageState, parent_manifests: dict[str, dict[str, Any]], resume: bool
) -> dict[str, Any]:
    root = config_mod.run_dir(cfg)
    stage_dir = root / name
    mod = stages.module(name)
    stage_cfg = config_mod.stage_config(cfg, name)
    parent_names = list(parent_manifests)
    stage_dir.mkdir(parents=True, exist_ok=True)  # empty unless resuming: _execute set the old one aside
    mf.write_json_atomic(stage_dir / mf.IN_PROGRESS, {"fingerprint": s.expected})
    _write_yaml(stage_dir / "config.yaml", stage_cfg)

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
    started, t0 = _now(), time.time()
    memory = PeakRSS().start()
    gpu_peak_mb(reset=True)
    launcher = launch.spec(cfg)
    try:
        if launch.distributes(launcher, mod):  # the stage's work runs under torchrun/accelerate; the books stay here
            if hasattr(mod, "prepare"):  # its one-process part (generation), before the ranks start
                mod.prepare(ctx)
            metrics = launch.run(ctx, launcher, lock_fd=held_fd(root))
        else:
            metrics = mod.run(ctx) or {}
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
        "started_at": started,
        "finished_at": _now(),
        "duration_s": round(time.time() - t0, 2),
    }
    mf.write_json_atomic(stage_dir / mf.MANIFEST, manifest)
    (stage_dir / mf.IN_PROGRESS).unlink(missing_ok=True)
    write_cards(root, stage_dir, manifest)
    log.info("%s: complete in %.1fs", name, manifest["duration_s"])
    return manifest


class PeakRSS:
    """The peak resident memory of this process plus its child processes (a launcher's ranks) while a stage
    runs, sampled every 0.2 s from /proc: ru_maxrss cannot say which stage of a run-all used the most."""

    def __init__(self, every: float = 0.2):
        import threading

        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="r1pipe-peak-rss")

    def start(self) -> "PeakRSS":
        self._thread.start()
        return self

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        self._sample()
        return round(self.peak / 2**20, 1) if self.peak else None

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        import os

        total = 0
        for pid in [os.getpid(), *_descendants(os.getpid())]:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):  # gone meanwhile, or no /proc (not Linux)
                continue
        self.peak = max(self.peak, total)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        out += kids
        todo += kids
    return out


def wants_eval(cfg, name: str, manifest: dict[str, Any]) -> bool:
    evaluates = getattr(stages.module(name), "EVALUATE", True)  # a reward model's `model` writes no answers
    return ("model" in manifest.get("outputs", {}) and evaluates and bool(cfg.eval.after_stage)
            and bool(config_mod.stage_config(cfg, name).get("eval", True)))


def evaluate_after(cfg, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a complete stage's model and record it in its manifest; a failure is logged, not raised."""
    if not wants_eval(cfg, name, manifest):
        return manifest
    from r1pipe import evaluation

    root = config_mod.run_dir(cfg)
    stage_dir = root / name
    try:
        manifest["eval"] = evaluation.evaluate_stage(cfg, stage_dir, manifest)
    except Exception as e:  # noqa: BLE001 - reported, and the stage stays complete
        log.error("%s: evaluation failed (%s); the stage is complete, retry with r1pipe eval --stage %s",
                  name, one_line(e), name)
        if log.isEnabledFor(logging.DEBUG):
            raise
    else:
        mf.write_json_atomic(stage_dir / mf.MANIFEST, manifest)
        write_cards(root, stage_dir, manifest)
    return manifest


def _benchmarks(cfg) -> dict[str, dict[str, Any]]:
    from r1pipe.evaluation import benchmark_specs

    return benchmark_specs(config_mod.to_plain(cfg.eval))


def write_cards(root: Path, stage_dir: Path, manifest: dict[str, Any]) -> None:
    """Model cards from the lineage. A card is documentation: failing to write one never fails a stage."""
    from r1pipe import modelcard

    try:
        modelcard.write_cards(root, stage_dir, manifest)
    except Exception as e:  # noqa: BLE001 - reported; the stage and its outputs are untouched
        log.error("%s: could not write the model card (%s)", manifest["stage"], e)
        if log.isEnabledFor(logging.DEBUG):
            raise


def run_all(
    cfg, overrides: list[str], start: str | None = None, stop: str | None = None, force: bool = False
) -> list[Step]:
    targets = select(cfg, start, stop)
    launcher = launch.spec(cfg)
    launch.check(launcher)
    if int(launcher.get("nnodes", 1)) > 1:
        raise R1Error("run-all runs on one node; across nodes, run one stage per job",
                      hint="r1pipe slurm --stage NAME writes a job per stage; chain them with sbatch --dependency")
    with RunLock(config_mod.run_dir(cfg)):  # held across stages so no other writer slips in between
        steps = plan(cfg, targets, force=force)
        validate(cfg, [s.stage for s in steps if s.action != "skip"])
        done = []
        for step in steps:
            if step.action == "skip":
                stage_dir = config_mod.run_dir(cfg) / step.stage
                manifest = mf.read_manifest(stage_dir)  # unchanged since plan() found it complete
                if not manifest.get("eval") and wants_eval(cfg, step.stage, manifest):
                    problem = mf.outputs_intact(stage_dir, manifest, full=True)
                    if problem:  # never evaluate (and cache under the recorded hash) bytes that changed
                        raise _corrupt(step.stage, problem, _conf(cfg))
                    # complete, but its evaluation was interrupted or failed: finish that, not the stage
                    log.info("%s: complete; evaluating it (its evaluation did not finish)", step.stage)
                    evaluate_after(cfg, step.stage, manifest)
                    done.append(Step(step.stage, "evaluate", "complete, evaluation had not finished"))
                    continue
                log.info("%s: complete, skipped", step.stage)
                done.append(step)
                continue
            # No force for a "rerun" planned because a parent ran: if the parent's new outputs are
            # byte-identical, the child's fingerprint still matches and it is rightly skipped.
            _, ran = _run_stage(cfg, step.stage, overrides, force=force)
            done.append(step if ran else Step(step.stage, "skip", "parents' outputs are byte-identical"))
    return done


def select(cfg, start: str | None, stop: str | None) -> list[str]:
    order = recipe(cfg)
    for s in (start, stop):
        if s is not None and s not in order:
            stages.module(s)  # an unknown name fails with the list of stages
            raise R1Error(f"stage {s} is not in this recipe", hint=f"run.stages: {', '.join(order)}")
    i = order.index(start) if start else 0
    j = order.index(stop) + 1 if stop else len(order)
    if i >= j:
        raise R1Error(f"--from {start} comes after --to {stop}", hint=f"stage order: {' -> '.join(order)}")
    return order[i:j]


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(data)))
    tmp.replace(path)


def _corrupt(stage: str, problem: str, overrides: str, reader: str | None = None) -> R1Error:
    """The refusal to use (or build on) a stage whose finished files changed: what, where, and the rebuild."""
    what = f"stage {reader} cannot read {stage}" if reader else stage
    return R1Error(f"{what}: {problem}", hint=f"to rebuild it: r1pipe run --stage {stage} --force {overrides}".strip())


def _conf(cfg) -> str:
    """The preset and run directory as overrides, for commands quoted in hints."""
    return f"conf={cfg.preset} run.dir={config_mod.run_dir(cfg)}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
