"""Scaling out: a stage's training under torchrun or accelerate (DDP, DeepSpeed ZeRO-2/3, FSDP), chosen by config.

    r1pipe run --stage cold_sft conf=tiny launcher=torchrun launcher.nproc=2
    r1pipe run-all conf=qwen2.5-1.5b launcher=deepspeed_zero3 launcher.nproc=8

The r1pipe process that the user started stays the one bookkeeper: it holds the run's lock, decides skip /
resume / rerun, and writes the manifest. Only the stage's own work (`run(ctx)` of a stage that declares
`DISTRIBUTED = True`) is relaunched, as `python -m r1pipe.worker <dir>` under the launcher. The workers read the
stage context the bookkeeper wrote to `<stage>/.launch/ctx.json`; every rank records that it ran
(`rank-N.json`), rank 0 writes the stage's result (`result.json`), and a rank that fails writes its one-line
error (`error-rank-N.json`). The bookkeeper checks that as many processes ran as were asked for (accelerate
can silently start one) before it trusts the result.

Multi-node: the same command runs on every node with `launcher.nnodes=N launcher.node_rank=K` and a rendezvous
endpoint on node 0; nodes other than 0 only start their workers ("followers"), node 0 keeps the books.
`r1pipe slurm` writes that script. The run directory must be on a filesystem every node sees.

This module imports neither torch nor transformers: the commands are built from config alone (tested as such).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from r1pipe import config as config_mod
from r1pipe import needs, stages, state
from r1pipe.errors import R1Error, one_line
from r1pipe.manifest import read_json_dict, write_json_atomic, write_yaml_atomic

log = logging.getLogger("r1pipe")

LAUNCHERS = ("local", "torchrun", "accelerate")
LAUNCH_DIR = ".launch"
CTX = "ctx.json"
RESULT = "result.json"


def spec(cfg) -> dict[str, Any]:
    """The resolved `launcher:` block ({name: local} when a config has none)."""
    node = cfg.get("launcher")
    out = dict(config_mod.to_plain(node)) if node is not None else {}
    out.setdefault("name", "local")
    return out


def world_size(launcher: dict[str, Any]) -> int:
    if launcher.get("name", "local") == "local":
        return 1
    return int(launcher.get("nproc", 1)) * int(launcher.get("nnodes", 1))


def check(launcher: dict[str, Any]) -> None:
    """Values a launcher cannot start with, found before any stage runs."""
    name = launcher.get("name", "local")
    if name not in LAUNCHERS:
        raise R1Error(f"launcher.name={name!r} is not a launcher", hint=f"launchers: {', '.join(LAUNCHERS)} (launcher=torchrun)")
    if name == "local":
        return
    for key in ("nproc", "nnodes", "node_rank"):
        value = launcher.get(key, 0 if key == "node_rank" else 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "node_rank" else 1):
            raise R1Error(f"launcher.{key}={value!r} must be a whole number {'>= 0' if key == 'node_rank' else '>= 1'}")
    if launcher.get("node_rank", 0) >= launcher.get("nnodes", 1):
        raise R1Error(f"launcher.node_rank={launcher['node_rank']} is not below launcher.nnodes={launcher['nnodes']}",
                      hint="nodes are numbered 0 .. nnodes-1; node 0 keeps the books")
    if launcher.get("nnodes", 1) > 1 and not launcher.get("rdzv_endpoint"):
        raise R1Error(f"launcher.nnodes={launcher['nnodes']} needs launcher.rdzv_endpoint (host:port of node 0)",
                      hint="r1pipe slurm --stage NAME writes a script that sets it")
    if name == "accelerate":
        acc = launcher.get("config") or {}
        if not isinstance(acc, dict) or not acc.get("distributed_type"):
            raise R1Error("launcher.config must be an accelerate config with a distributed_type",
                          hint="use launcher=accelerate, deepspeed_zero2, deepspeed_zero3 or fsdp (conf/launcher/)")
        if acc.get("distributed_type") == "MULTI_CPU" and world_size(launcher) > 1:
            # accelerate's MULTI_CPU without mpirun starts ONE process and says nothing (stack-notes)
            raise R1Error("launcher.config.distributed_type=MULTI_CPU would start one process, not "
                          f"{world_size(launcher)}", hint="use MULTI_GPU with use_cpu: true (launcher=accelerate does)")
        if acc.get("distributed_type") == "FSDP" and acc.get("use_cpu"):
            # accelerate (1.15) turns FSDP on only for GPU-type process groups: on CPU processes it would train
            # plain DDP without a word (seen 2026-11-30; docs/gpu.md)
            raise R1Error("launcher=fsdp with launcher.config.use_cpu=true would train plain DDP: accelerate shards "
                          "with FSDP on GPUs only", hint="on CPU processes use launcher=deepspeed_zero3 (DeepSpeed's "
                          "CPU accelerator shards the weights) or launcher=accelerate (DDP)")


def _accelerate_settings(launcher: dict[str, Any]) -> dict[str, Any]:
    """launcher.config for launcher=accelerate (its presets included); {} for the others."""
    return (launcher.get("config") or {}) if launcher.get("name") == "accelerate" else {}


def requirements(launcher: dict[str, Any]) -> list[str]:
    """Python packages this launcher needs at run time beyond r1pipe's own (DeepSpeed for the ZeRO configs)."""
    acc = _accelerate_settings(launcher)
    return ["deepspeed"] if acc.get("distributed_type") == "DEEPSPEED" else []


def shards_weights(launcher: dict[str, Any]) -> str | None:
    """The launcher's way of splitting the weights themselves across ranks (DeepSpeed ZeRO-3, FSDP), or None
    when every rank holds the whole model (DDP, ZeRO-1/2)."""
    acc = _accelerate_settings(launcher)
    if acc.get("distributed_type") == "FSDP":
        return "FSDP"
    if acc.get("distributed_type") == "DEEPSPEED" and int((acc.get("deepspeed_config") or {}).get("zero_stage", 0)) == 3:
        return "DeepSpeed ZeRO-3"
    return None


def check_installed(launcher: dict[str, Any]) -> None:
    lacking = [p for p in not_installed(requirements(launcher)) if not needs.defer(
        f"{p} (pip install 'r1pipe[{p}]')", "launcher.config.distributed_type")]
    if lacking:
        raise R1Error(f"launcher needs {', '.join(lacking)}, which is not installed",
                      hint="pip install 'r1pipe[deepspeed]' on the GPU machines, or use launcher=torchrun")


def not_installed(packages: list[str]) -> list[str]:
    import importlib.util

    return [p for p in packages if importlib.util.find_spec(p) is None]


def is_follower(launcher: dict[str, Any]) -> bool:
    return launcher.get("name", "local") != "local" and int(launcher.get("node_rank", 0)) > 0


def distributes(launcher: dict[str, Any], stage) -> bool:
    """Whether this stage's work goes to the launcher: a multi-process launcher and a stage that trains
    with a TRL trainer (generation-only stages run in the bookkeeper's one process)."""
    return launcher.get("name", "local") != "local" and stage.distributed


def command(launcher: dict[str, Any], stage: str, launch_dir: Path) -> list[str]:
    """The argv that starts `python -m r1pipe.worker <launch_dir>` on this node's processes."""
    name = launcher["name"]
    nproc, nnodes = int(launcher.get("nproc", 1)), int(launcher.get("nnodes", 1))
    worker = ["-m", "r1pipe.worker", str(launch_dir)]
    if name == "torchrun":
        argv = [sys.executable, "-m", "r1pipe.quiet_launch", "torchrun", f"--nproc_per_node={nproc}"]
        if nnodes == 1:
            # --standalone picks a free port: two runs on one machine never collide
            argv += ["--standalone"]
        else:
            argv += [f"--nnodes={nnodes}", f"--node_rank={launcher.get('node_rank', 0)}",
                     "--rdzv_backend=c10d", f"--rdzv_endpoint={launcher['rdzv_endpoint']}",
                     f"--rdzv_id={launcher.get('rdzv_id') or 'r1pipe'}-{stage}",
                     f"--rdzv_conf=join_timeout={int(launcher.get('join_timeout', 600))}"]
        return argv + worker
    if name == "accelerate":
        argv = [sys.executable, "-m", "r1pipe.quiet_launch", "accelerate",
                "--config_file", str(launch_dir / "accelerate.yaml"),
                f"--num_processes={nproc * nnodes}", f"--num_machines={nnodes}",
                f"--machine_rank={launcher.get('node_rank', 0)}"]
        if nnodes > 1:
            host, _, port = str(launcher["rdzv_endpoint"]).rpartition(":")
            argv += [f"--main_process_ip={host}", f"--main_process_port={port}"]
        return argv + worker
    raise R1Error(f"launcher {name!r} starts no processes", hint=f"launchers: {', '.join(LAUNCHERS)}")


def accelerate_config(launcher: dict[str, Any]) -> dict[str, Any]:
    """The accelerate config file's content: the preset's `launcher.config` plus the process counts, so the
    two can never disagree."""
    nproc, nnodes = int(launcher.get("nproc", 1)), int(launcher.get("nnodes", 1))
    return {"compute_environment": "LOCAL_MACHINE", **(launcher.get("config") or {}),
            "num_processes": nproc * nnodes, "num_machines": nnodes, "machine_rank": int(launcher.get("node_rank", 0))}


def environment(launcher: dict[str, Any], launch_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # torch threads per process: one each on a CPU (2 processes on 2 cores), what the launcher says on GPUs
    env["OMP_NUM_THREADS"] = str(launcher.get("omp_num_threads") or 1)
    env.update({str(k): str(v) for k, v in (launcher.get("env") or {}).items()})
    env["R1PIPE_LAUNCH_DIR"] = str(launch_dir)
    if logging.getLogger("r1pipe").isEnabledFor(logging.DEBUG):
        env["R1PIPE_DEBUG"] = "1"
    return env


# ----------------------------------------------------------------------------------------------------------
# The bookkeeper's side: write the context, start the launcher, collect what the ranks left.


def run(ctx, launcher: dict[str, Any], lock_fds: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run `ctx`'s stage under `launcher`; returns rank 0's metrics and fills ctx.outputs/decontamination/launch."""
    launch_dir = ctx.dir / LAUNCH_DIR  # (checks.validate checked the launcher and its packages)
    shutil.rmtree(launch_dir, ignore_errors=True)  # what an earlier attempt's ranks left must not be read
    launch_dir.mkdir(parents=True)
    world = world_size(launcher)
    write_json_atomic(launch_dir / CTX, {**ctx.to_json(), "module": stages.module(ctx.name).__name__,
                                          "world_size": world, "launcher": launcher["name"]})
    if launcher["name"] == "accelerate":
        write_yaml_atomic(launch_dir / "accelerate.yaml", accelerate_config(launcher))
    argv = command(launcher, ctx.name, launch_dir)
    log.info("%s: launching %d processes with %s", ctx.name, world, launcher["name"])
    log.debug("%s", " ".join(argv))
    rc = _wait(argv, environment(launcher, launch_dir), lock_fds)
    kind = _accelerate_settings(launcher).get("distributed_type")
    expect = kind if kind in ("FSDP", "DEEPSPEED") else None
    return collect(ctx, launch_dir, world, rc, launcher["name"], expect)


def collect(ctx, launch_dir: Path, world: int, rc: int, name: str, expect: str | None = None) -> dict[str, Any]:
    """What the ranks left: rank 0's metrics, or the first rank's error as one line. `expect`: the sharding the
    launcher asked for (FSDP, DEEPSPEED), checked against what the trainer reports it ran with."""
    errors = [e for p in sorted(launch_dir.glob("error-rank-*.json")) if (e := read_json_dict(p))]
    if errors:
        first = min(errors, key=lambda e: e.get("rank", 0))
        message = str(first.get("message"))
        message = message[len(ctx.name) + 2:] if message.startswith(f"{ctx.name}: ") else message
        raise R1Error(f"{ctx.name} (rank {first.get('rank')} of {world}): {message}", hint=first.get("hint"))
    if rc != 0:
        raise R1Error(f"{name} exited with status {rc} before the stage finished",
                      hint="its output is above; --debug shows each rank's traceback")
    ranks = [r for p in sorted(launch_dir.glob("rank-*.json")) if (r := read_json_dict(p))]
    if len(ranks) != world:  # the check that catches a launcher quietly starting fewer processes
        raise R1Error(f"{name} was asked for {world} processes but {len(ranks)} ran",
                      hint="check the launcher settings (accelerate's MULTI_CPU starts one; use launcher=torchrun)")
    result = read_json_dict(launch_dir / RESULT)
    if result is None:
        raise R1Error(f"{name} finished but rank 0 left no result in {launch_dir}", hint="rerun; it resumes")
    ran = (result.get("metrics") or {}).get("distributed")
    if expect and ran and ran != expect:  # a launcher that quietly trains without the sharding asked for
        raise R1Error(f"{ctx.name}: the launcher asked for {expect}, but the ranks trained with {ran}",
                      hint="check launcher.config against what accelerate supports on this machine")
    metrics = ctx.take_result(result)
    ctx.launch = {"launcher": name, "world_size": world,
                  "ranks": [{k: r.get(k) for k in ("rank", "local_rank", "host", "pid")} for r in
                            sorted(ranks, key=lambda r: r.get("rank", 0))]}
    return metrics


def _wait(argv: list[str], env: dict[str, str], lock_fds: tuple[int, ...]) -> int:
    """Start the launcher and wait. It dies with this process (PR_SET_PDEATHSIG), and holds the run's and the
    store entry's locks while it lives, so a killed bookkeeper never leaves workers writing where another r1pipe
    has started."""
    proc = subprocess.Popen(argv, env=env, pass_fds=lock_fds,
                            preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except BaseException:  # Ctrl-C or a kill of this process: stop the workers before going
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the launcher then outlives a SIGKILLed r1pipe
        pass


# ----------------------------------------------------------------------------------------------------------
# Followers: nodes other than 0 start their workers for the stage node 0 is running, and keep no books.


def follow(cfg, stage: str, launcher: dict[str, Any]) -> None:
    s = state.states(cfg)[stage]
    if s.complete:  # node 0 skips it too: do not wait at a rendezvous nobody else comes to
        log.info("%s: complete, nothing to do on node %d", stage, launcher["node_rank"])
        return
    launch_dir = config_mod.run_dir(cfg) / stage / LAUNCH_DIR
    log.info("%s: node %d starting %d workers (node 0 keeps the books)", stage, launcher["node_rank"],
             launcher.get("nproc", 1))
    if launcher["name"] == "accelerate":
        # node 0 writes it too, before its own launcher starts: the rendezvous cannot complete before that
        launch_dir.mkdir(parents=True, exist_ok=True)
        write_yaml_atomic(launch_dir / f"accelerate-node{launcher['node_rank']}.yaml", accelerate_config(launcher))
    argv = command(launcher, stage, launch_dir)
    if launcher["name"] == "accelerate":
        argv[argv.index("--config_file") + 1] = str(launch_dir / f"accelerate-node{launcher['node_rank']}.yaml")
    rc = _wait(argv, environment(launcher, launch_dir), None)
    if rc != 0:
        raise R1Error(f"{stage}: the workers on node {launcher['node_rank']} exited with status {rc}",
                      hint="node 0's output says why")


def generation_batch(trainer: dict[str, Any], world: int) -> int:
    """Completions per GRPO generation round under `world` processes, as TRL derives it when
    generation_batch_size is unset: per device batch x processes x steps per generation."""
    per_device = int(trainer.get("per_device_train_batch_size", 8))
    steps = int(trainer.get("steps_per_generation") or trainer.get("gradient_accumulation_steps", 1))
    return per_device * world * steps


def check_grpo_batch(stage: str, trainer: dict[str, Any], world: int) -> None:
    """TRL's rule at the world size the launcher will give: every generation batch holds whole groups."""
    gens = int(trainer.get("num_generations", 8))
    per_device = int(trainer.get("per_device_train_batch_size", 8))
    steps = int(trainer.get("steps_per_generation") or trainer.get("gradient_accumulation_steps", 1))
    batch = generation_batch(trainer, world)
    if batch % gens:
        raise R1Error(
            f"{stage}: {world} process{'es' if world > 1 else ''} x per_device_train_batch_size {per_device} x {steps} steps per generation "
            f"= {batch} completions, not a multiple of num_generations {gens}",
            hint=f"make {stage}.trainer.per_device_train_batch_size x processes a multiple of {gens}",
        )


def one_error(e: BaseException) -> tuple[str, str | None]:
    """A rank's failure as (message, hint), as the bookkeeper will print it."""
    if isinstance(e, R1Error):
        return e.message, e.hint
    return f"{type(e).__name__}: {one_line(e)}", "--debug shows the traceback"
