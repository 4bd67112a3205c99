"""The stage store: a stage's outputs live in `<store>/<stage>/<fingerprint>/`, one entry per distinct config
and lineage, and `<run.dir>/<stage>` is a link to the entry that run uses.

Why: equal fingerprints are equal work. Keyed by the fingerprint, changing a key makes a new entry and never
deletes the old one; changing it back finds the old one complete (a skip) or interrupted (a resume); runs that
share a store share every stage they agree on, so nothing trains twice. An entry is written exactly as a stage
directory always was (outputs staged, manifest last) by one process at a time: an flock per entry
(`<store>/<stage>/.locks/<fingerprint>`), which a second run that needs the same entry waits on, then skips.

Nothing here deletes an entry except `gc` (and a `--force` rerun, which replaces its own entry). No torch:
`status` reads this.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from r1pipe import manifest as mf
from r1pipe.errors import R1Error
from r1pipe.lock import RunLock

ENV = "R1PIPE_STORE"
LOCKS = ".locks"
RUNS = ".runs"  # a file per run directory that links into this store: whom gc asks "still used?"
DELETING = ".deleting"  # an entry gc is removing: renamed first, so a kill mid-delete leaves no half entry


def root(cfg) -> Path:
    """The store a config uses: store.dir, else $R1PIPE_STORE, else <run.dir>/store. Absolute, so links and
    the registry of runs mean the same from any working directory."""
    configured = (cfg.get("store") or {}).get("dir")
    where = configured or os.environ.get(ENV) or Path(cfg.run.dir) / "store"
    # resolved: links are compared with it, and a link's target is always a resolved path
    return Path(where).expanduser().resolve()


def check(store_root: Path) -> None:
    """Refuse a store that cannot hold entries, before anything runs."""
    if store_root.exists() and not store_root.is_dir():
        raise R1Error(f"store.dir {store_root} is not a directory",
                      hint="set store.dir (or R1PIPE_STORE) to a directory")
    probe = next((p for p in (store_root, *store_root.parents) if p.exists()), None)
    if probe is not None and not os.access(probe, os.W_OK):
        raise R1Error(f"store.dir {store_root} is not writable",
                      hint="set store.dir (or R1PIPE_STORE) to a directory you can write")


def entry(store_root: Path, stage: str, fingerprint: str) -> Path:
    return store_root / stage / fingerprint


def current(run_dir: Path, stage: str) -> Path | None:
    """The directory `<run.dir>/<stage>` leads to now: a link's entry (even a deleted one), a directory of a
    run made before the store (legacy: adopted into the store by the next run), or None."""
    path = Path(run_dir) / stage
    if path.is_symlink():
        return path.resolve()
    return path.resolve() if path.is_dir() else None


def is_legacy(run_dir: Path, stage: str) -> bool:
    path = Path(run_dir) / stage
    return path.is_dir() and not path.is_symlink()


def lock(store_root: Path, stage: str, fingerprint: str, wait: bool = True) -> RunLock:
    """The entry's writer lock. `wait`: block while another run trains it (its result is ours too)."""
    return RunLock(store_root, path=store_root / stage / LOCKS / fingerprint, wait=wait,
                   what=f"{stage} (store entry {fingerprint[:12]})")


def link(run_dir: Path, stage: str, target: Path) -> None:
    """Point `<run.dir>/<stage>` at `target` with one rename, so a reader sees the old entry or the new one.
    Relative when the entry is inside the run directory (a copied or moved run keeps working)."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / stage
    dest = os.path.relpath(target, run_dir) if Path(target).is_relative_to(run_dir) else str(target)
    if path.is_symlink() and os.readlink(path) == dest:
        return
    if is_legacy(run_dir, stage):
        raise R1Error(f"{path} is a directory, not a link into the store", hint="r1pipe adopts it on the next run")
    tmp = run_dir / f".{stage}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(dest, tmp)
    os.replace(tmp, path)
    register(Path(target).parent.parent, run_dir)


def hold(run_dir: Path, stage: str, target: Path | None) -> None:
    """Keep `target` (the entry the run used before an attempt) referenced while the attempt runs, so gc
    cannot delete what a failed attempt falls back to; None drops the hold. A kill leaves it (conservative)."""
    path = Path(run_dir) / f".{stage}.before"
    if target is None:
        path.unlink(missing_ok=True)
        return
    tmp = Path(run_dir) / f".{stage}.before.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(str(target), tmp)
    os.replace(tmp, path)


def use(run_dir: Path, stage: str, target: Path, store_root: Path) -> None:
    """Link a complete entry, under its lock so that gc cannot delete it between the check and the link."""
    if current(run_dir, stage) == Path(target).resolve():
        return
    with lock(store_root, stage, Path(target).name):
        if not (Path(target) / mf.MANIFEST).is_file():
            raise R1Error(f"store entry {target} was deleted meanwhile (by gc?)", hint="run again: it is rebuilt")
        link(run_dir, stage, target)


def register(store_root: Path, run_dir: Path) -> None:
    """Record that `run_dir` links into this store (gc reads every registered run's links). Every command on a
    run registers it again, so a moved or copied run directory is known by its new path once it is used."""
    run_dir = Path(run_dir).resolve()
    path = store_root / RUNS / hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    if not path.exists() and store_root.is_dir():
        try:
            mf.write_text_atomic(path, f"{run_dir}\n")
        except OSError:
            pass  # a read-only store: gc cannot run there either


def adopt(run_dir: Path, stage: str, store_root: Path) -> Path | None:
    """Move a stage directory of a run made before the store into the store, under the fingerprint its manifest
    (or its interrupted attempt) records, and link it; returns the entry. A directory with neither is an
    abandoned attempt of an unknown config: it goes to the store unlinked, for gc to delete."""
    path = Path(run_dir) / stage
    if not is_legacy(run_dir, stage):
        return None
    try:
        fp = (mf.read_manifest(path) or {}).get("fingerprint")
    except R1Error:
        fp = None  # corrupt: kept as it is, under a name gc shows
    fp = fp or (mf.read_json_dict(path / mf.IN_PROGRESS) or {}).get("fingerprint")
    target = entry(store_root, stage, fp or f"{DELETING}-legacy-{time.time_ns()}")
    aside = target.exists()  # the store has it already (another run made it): that one is used, this one not
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), str(entry(store_root, stage, f"{DELETING}-legacy-{time.time_ns()}") if aside else target))
    if fp:
        link(run_dir, stage, target)
    return target


# -- what the store holds, and gc ----------------------------------------------------------------------------


@dataclass
class Entry:
    stage: str
    fingerprint: str
    path: Path
    size: int
    state: str  # complete | partial (an interrupted attempt) | leftover (a .deleting or .replaced directory)
    when: float  # when it finished (manifest mtime), else when it was last written
    used_by: list[str] = field(default_factory=list)  # run directories linking to it

    @property
    def age(self) -> str:
        return dt.datetime.fromtimestamp(self.when).strftime("%Y-%m-%d %H:%M")


def runs(store_root: Path) -> list[Path]:
    """The run directories registered with this store that still exist."""
    out = []
    for f in sorted((store_root / RUNS).glob("*")):
        try:
            path = Path(f.read_text().strip())
        except OSError:
            continue
        if path.is_dir():
            out.append(path)
    return out


def references(store_root: Path) -> dict[Path, list[str]]:
    """{entry: [run directories linking to it]}, over every registered run."""
    out: dict[Path, list[str]] = {}
    store_root = store_root.resolve()
    for run_dir in runs(store_root):
        try:
            children = list(run_dir.iterdir())
        except OSError:
            continue
        for child in children:
            if child.is_symlink():
                target = child.resolve()
                if target.is_relative_to(store_root) and str(run_dir) not in out.get(target, []):
                    out.setdefault(target, []).append(str(run_dir))
    return out


def size_of(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def entries(store_root: Path) -> list[Entry]:
    """Every entry of the store, with its size, state and the runs that use it."""
    refs = references(store_root)
    out = []
    for stage_dir in sorted(p for p in store_root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if store_root.is_dir() else []:
        candidates = [*stage_dir.iterdir(), *(stage_dir / ".replaced").glob("*")]
        for path in sorted(p for p in candidates if p.is_dir() and p.name not in (LOCKS, ".replaced")):
            manifest = path / mf.MANIFEST
            leftover = path.name.startswith(DELETING) or path.parent.name == ".replaced"
            state = "leftover" if leftover else "complete" if manifest.is_file() else "partial"
            try:
                when = (manifest if manifest.is_file() else path).stat().st_mtime
            except OSError:  # renamed or deleted by another r1pipe meanwhile
                continue
            out.append(Entry(stage_dir.name, path.name, path, size_of(path), state, when, refs.get(path.resolve(), [])))
    return out


def unused(all_entries: list[Entry], keep_last: int = 0) -> list[Entry]:
    """What gc deletes: entries no run uses, except each stage's `keep_last` newest unused complete ones.
    (An interrupted attempt no run links to is unused like any other. A leftover goes, except the finished
    outputs a --force rebuild set aside while that rebuild has not finished: the rebuild puts them back if it
    fails, and they are the only finished copy meanwhile.)"""
    out = []
    for stage in sorted({e.stage for e in all_entries}):
        free = sorted((e for e in all_entries if e.stage == stage and not e.used_by and not held_by_rebuild(e)),
                      key=lambda e: -e.when)
        kept = [e for e in free if e.state == "complete"][:keep_last]
        out += [e for e in free if e not in kept]
    return out


def held_by_rebuild(e: Entry) -> bool:
    """A --force rebuild's previous outputs (`.replaced/<fp>`), while the entry itself has no manifest."""
    return e.path.parent.name == ".replaced" and not (e.path.parent.parent / e.fingerprint / mf.MANIFEST).is_file()


def delete(e: Entry) -> bool:
    """Delete one entry unless a run is writing it now (its lock is held): rename, then remove. False if busy."""
    store_root = e.path.parent.parent if e.path.parent.name != ".replaced" else e.path.parent.parent.parent
    try:
        with lock(store_root, e.stage, e.fingerprint, wait=False):
            if e.path.resolve() in references(store_root):  # linked since gc looked (runs link under this lock)
                return False
            if e.path.name.startswith(DELETING):
                doomed = e.path
            else:
                doomed = e.path.parent / f"{DELETING}-{e.path.name}-{time.time_ns()}"
                e.path.rename(doomed)
            shutil.rmtree(doomed)
    except R1Error:
        return False
    return True  # the lock file stays: unlinked, a waiter on the old inode and a newcomer could both hold it
