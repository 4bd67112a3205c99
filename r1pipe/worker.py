"""One rank of a launched stage: `python -m r1pipe.worker <stage>/.launch`, started by torchrun or accelerate.

It rebuilds the stage context the bookkeeping r1pipe wrote (ctx.json), records that it ran (rank-N.json), calls
the stage's `run(ctx)` exactly as a local run would, and leaves its outcome where the bookkeeper reads it: rank
0's metrics and outputs in result.json, a failure as one line in error-rank-N.json. It never writes a manifest,
takes the lock or touches another stage: the r1pipe that launched it does all of that.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from pathlib import Path

from r1pipe import launch, stages
from r1pipe.context import StageContext
from r1pipe.errors import R1Error
from r1pipe.manifest import read_json_dict, write_json_atomic


def main(argv: list[str]) -> int:
    launch_dir = Path(argv[0])
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    debug = os.environ.get("R1PIPE_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(message)s")
    error_path = launch_dir / f"error-rank-{rank}.json"
    try:
        spec = read_json_dict(launch_dir / launch.CTX)
        if spec is None:
            raise R1Error(f"no stage context in {launch_dir}", hint="workers are started by r1pipe run, not by hand")
        write_json_atomic(launch_dir / f"rank-{rank}.json", {
            "rank": rank, "world_size": world, "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
            "host": socket.gethostname(), "pid": os.getpid()})
        if world != spec["world_size"]:
            raise R1Error(f"{spec['launcher']} started a world of {world} processes, {spec['world_size']} were asked for",
                                 hint="check the launcher settings")
        if spec["name"] not in stages.names():  # a stage registered from outside r1pipe: import it here too
            stages.register(importlib.import_module(spec["module"]))
        ctx = StageContext.from_json(spec)
        metrics = stages.module(ctx.name).run(ctx) or {}
        if rank == 0:
            write_json_atomic(launch_dir / launch.RESULT, ctx.result(metrics))
    except Exception as e:  # noqa: BLE001 - every failure reaches the bookkeeper as one line
        message, hint = launch.one_error(e)
        write_json_atomic(error_path, {"rank": rank, "message": message, "hint": hint})
        if debug:
            raise
        print(f"[rank {rank}] error: {message}", file=sys.stderr)
        return 1
    try:  # the stage's work is done and recorded: a failure to tear down must not turn it into a failed rank
        _close_process_groups()
    except Exception as e:  # noqa: BLE001
        print(f"[rank {rank}] warning: destroying the process group failed: {e}", file=sys.stderr)
    return 0


def _close_process_groups() -> None:
    """Destroy the process groups the trainer opened, while the interpreter is still whole. Left to exit, gloo's
    worker threads can outlive it and abort the rank (SIGABRT, "terminate called without an active exception",
    pytorch/pytorch#190489) after the stage succeeded, which the launcher reports as a failed stage. Only on
    success: after an error the other ranks may still be inside a collective, and destroying could hang them."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
