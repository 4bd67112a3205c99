"""What a stage cost and why it failed, measured from outside it: peak memory (this process and its launched
ranks, sampled from /proc; CUDA from torch's allocator) and whether a failure was a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import threading
from pathlib import Path

LOW_DISK = 64 << 20  # bytes free under which a failed write is taken for a full disk


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


class PeakRSS:
    """The peak resident memory of this process plus its child processes (a launcher's ranks) while a stage
    runs, sampled every 0.2 s from /proc: ru_maxrss cannot say which stage of a run-all used the most."""

    def __init__(self, every: float = 0.2):
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
