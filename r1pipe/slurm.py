"""One stage as a Slurm job: `r1pipe slurm` writes the sbatch script, the user submits it.

    r1pipe slurm --stage reasoning_rl conf=qwen2.5-1.5b run.dir=/shared/runs/q launcher=deepspeed_zero3 \\
        slurm.nodes=4 slurm.vllm_server.enabled=true
    sbatch /shared/runs/q/slurm/reasoning_rl.sbatch

The job (settings in conf/slurm/default.yaml): `slurm.nodes` training nodes, plus one more, the last, when
`slurm.vllm_server` serves GRPO rollouts there with `trl vllm-serve`. One srun starts `r1pipe run --stage NAME`
once per training node with the user's overrides and `launcher.node_rank=$SLURM_PROCID`: node 0 keeps the books
(lock, manifest), the others only start their workers (launch.py's followers), all meeting at a rendezvous on
the first training node. The run directory must be on a filesystem every node sees. One stage per job: chain
them with `sbatch --dependency=afterok:<jobid>`.

Pure string building from config: no torch, nothing is checked against the cluster.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path

from r1pipe import graph, launch, stages
from r1pipe.errors import R1Error

log = logging.getLogger(__name__)


def _python(module: str) -> list[str]:
    """The Python that writes the script runs r1pipe and trl on every node: a bare `r1pipe` may not be on a
    compute node's PATH (a venv activated here is not activated there), and the same interpreter is the same
    install."""
    return [shlex.quote(sys.executable), "-m", module]


VLLM_WAIT_S = 1800  # a large model's first load from a shared filesystem can take many minutes


def write(cfg, stage: str, overrides: list[str]) -> Path:
    """Write `<run.dir>/slurm/<stage>.sbatch` (executable) and return its path."""
    text = script(cfg, stage, overrides)  # validates before anything touches the disk
    out_dir = _run_dir(cfg) / "slurm"
    out_dir.mkdir(parents=True, exist_ok=True)  # also where Slurm writes the log: it never creates directories
    path = out_dir / f"{stage}.sbatch"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{stage}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def script(cfg, stage: str, overrides: list[str]) -> str:
    """The sbatch script's text for one stage."""
    s = cfg.slurm
    check(cfg, stage)
    nodes, gpus, vllm = int(s.nodes), gpus_per_node(cfg), s.vllm_server
    want = (cfg.get("run") or {}).get("world_size")
    if s.get("gpus_per_node") is None and want and nodes * gpus != want:  # e.g. 8 processes over 3 nodes
        log.warning("run.world_size=%s over %d nodes is %d GPUs per node, %d processes in all; set "
                    "slurm.gpus_per_node to choose", want, nodes, gpus, nodes * gpus)
    run_dir = _run_dir(cfg)
    q = " ".join(shlex.quote(o) for o in overrides)

    total = nodes + (1 if vllm.enabled else 0)
    sbatch = {"job-name": s.job_name or f"r1pipe-{stage}", "nodes": total,
              "ntasks-per-node": 1, "gpus-per-node": gpus, "output": s.output or f"{run_dir}/slurm/%x-%j.out",
              "time": s.time, "partition": s.partition, "account": s.account, "qos": s.qos,
              "cpus-per-task": s.cpus_per_task, "mem": s.mem}
    lines = ["#!/bin/bash", *(f"#SBATCH --{k}={v}" for k, v in sbatch.items() if v is not None),
             f"# Written by: r1pipe slurm --stage {stage} {q}".rstrip(),
             f"# Submit: sbatch {run_dir}/slurm/{stage}.sbatch",
             f"# Chain the next stage: sbatch --dependency=afterok:<this job's id> {run_dir}/slurm/<next>.sbatch",
             "", "set -euo pipefail", "export PYTHONUNBUFFERED=1"]
    if s.cpus_per_task is not None:  # srun no longer inherits --cpus-per-task from sbatch (Slurm 22.05+)
        lines.append(f"export SRUN_CPUS_PER_TASK={int(s.cpus_per_task)}")
    # cd first: relative run.dir, data paths and setup lines (source .venv/bin/activate) start where r1pipe slurm ran
    lines += [f"cd {shlex.quote(str(Path.cwd()))}", *s.setup, ""]

    lines += ['mapfile -t HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
              f'(( ${{#HOSTS[@]}} == {total} )) || {{ echo "expected {total} nodes, got ${{#HOSTS[@]}}" >&2; exit 1; }}',
              f'TRAIN_HOSTS=$(IFS=,; echo "${{HOSTS[*]:0:{nodes}}}")',
              'export HEAD="${HOSTS[0]}"  # rendezvous host; exported so srun carries it to every node']

    extra: list[str] = []  # overrides that r1pipe status must see too: they are part of the stage's fingerprint
    if vllm.enabled:
        model = run_dir / graph.parents_of(cfg, stage)[0] / "model"
        port = int(vllm.port)
        serve = " ".join([*_python("trl.cli.main"), "vllm-serve", "--model", shlex.quote(str(model)),
                          "--tensor-parallel-size", str(int(vllm.gpus or gpus)), "--port", str(port)])
        if cfg.get("trust_remote_code"):  # the server loads the same model code the trainer does
            serve += " --trust-remote-code"
        if vllm.extra_args:
            serve += f" {vllm.extra_args}"  # shell words as the user wrote them
        lines += ['export VLLM_HOST="${HOSTS[-1]}"',
                  f'srun --nodes=1 --ntasks=1 -w "$VLLM_HOST" {serve} &',
                  "VLLM_PID=$!",
                  "trap 'kill $VLLM_PID 2>/dev/null || true' EXIT  # the server must not outlive the job's work",
                  f"for _ in $(seq {VLLM_WAIT_S // 10}); do",
                  f'  curl -sf "http://$VLLM_HOST:{port}/health" >/dev/null && break',
                  '  kill -0 $VLLM_PID 2>/dev/null || { echo "trl vllm-serve exited before it was ready" >&2; exit 1; }',
                  "  sleep 10",
                  "done",
                  f'curl -sf "http://$VLLM_HOST:{port}/health" >/dev/null || '
                  f'{{ echo "trl vllm-serve on $VLLM_HOST:{port} not ready after {VLLM_WAIT_S}s" >&2; exit 1; }}']
        # ++ adds the keys whether or not the stage's trainer block already has them
        extra = [f"++{stage}.trainer.use_vllm=true", f"++{stage}.trainer.vllm_mode=server",
                 f"++{stage}.trainer.vllm_server_host=$VLLM_HOST", f"++{stage}.trainer.vllm_server_port={port}"]

    # A local launcher would run each node's stage alone; torchrun makes the nodes one job
    multi = [] if launch.spec(cfg).get("name", "local") != "local" else ["launcher=torchrun"]
    node = [*multi, f"launcher.nnodes={nodes}", "launcher.node_rank=$SLURM_PROCID",
            f"launcher.rdzv_endpoint=$HEAD:{int(s.rdzv_port)}", f"launcher.nproc={gpus}"]
    # single quotes around the whole command: $SLURM_PROCID, $HEAD, $VLLM_HOST expand on each node
    cmd = " ".join([*_python("r1pipe.cli"), "run", "--stage", stage, *(shlex.quote(o) for o in overrides), *extra,
                    *node])
    srun = f'srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 -w "$TRAIN_HOSTS" bash -c {shlex.quote(cmd)}'
    # the job's status (afterok chains) is srun's, after r1pipe status has shown where the run stands
    lines += ["", f"{srun} && rc=0 || rc=$?",
              'echo "srun exited with status $rc"',
              " ".join([*_python("r1pipe.cli"), "status", *(shlex.quote(o) for o in overrides), *extra]) + " || true",
              "exit $rc", ""]
    return "\n".join(lines)


def gpus_per_node(cfg) -> int:
    """slurm.gpus_per_node, or (null) the preset's run.world_size spread over the nodes, 1 when it sets none."""
    s = cfg.slurm
    if s.get("gpus_per_node") is not None:
        return int(s.gpus_per_node)
    world = (cfg.get("run") or {}).get("world_size") or 1
    return max(1, -(-int(world) // int(s.nodes)))


def check(cfg, stage: str) -> None:
    """What cannot make a working job, said before any file is written."""
    s = cfg.slurm
    stages.module(stage)  # unknown stages raise here
    for key in ("nodes", "gpus_per_node"):
        value = s.get(key)
        if key == "gpus_per_node" and value is None:
            continue  # from run.world_size
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise R1Error(f"slurm.{key}={value!r} must be a whole number >= 1", hint=f"e.g. slurm.{key}=2")
    vllm = s.vllm_server
    if not vllm.enabled:
        return
    if not stages.get(stage).grpo:
        grpo = [name for name in stages.names() if stages.get(name).grpo]
        raise R1Error(f"slurm.vllm_server serves GRPO rollouts; {stage} does not use them",
                      hint=f"use it with {' or '.join(grpo)}, or set slurm.vllm_server.enabled=false")
    gpus = vllm.get("gpus") or gpus_per_node(cfg)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= gpus_per_node(cfg):
        raise R1Error(f"slurm.vllm_server.gpus={gpus!r} must be between 1 and slurm.gpus_per_node={gpus_per_node(cfg)}",
                      hint="the server runs on one node with the job's GPUs per node")


def _run_dir(cfg) -> Path:
    """run.dir made absolute against where r1pipe slurm runs: the job's nodes must find the same directory."""
    path = Path(cfg.run.dir)
    return path if path.is_absolute() else Path.cwd() / path
