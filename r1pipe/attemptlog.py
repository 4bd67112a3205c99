"""An attempt's whole output, kept beside its manifest: `<entry>/log/attempt-NN.log`.

Everything written to this process's stdout and stderr while a stage runs (r1pipe's log, TRL's and
transformers' messages, warnings, and the output of launched ranks, which inherit the descriptors) still reaches
the terminal, and is also copied into the file, with progress bars collapsed to their last state and, when the
attempt fails, the full traceback the terminal shows only under --debug. A killed attempt's log ends where it
was killed. `status` shows the last failure's one line (`.last_error.json`) with the log's path.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import traceback
from pathlib import Path

from r1pipe import manifest as mf

LOG_DIR = "log"
LAST_ERROR = ".last_error.json"
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves: for the terminal, not the file


def next_path(entry: Path) -> Path:
    """`log/attempt-NN.log`, numbered after the attempts already logged in this entry (a resume adds one)."""
    n = len(list((entry / LOG_DIR).glob("attempt-*.log"))) + 1
    return entry / LOG_DIR / f"attempt-{n:02d}.log"


class Tee:
    """Copy file descriptors 1 and 2 into `path` while inside: a pipe per descriptor, and a thread per pipe
    that writes each chunk to the original descriptor and each finished line to the file."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def __enter__(self) -> "Tee":
        self._saved, self._threads = {}, []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
        except OSError:  # a full or read-only disk: the stage runs unlogged rather than not at all
            self._file = None
            return self
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            t = threading.Thread(target=self._pump, args=(read, self._saved[fd]), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, read: int, terminal: int) -> None:
        pending = b""
        while chunk := _read(read):
            try:
                os.write(terminal, chunk)
            except OSError:
                pass  # the terminal went away: the log still gets it
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self._write(b"".join(_last_frame(line) + b"\n" for line in lines))
            cut = pending.rfind(b"\r", 0, len(pending) - 1)  # a bar redrawn without a newline: its last frame
            if cut >= 0:
                pending = pending[cut + 1:]
        if pending:
            self._write(_last_frame(pending) + b"\n")
        os.close(read)

    def _write(self, data: bytes) -> None:
        """Into the file; once the disk refuses (full), the log ends there and the terminal still gets it all."""
        if not data:
            return
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(data)
                self._file.flush()
            except (OSError, ValueError):  # full disk, or closed: the pipe must keep draining regardless
                self._file = None

    def __exit__(self, exc_type, exc, tb) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # the pipe's last writer goes: its thread reads to the end and stops
        for t in self._threads:
            t.join(timeout=10)
        if exc is not None:
            self._write("".join(traceback.format_exception(exc_type, exc, tb)).encode())
        if any(t.is_alive() for t in self._threads):
            # A process this attempt started still holds the pipe (a worker pool, a tracker's service): its
            # thread keeps forwarding, so the descriptors it writes to stay open (closed, their numbers would
            # be reused by the next file opened, and written into).
            return
        for saved in self._saved.values():
            os.close(saved)
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""


def _last_frame(line: bytes) -> bytes:
    """What a terminal shows of a line that a progress bar redrew with carriage returns: the last frame."""
    frames = [f for f in _ANSI.sub(b"", line).split(b"\r") if f.strip()]
    return frames[-1].rstrip() if frames else b""


def record_failure(entry: Path, message: str, log_path: Path) -> None:
    """The one line `status` shows for a stage whose last attempt failed."""
    try:
        mf.write_json_atomic(entry / LAST_ERROR, {"error": message, "log": str(log_path), "at": now()})
    except OSError:
        pass  # the disk that failed the stage may refuse this too: the terminal had the message


def last_failure(entry: Path | None) -> dict | None:
    return mf.read_json_dict(entry / LAST_ERROR) if entry else None


def now() -> str:
    """UTC, to the second: the time stamps of a manifest and of a failure record."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
