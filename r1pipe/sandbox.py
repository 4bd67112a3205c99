"""Running model-written Python programs for code rewards: each in its own sandboxed process, never in ours.

    from r1pipe import sandbox
    sandbox.run_python("def add(a, b): return a + b\\nassert add(2, 2) == 4\\n")   # Outcome(passed=True, ...)
    sandbox.run_many(programs, sandbox.Limits(wall_seconds=5))                        # in parallel, order kept

A program passes when it exits 0 within every limit; anything else is an `Outcome` saying why (failed,
timeout, memory, output, error), never an exception: GRPO checks hundreds of programs a step.

Why bubblewrap (`bwrap`): it builds a sandbox from namespaces without privileges or a daemon (unlike docker);
Flatpak runs on it, so distributions ship and maintain it, and Ubuntu 24.04, which stops raw `unshare` from
making user namespaces, ships an AppArmor profile that lets bwrap make them. Python 3.11 has no `os.unshare`,
and namespaces or seccomp by hand would be more code to get wrong. Where bwrap is missing or cannot make
namespaces, `check()` says so and what to do, and nothing runs: there is no silent fallback. Mode `none`
(sandbox.mode=none, the user's choice) keeps the limits, clean environment and scratch directory but no
namespaces: programs see this machine's files and network.

A run under bwrap gets new pid, net, ipc and uts namespaces (and a user one, unless we are root: _drops); a
read-only root holding /usr, the base interpreter's prefix (its stdlib, not this venv's site-packages) and
the loader cache; a working directory and a /tmp that are tmpfs of file_mb each, /proc and /dev; a clean
environment; rlimits on CPU, memory, file size, processes and core dumps. At the wall time or the output cap,
everything in it is killed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from r1pipe.errors import R1Error, one_line

log = logging.getLogger("r1pipe")

MODES = ("bwrap", "none")


@dataclass(frozen=True)
class Limits:
    cpu_seconds: float = 5.0      # RLIMIT_CPU per process
    wall_seconds: float = 10.0    # whole run, then everything in it is killed
    memory_mb: int = 512          # RLIMIT_AS
    processes: int = 16           # max processes/threads in the sandbox
    output_bytes: int = 65536     # stdout+stderr read; more than this ends the run (status "output")
    file_mb: int = 16             # RLIMIT_FSIZE, and the size of the sandbox's /tmp


@dataclass(frozen=True)
class Outcome:
    passed: bool          # exit code 0 within all limits
    status: str           # "passed" | "failed" | "timeout" | "memory" | "output" | "error"
    detail: str           # one line: the last line of stderr ("AssertionError"), or which limit
    seconds: float


# The base interpreter, resolved: a venv's python links to it, and the venv's site-packages (torch...) must
# stay out. Programs see its stdlib and whatever was installed into it.
_PYTHON = str(Path(sys._base_executable).resolve())
_PREFIXES = sorted({str(Path(p).resolve()) for p in (sys.base_prefix, sys.base_exec_prefix)})
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
_ETC = ("/etc/ld.so.cache", "/etc/localtime")

# Runs first in the sandbox, then main.py in the same interpreter (one start, not two). The limits are set
# here, inside the namespaces, because on kernels >= 5.14 RLIMIT_NPROC counts per (user namespace, uid): set
# inside a fresh user namespace it counts this run's processes alone; set before bwrap it would count every
# process of the user on the host (a trainer has hundreds of threads), and bwrap could not even start.
# uid >= 0 (we are root): drop to it, see _drops. A program passes only when it ran to its end: exit code 0
# alone would pass a reply that calls sys.exit(0) or os._exit(0) before the tests run (a known reward hack),
# so a token read from stdin (never in the source, argv or environment) is printed after main.py returns.
# This stops the naive exits only: code in the same process can find the token (frames, gc) as it can return
# an object equal to everything; docs/code.md says so. main.py is compiled and run at top level, not through
# runpy, whose context managers a program could patch to swallow the tests' AssertionError (and which would
# run a main.py that parses as a zip archive as the archive's __main__).
_START = """\
import os, resource as r, sys
cpu, mem, fsize, nproc, uid = map(int, sys.argv[1:6])
for res, soft, hard in ((r.RLIMIT_CPU, cpu, cpu + 1), (r.RLIMIT_AS, mem, mem), (r.RLIMIT_FSIZE, fsize, fsize),
                        (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_CORE, 0, 0)):
    if soft >= 0:
        r.setrlimit(res, (soft, hard))
if uid >= 0:
    os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
done = sys.stdin.readline().strip().encode()
sys.stdin = open(os.devnull)
os.dup2(sys.stdin.fileno(), 0)
sys.argv = ["main.py"]
with open("main.py", "rb") as f:
    code = compile(f.read(), "main.py", "exec")
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
sys.stdout.flush()
os.write(1, b"\\n" + done + b"\\n")
"""


def check(mode: str = "bwrap") -> None:
    """Raise R1Error (one line, and what to do) when programs cannot run in this mode here. Probed once."""
    problem = _probe(mode)
    if problem:
        raise R1Error(*problem)


@functools.cache
def _probe(mode: str) -> tuple[str, str] | None:
    if mode not in MODES:
        return f"sandbox mode {mode!r} is not one of {', '.join(MODES)}", "sandbox.mode=bwrap (or none: unsafe)"
    unsafe = "or set sandbox.mode=none to run model-written programs unsandboxed (unsafe)"
    if mode == "none":
        log.warning("sandbox.mode=none: model-written programs run unsandboxed, seeing this machine's files and "
                    "network%s", "" if _drops(mode) else f"; they run as {'root' if os.geteuid() == 0 else 'you'} "
                    "and their processes are not capped (RLIMIT_NPROC would count all of your processes; root's it "
                    "does not count)")
        return None
    if shutil.which("bwrap") is None:
        return ("code verification runs programs under bubblewrap, and `bwrap` is not on PATH",
                f"install it (apt install bubblewrap / dnf install bubblewrap), {unsafe}")
    out = _run("pass", Limits(), "bwrap")  # the real thing: namespaces, binds, interpreter, limits
    if out.passed:
        return None
    return (f"bubblewrap cannot make a sandbox here: {out.detail}",
            "allow unprivileged user namespaces (Ubuntu 24.04: keep bwrap's AppArmor profile, or sysctl "
            "kernel.apparmor_restrict_unprivileged_userns=0; elsewhere user.max_user_namespaces > 0; in a "
            f"container, allow userns), {unsafe}")


def run_python(source: str, limits: Limits = Limits(), mode: str = "bwrap") -> Outcome:
    """Run one complete program (the model's code and its tests); passed = exit code 0 within the limits."""
    check(mode)
    return _run(source, limits, mode)


def run_many(sources: list[str], limits: Limits = Limits(), mode: str = "bwrap",
             workers: int | None = None) -> list[Outcome]:
    """run_python for each, in parallel (each run is a process, so threads are enough), in order."""
    check(mode)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda s: _run(s, limits, mode), sources))


def _drops(mode: str) -> bool:
    """Whether runs drop to a uid of their own. As root they must: the kernel does not enforce RLIMIT_NPROC for
    real uid 0, and a fork bomb would be uncapped. Not before bwrap (as nobody): it could not bind a prefix
    under /root (mode 0700), as pyenv's is; so bwrap runs as root, without a user namespace (which would map
    the sandbox to root again), and _START drops. In mode none, only if any uid can reach the interpreter."""
    if os.geteuid() != 0:
        return False
    return mode == "bwrap" or all(os.stat(p).st_mode & stat.S_IXOTH for p in Path(_PYTHON).parents)


def _bwrap(scratch: Path, limits: Limits, uid: int, info_fd: int) -> list[str]:
    argv = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session", "--clearenv",
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--info-fd", str(info_fd)]
    if uid >= 0:  # root: capabilities for _START's drop only (gone after it), see _drops
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    for key, value in _ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", "/usr", "/usr",
             "--perms", "01777", "--size", str(limits.file_mb << 20), "--tmpfs", "/tmp"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):  # merged /usr: links; otherwise directories
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    for prefix in (p for p in _PREFIXES if not p.startswith("/usr/")):
        for parent in reversed(Path(prefix).parents[:-1]):  # bwrap would copy /root's 0700: the uid needs in
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    # the working directory is a tmpfs of file_mb, like /tmp: files on the host's disk would be capped one by
    # one (RLIMIT_FSIZE) but not in number, and a run could write gigabytes before its wall time
    return argv + ["--perms", "01777", "--size", str(limits.file_mb << 20), "--tmpfs", "/sandbox",
                   "--ro-bind", str(scratch / "main.py"), "/sandbox/main.py", "--chdir", "/sandbox",
                   "--remount-ro", "/"]


def _run(source: str, limits: Limits, mode: str) -> Outcome:
    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="r1pipe-sandbox-"))
    fds: list[int] = []
    try:
        # surrogatepass: a reply with lone surrogates makes a program that fails, not an error here
        (scratch / "main.py").write_bytes(source.encode("utf-8", "surrogatepass"))
        # A fresh uid, not nobody: without a user namespace, RLIMIT_NPROC counts per uid over the whole host,
        # and concurrent runs sharing a uid would use up each other's processes. It owns nothing on the host;
        # two of 100 concurrent runs share one with a chance of ~1e-5.
        uid = random.randrange(1_000_000_000, 2_000_000_000) if _drops(mode) else -1
        if uid >= 0:
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o711)  # x for others: bwrap, root without capabilities, must enter it
        # in a user namespace bwrap's pid 1 counts too; unsandboxed as a user, every process of the user would
        nproc = limits.processes + 1 if mode == "bwrap" and uid < 0 else limits.processes if uid >= 0 else -1
        cmd = [_PYTHON, "-I", "-B", "-c", _START, str(math.ceil(limits.cpu_seconds)), str(limits.memory_mb << 20),
               str(limits.file_mb << 20), str(nproc), str(uid)]
        if mode == "bwrap":
            fds = list(os.pipe())
            cmd = _bwrap(scratch, limits, uid, fds[1]) + cmd
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_ENV, cwd=scratch, start_new_session=True, pass_fds=fds[1:])
        if fds:
            os.close(fds.pop())  # bwrap holds the write end now
        done = secrets.token_hex(16)
        with proc:
            with contextlib.suppress(OSError):  # it may be gone already (bwrap failed): _outcome says why
                proc.stdin.write(done.encode() + b"\n")
                proc.stdin.close()
            stop, err, out = _watch(proc, fds[0] if fds else -1, limits, start)
        finished = done.encode() in out  # anywhere in the tail: an atexit print or a thread may follow it
        return _outcome(proc.returncode, stop, err, limits, mode, time.monotonic() - start, finished)
    except OSError as e:  # could not write the program or start the process (no bwrap, no fds, no memory)
        return Outcome(False, "error", f"could not start the run: {one_line(e, 200)}", time.monotonic() - start)
    finally:
        for fd in fds:
            os.close(fd)
        _remove(scratch)


def _watch(proc: subprocess.Popen, info_r: int, limits: Limits, start: float) -> tuple[str | None, bytes, bytes]:
    """Read the run's output until it ends, its wall time passes or its output overflows, then kill what is
    left. Returns why it was stopped (None, "timeout", "output") and the ends of its stderr and stdout."""
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr, info_r) if info_r >= 0 else (proc.stdout, proc.stderr):
        sel.register(f, selectors.EVENT_READ)
    deadline, total, err, out, info, stop = start + limits.wall_seconds, 0, b"", b"", b"", None
    try:
        while stop is None:
            left = deadline - time.monotonic()
            if left <= 0:
                stop = "timeout"
            elif not sel.get_map():  # it closed its output; it may still run
                try:
                    proc.wait(left)
                    break
                except subprocess.TimeoutExpired:
                    stop = "timeout"
            else:
                events = sel.select(min(left, 0.1))
                if not events and proc.poll() is not None:
                    break  # it ended, and something it left holds the pipes: killed below
                for key, _ in events:
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                    elif key.fd == info_r:
                        info += data
                    else:
                        total += len(data)
                        if key.fileobj is proc.stderr:
                            err = (err + data)[-4096:]
                        else:
                            out = (out + data)[-4096:]
                        stop = "output" if total > limits.output_bytes else None
    finally:
        sel.close()
        _kill(proc, info)
    return stop, err, out


def _kill(proc: subprocess.Popen, info: bytes) -> None:
    """Kill what is left of a run and reap it. Under bwrap, killing the sandbox's pid 1 first (its pid from
    --info-fd) ends every process in its pid namespace before bwrap exits, so none is orphaned; then the
    process group (in mode none: the program and the children that stayed in its group)."""
    try:
        child = json.loads(info)["child-pid"] if info else None
    except (ValueError, KeyError):
        child = None
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        if child and proc.poll() is None:  # still bwrap's unreaped child: its pid cannot have been reused
            os.kill(child, signal.SIGKILL)
            proc.wait(2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _outcome(rc: int, stop: str | None, err: bytes, limits: Limits, mode: str, seconds: float,
             finished: bool = True) -> Outcome:
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    last = one_line(lines[-1], 200) if lines else ""
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0  # bwrap exits 128 + the signal that killed its child
    if stop == "output":
        return Outcome(False, "output", f"output over {limits.output_bytes} bytes", seconds)
    if stop == "timeout":
        return Outcome(False, "timeout", f"wall time over {limits.wall_seconds:g} s", seconds)
    if rc == 0 and finished:
        return Outcome(True, "passed", "", seconds)
    if rc == 0:
        return Outcome(False, "failed", "exited 0 before the program's end (sys.exit or os._exit skips the tests)",
                       seconds)
    if sig in (signal.SIGXCPU, signal.SIGKILL):  # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard
        name = signal.Signals(sig).name
        return Outcome(False, "timeout", f"cpu time over {math.ceil(limits.cpu_seconds)} s ({name})", seconds)
    if "MemoryError" in last or "Cannot allocate memory" in last:
        return Outcome(False, "memory", last, seconds)
    if mode == "bwrap" and last.startswith("bwrap: "):  # the sandbox itself could not start
        return Outcome(False, "error", last, seconds)
    if 0 < sig < signal.NSIG:
        return Outcome(False, "failed", f"killed by signal {sig} ({signal.strsignal(sig)})", seconds)
    return Outcome(False, "failed", last or f"exit code {rc}", seconds)


def _remove(scratch: Path) -> None:
    """Delete the scratch directory, whatever the program left in it (mode none: directories it made
    unreadable, nested deeper than Python's recursion limit). chmod -R and rm -rf follow no links it made."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(scratch)], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", "--", str(scratch)], capture_output=True, timeout=60)
