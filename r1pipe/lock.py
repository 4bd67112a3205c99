"""One writer per run directory, and one per store entry: an exclusive flock on `<run.dir>/.lock` (or on
`<store>/<stage>/.locks/<fingerprint>`), which holds the owner's PID.

The kernel drops a flock when its process dies, however it dies, so the lock of a killed run is free at once
(it is "taken over" simply by locking it again); no PID-liveness guessing, no race between two takers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from r1pipe.errors import R1Error

log = logging.getLogger("r1pipe")
LOCK = ".lock"
DYING_HOLDER_WAIT = 30.0  # seconds a rerun waits for the children of a killed r1pipe to let the lock go
_held: dict[Path, tuple[int, int]] = {}  # path -> (fd, depth): re-entrant, run-all holds it across stages


class RunLock:
    """Re-entrant. `wait`: block until the holder lets go (a store entry another run is training: that run's
    result is this run's too) instead of refusing; the wait is logged once, naming the holder."""

    def __init__(self, run_dir: Path, path: Path | None = None, wait: bool = False, what: str = ""):
        self.path = Path(path).resolve() if path else Path(run_dir).resolve() / LOCK
        self.wait, self.what = wait, what

    def __enter__(self) -> "RunLock":
        if self.path in _held:
            fd, depth = _held[self.path]
            _held[self.path] = (fd, depth + 1)
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # the first write of a run: a path through a file, no permission, a read-only disk
            raise R1Error(f"cannot write to {self.path.parent}: {e.strerror or e}",
                          hint="choose another directory (run.dir=... or store.dir=...) or fix its permissions") from e
        deadline = time.monotonic() + DYING_HOLDER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                # The r1pipe that wrote its PID is gone but the lock is still held: by the launcher and ranks
                # it started, which inherited the descriptor and are dying with it (PR_SET_PDEATHSIG). Wait
                # for them rather than refuse a rerun that comes a moment after a kill.
                if not _alive(holder) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                if self.wait and _alive(holder):
                    log.info("%s: waiting for process %s, which is writing it", self.what or self.path.parent, holder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                os.close(fd)
                raise R1Error(
                    f"{self.path.parent} is in use by process {holder}"
                    + ("" if _alive(holder) else f" (gone; processes it started hold the lock after {DYING_HOLDER_WAIT:.0f}s)"),
                    hint="wait for it to finish, or stop it; one r1pipe writes to a run directory at a time",
                ) from None
        os.ftruncate(fd, 0)
        # pid@host: on a store shared between machines, a waiter judges liveness only of a holder on its host
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}".encode(), 0)
        _held[self.path] = (fd, 1)
        return self

    def __exit__(self, *exc) -> None:
        fd, depth = _held[self.path]
        if depth > 1:
            _held[self.path] = (fd, depth - 1)
            return
        del _held[self.path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held_fds() -> tuple[int, ...]:
    """The descriptors of every lock this process holds (its run directory's, the store entry's it writes),
    for a child that must keep them held while it lives."""
    return tuple(fd for fd, _ in _held.values())


def _alive(pid: str) -> bool:
    """Whether the process `pid` (as written in the lock file: PID or PID@HOST) exists; an unreadable PID, or
    one on another host, counts as alive."""
    pid, _, host = pid.partition("@")
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ValueError, PermissionError):
        return True  # not ours to judge: someone else's process, or no PID written
    except ProcessLookupError:
        return False
    return True
