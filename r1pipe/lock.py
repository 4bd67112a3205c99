"""One writer per run directory: a lock file holding the owner's PID, taken over when that process is dead."""

from __future__ import annotations

import os
from pathlib import Path

from r1pipe.errors import R1Error

LOCK = ".lock"
_held: dict[Path, int] = {}  # re-entrant within one process: run-all holds it while run_stage takes it again


class RunLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir).resolve() / LOCK

    def __enter__(self) -> "RunLock":
        if self.path in _held:
            _held[self.path] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _read_pid(self.path)
                if pid is not None and _alive(pid):
                    raise R1Error(
                        f"{self.path.parent} is in use by process {pid}",
                        hint="wait for it to finish, or stop it; one r1pipe writes to a run directory at a time",
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner died without cleaning up
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            _held[self.path] = 1
            return self
        raise R1Error(f"could not take the lock {self.path}", hint="remove it if no r1pipe is running")

    def __exit__(self, *exc) -> None:
        _held[self.path] -= 1
        if _held[self.path] == 0:
            del _held[self.path]
            self.path.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a lock left by an earlier run in this same process id (e.g. a recycled PID) is stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
