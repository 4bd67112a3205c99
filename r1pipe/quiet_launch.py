"""`python -m r1pipe.quiet_launch torchrun|accelerate ARGS`: the launcher's own main, minus the Python traceback
it prints when a worker fails. The failing rank has already written its one-line error for the r1pipe that
started the launcher; the launcher's summary of which rank failed still prints. R1PIPE_DEBUG=1 keeps the
traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    kind, args = argv[0], argv[1:]
    try:
        if kind == "torchrun":
            from torch.distributed.run import main as torchrun

            torchrun(args)
        elif kind == "accelerate":
            from accelerate.commands.launch import launch_command, launch_command_parser

            launch_command(launch_command_parser().parse_args(args))
        else:
            print(f"error: unknown launcher {kind!r}", file=sys.stderr)
            return 2
    except (Exception, subprocess.CalledProcessError) as e:  # noqa: BLE001 - the ranks reported their errors
        if os.environ.get("R1PIPE_DEBUG") == "1":
            raise
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        if not isinstance(e, (ChildFailedError, subprocess.CalledProcessError)):
            print(f"error: {kind}: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
