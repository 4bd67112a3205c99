"""Manifests, fingerprints and output hashes: what makes a stage "complete", and the proof of it.

A stage directory holds `manifest.json`, written last and atomically, only on success. A stage is
- complete: manifest present, status complete, fingerprint equal to the one recomputed now, outputs intact;
- stale:    a manifest exists but its fingerprint no longer matches (config, parents or code changed: it and
            its children rerun);
- partial:  no manifest, but an interrupted attempt with the same fingerprint left trainer checkpoints
            or generation shards (it resumes);
- corrupt:  its manifest cannot be read, or an output changed after the stage finished (run-all refuses
            to touch it and names the file; --force reruns it);
- missing:  anything else.

Each output's hash records every file's size, mtime and sha256. Before a stage reads a parent, the parent's
files are verified: a file whose size and mtime are as recorded is trusted (the fast path); any other is
hashed again, and a file whose bytes match is remembered in `.verified.json` so the next check is fast again.

Functions over files and dicts; no torch, so `r1pipe status` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from r1pipe.errors import R1Error

SCHEMA = 1
MANIFEST = "manifest.json"
IN_PROGRESS = ".in_progress.json"  # fingerprint of the attempt now on disk; lets a rerun resume it
VERIFIED = ".verified.json"  # stamps of files re-hashed since the manifest (a copied run keeps its fast path)
STAGING = ".staging"  # outputs are written here and moved into place only after the stage succeeds

# Keys that change how a run is watched or stored, never what it computes: excluded from the fingerprint so
# that, say, logging more often does not retrain a model.
RUN_ONLY_KEYS = {"eval", "log_samples"}
RUN_ONLY_TRAINER_KEYS = {
    "logging_steps", "logging_first_step", "logging_strategy", "logging_dir", "report_to", "run_name",
    "save_steps", "save_strategy", "save_total_limit", "disable_tqdm", "dataloader_num_workers",
    "log_completions", "num_completions_to_print", "logging_nan_inf_filter", "ddp_find_unused_parameters",
    # where a vLLM server runs, not what it computes: a resubmitted job on another node resumes
    "vllm_server_host", "vllm_server_port", "vllm_server_base_url", "vllm_server_timeout", "vllm_group_port",
}  # fmt: skip


def fingerprint(stage: str, config: dict[str, Any], parents: list[dict[str, Any]], code_version: str,
                model_dirs: dict[str, str] | None = None) -> str:
    """sha256 over the stage name, its config minus run-only keys, its parents' lineage, its code, the
    size and mtime of every local data file it names (editing a dataset in place reruns what read it), and the
    content digest of every local model directory it reads (`model_dirs`: config key -> local_inputs' sha256).
    A hub model enters through its id and revision in the config (pin `revision` for exact weights)."""
    cfg = {k: v for k, v in config.items() if k not in RUN_ONLY_KEYS}
    if isinstance(cfg.get("trainer"), dict):
        cfg["trainer"] = {k: v for k, v in cfg["trainer"].items() if k not in RUN_ONLY_TRAINER_KEYS}
    payload = {"stage": stage, "config": cfg, "parents": parents, "code": code_version}
    files = data_file_stamps(cfg)
    if files:
        payload["data_files"] = files
    if model_dirs:
        payload["model_dirs"] = model_dirs
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def data_file_stamps(node: Any) -> dict[str, list[int] | None]:
    """{path: [size, mtime_ns]} for every `path:` data source in a config (None for a missing file)."""
    out: dict[str, list[int] | None] = {}
    if isinstance(node, dict):
        if isinstance(node.get("path"), str):
            p = Path(node["path"])
            out[node["path"]] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
        for v in node.values():
            out.update(data_file_stamps(v))
    elif isinstance(node, list):
        for v in node:
            out.update(data_file_stamps(v))
    return out


def parent_lineage(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a child's fingerprint records of a parent: its fingerprint and the content hash of its outputs.

    Content, not only parameters: sampling and GPU training are not bit-reproducible, and a child must
    rerun when the bytes it consumed change.
    """
    return {
        "stage": manifest["stage"],
        "fingerprint": manifest["fingerprint"],
        "outputs": {k: v["sha256"] for k, v in sorted(manifest.get("hashes", {}).items())},
    }


def _content_files(path: Path) -> list[Path]:
    """The files an output's hash covers. A model card (README.md beside a config.json) is left out: it is
    generated from the manifests and rewritten when evaluation adds numbers, after the hash is recorded."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not (p.name == "README.md" and (p.parent / "config.json").is_file()))


def hash_path(path: Path) -> dict[str, Any]:
    """Content hash of a file or directory tree: sha256 over sorted relative paths and file bytes, plus an
    index of every file's [size, mtime_ns, sha256] (what names a changed file, and the fast path's stamps)."""
    files = _content_files(path)
    h, size, index = hashlib.sha256(), 0, {}
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        fh_sha = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                fh_sha.update(chunk)
                size += len(chunk)
        h.update(b"\0")
        st = f.stat()
        index[rel] = [st.st_size, st.st_mtime_ns, fh_sha.hexdigest()]
    return {"sha256": h.hexdigest(), "size": size, "files": len(files), "index": index}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def local_inputs(stage_dir: Path, dirs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """{key: {path, sha256, index}} for each local model directory a stage reads (`dirs`: config key -> dir).

    The index is hash_path's ({file: [size, mtime_ns, sha256]}) and the fast path is the outputs' one: a file
    whose size and mtime are as the stage's manifest recorded them (or as .verified.json remembers them after a
    re-hash matched) keeps its recorded sha256; any other is hashed again. So `status` re-reads no 500 MB
    model that nobody touched, and an edited byte changes the digest, hence the stage's fingerprint."""
    if not dirs:
        return {}
    try:
        recorded = (read_manifest(stage_dir) or {}).get("inputs") or {}
    except R1Error:  # a corrupt manifest: stage_state says so; hash everything meanwhile
        recorded = {}
    verified = read_json_dict(stage_dir / VERIFIED) or {}
    out: dict[str, dict[str, Any]] = {}
    newly: dict[str, list[int]] = {}
    for key, path in dirs.items():
        path = Path(path).expanduser().resolve()
        was = recorded.get(key) if isinstance(recorded.get(key), dict) else {}
        known = (was.get("index") or {}) if was.get("path") == str(path) else {}
        index = {}
        for f in _content_files(path):
            rel = f.relative_to(path).as_posix()
            st = f.stat()
            stamp, memo = [st.st_size, st.st_mtime_ns], f"inputs/{key}/{rel}"
            rec = known.get(rel)
            if rec and (rec[:2] == stamp or verified.get(memo) == stamp):
                index[rel] = [*stamp, rec[2]]  # the fast path: untouched since it was hashed
                continue
            index[rel] = [*stamp, sha256_file(f)]
            if rec and index[rel][2] == rec[2]:
                newly[memo] = stamp  # same bytes, new mtime: remembered, so the next check is fast again
        digest = hashlib.sha256(json.dumps({r: v[2] for r, v in sorted(index.items())}).encode()).hexdigest()
        out[key] = {"path": str(path), "sha256": digest, "index": index}
    if newly and (stage_dir / MANIFEST).is_file():
        try:
            write_json_atomic(stage_dir / VERIFIED, {**verified, **newly})
        except OSError:
            pass  # a read-only run directory: still correct, only slower
    return out


def changed_input(recorded: dict[str, Any], current: dict[str, Any]) -> str | None:
    """What differs between the model directories a manifest recorded and those on disk now, naming the
    directory and a file; None when they match."""
    for key, now in current.items():
        was = recorded.get(key) if isinstance(recorded.get(key), dict) else {}
        if was.get("sha256") == now["sha256"]:
            continue
        if not was:
            return f"model directory {now['path']} ({key}) was not recorded when the stage ran"
        old, new = was.get("index") or {}, now["index"]
        files = sorted(r for r in set(old) | set(new) if (old.get(r) or [None] * 3)[2] != (new.get(r) or [None] * 3)[2])
        detail = f": {files[0]} differs" if files else ""
        return f"model directory {now['path']} ({key}) changed since the stage ran{detail}"
    return None


def quick_stat(path: Path) -> tuple[int, int]:
    """(total bytes, file count): the cheap check `status` makes before trusting a manifest."""
    files = _content_files(path)
    return sum(p.stat().st_size for p in files), len(files)


def fsync_tree(path: Path) -> None:
    """Flush a file or a directory tree (each entry before its directory, then the parent) to the disk."""
    # reverse order puts every entry before the directory holding it
    items = [path] if path.is_file() else [*sorted(path.rglob("*"), reverse=True), path]
    for p in [*items, path.parent]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: Path, text: str, tmp_dir: Path | None = None) -> None:
    """Write to a temporary file, fsync, rename: readers (and a resume) see the old file or the new one, never
    half of one. The temporary file sits in `tmp_dir` (same filesystem; default: beside `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; what r1pipe writes is meant to be read
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: list[Any]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_yaml_atomic(path: Path, data: dict[str, Any]) -> None:
    from omegaconf import OmegaConf

    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(data)))


def read_jsonl(path: Path) -> list[Any]:
    """JSON lines ([] when the file is missing), skipping a line that does not parse: a torn last line of a
    log a killed process was appending to (files written whole, with write_jsonl_atomic, have none)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_json_dict(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing or torn (a kill while it was written)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise R1Error(
            f"corrupt manifest {path}: {e}", hint=f"rerun the stage with --force ({stage_dir.name})"
        ) from e
    if not isinstance(data, dict) or "stage" not in data or "fingerprint" not in data:
        raise R1Error(f"corrupt manifest {path}: missing stage/fingerprint", hint="rerun the stage with --force")
    if not isinstance(data.get("schema", 0), int):
        raise R1Error(f"corrupt manifest {path}: schema is {data['schema']!r}", hint="rerun the stage with --force")
    if data.get("schema", 0) > SCHEMA:
        raise NewerSchema(
            f"{path} has manifest schema {data['schema']}, this r1pipe reads up to {SCHEMA}",
            hint="upgrade r1pipe, or use another run.dir",
        )
    return data


class NewerSchema(R1Error):
    """A manifest written by a newer r1pipe: not damaged, so never rebuilt (not even with --force)."""


# complete: manifest and outputs match; partial: an interrupted attempt can resume; stale: its inputs changed;
# corrupt: a finished file changed; missing: nothing (usable) on disk
State = Literal["complete", "partial", "stale", "corrupt", "missing"]


@dataclass
class StageState:
    stage: str
    state: State
    reason: str
    expected: str | None  # fingerprint it should have now (None while a parent is not complete)
    manifest: dict[str, Any] | None
    newer: bool = False  # written by a newer r1pipe: upgrade, never --force
    inputs: dict[str, Any] = field(default_factory=dict)  # local model directories read (local_inputs)
    dir: Path | None = None  # where it is (its store entry, for the fingerprint expected now)
    linked: bool = False  # whether the run directory links to `dir` already

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def outputs_intact(stage_dir: Path, manifest: dict[str, Any], full: bool = False) -> str | None:
    """None when every recorded output is present and matches; else what is wrong, naming the file.

    Quick (full=False, what `status` does): file names and sizes only, no bytes read. Full (before a stage
    reads its parents): also the bytes of every file whose size or mtime differ from the recorded stamps.
    """
    verified = (read_json_dict(stage_dir / VERIFIED) or {}) if full else {}
    newly: dict[str, list[int]] = {}
    for key, rel in manifest.get("outputs", {}).items():
        path = stage_dir / rel
        rec = manifest.get("hashes", {}).get(key)
        if not path.exists():
            return f"output {path} is missing"
        if rec is None:
            return f"no hash recorded for output {key}"
        if "index" not in rec:  # a manifest written before per-file stamps: the whole-tree check
            size, count = quick_stat(path)
            if (size, count) != (rec["size"], rec["files"]):
                return f"output {path} changed since it was written ({count} files, {size} bytes; recorded {rec['files']}, {rec['size']})"
            if full and hash_path(path)["sha256"] != rec["sha256"]:
                return f"output {path} does not match its recorded sha256"
            continue
        files = {(f.name if f == path else f.relative_to(path).as_posix()): f for f in _content_files(path)}
        gone, added = sorted(set(rec["index"]) - set(files)), sorted(set(files) - set(rec["index"]))
        if gone:
            return f"file {path / gone[0] if path.is_dir() else path} is missing"
        if added:
            return f"file {files[added[0]]} was added after the stage finished"
        for rel_file, (size, mtime, sha) in sorted(rec["index"].items()):
            f = files[rel_file]
            st = f.stat()
            if st.st_size != size:
                return f"file {f} changed size after the stage finished ({st.st_size} bytes, recorded {size})"
            if not full:
                continue
            stamp, name = [st.st_size, st.st_mtime_ns], f.relative_to(stage_dir).as_posix()
            if stamp == [size, mtime] or verified.get(name) == stamp:
                continue  # the fast path: untouched since it was hashed
            if sha256_file(f) != sha:
                return f"file {f} was modified after the stage finished (its sha256 differs from the manifest)"
            newly[name] = stamp
    if newly:  # same bytes, new mtime (a copy, a touch): remember, so the next check is fast again
        try:
            write_json_atomic(stage_dir / VERIFIED, {**verified, **newly})
        except OSError:
            pass  # a read-only run directory: the check stays correct, only slower
    return None


def stage_state(stage_dir: Path, expected: str | None, has_progress: bool, full: bool = False,
                inputs: dict[str, Any] | None = None, name: str | None = None) -> StageState:
    """Classify one stage directory (a store entry). `expected` is the fingerprint it should have (None: a
    parent is not done); `inputs` the local model directories it reads, as local_inputs found them (a stale
    reason names one); `name` the stage (default: the directory's name)."""
    state = _stage_state(stage_dir, expected, has_progress, full, inputs or {}, name or stage_dir.name)
    state.inputs = inputs or {}
    return state


def _stage_state(stage_dir: Path, expected: str | None, has_progress: bool, full: bool,
                 inputs: dict[str, Any], name: str) -> StageState:
    try:
        manifest = read_manifest(stage_dir)
    except NewerSchema as e:
        return StageState(name, "corrupt", str(e), expected, None, newer=True)
    except R1Error as e:  # the message alone: the runner adds the --force command with the user's overrides
        return StageState(name, "corrupt", e.message, expected, None)
    if manifest is not None:
        if expected is None:
            return StageState(name, "stale", "a parent is not complete", expected, manifest)
        if manifest.get("status") != "complete":
            return StageState(name, "stale", f"manifest status is {manifest.get('status')!r}", expected, manifest)
        if manifest["fingerprint"] != expected:
            reason = changed_input(manifest.get("inputs") or {}, inputs) or "config, parents or code changed"
            return StageState(name, "stale", reason, expected, manifest)
        problem = outputs_intact(stage_dir, manifest, full=full)
        if problem:  # finished work was damaged or edited: never rebuilt silently, never read
            return StageState(name, "corrupt", problem, expected, manifest)
        return StageState(name, "complete", "up to date", expected, manifest)
    marker = stage_dir / IN_PROGRESS
    if expected is not None and has_progress:
        if (read_json_dict(marker) or {}).get("fingerprint") == expected:
            return StageState(name, "partial", "an interrupted attempt can resume", expected, None)
    return StageState(name, "missing", "never completed", expected, None)


def environment() -> dict[str, Any]:
    """Versions that produced a stage, read from installed metadata (no heavy imports)."""
    from importlib import metadata

    env: dict[str, Any] = {"python": sys.version.split()[0]}
    for pkg in ("r1pipe", "torch", "transformers", "trl", "datasets", "accelerate"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    env["git_commit"] = _git_commit()
    return env


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_path = root / ".git" / ref[5:]
            if ref_path.exists():
                return ref_path.read_text().strip()
            packed = root / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None
