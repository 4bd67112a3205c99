"""Fault injection: SIGKILL `r1pipe run-all` at random moments, rerun it, and check after every kill that
nothing finished was damaged and nothing half-done was taken as finished. Then let it finish and check that
the result is complete, intact and evaluated, and that one more run-all trains nothing.

    python scripts/fault_inject.py --kills 20 --seed 0 conf=tiny run.dir=runs/faults

Where the kills land: most are aimed at a stage (drawn at random, in graph order) and fall a random
0..--max-delay seconds after that stage logs "running" or "resuming", which covers training, generation,
saving, the move into place, the manifest and the evaluation after it; the rest (--startup-share) fall in
the first seconds of a process (imports, planning, hashing parents), as do any left once the run has
finished (a late delay can outrun the last stage). Every kill is SIGKILL to the whole
process group, as `kill -9` or the OOM killer would do it. The checks read the files with this script's own
hashing, not r1pipe's fast path. Exit status 0 when every check held; the summary goes to --summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

STARTED = re.compile(r"\b(\w+): (running|resuming) \(fingerprint|\b(\w+): complete; evaluating")
CURRENT = re.compile(r"\b(\w+): (running|resuming|complete in|complete; evaluating|evaluated|cache hit)")


def tree_sha256(path: Path) -> str:
    """r1pipe's content hash, recomputed here: sha256 over sorted relative paths and bytes (model cards,
    README.md beside a config.json, are documentation and left out, as r1pipe documents)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not (p.name == "README.md" and (p.parent / "config.json").is_file())
    )
    h = hashlib.sha256()
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def finished(run_dir: Path) -> dict[str, tuple[str, dict]]:
    """{stage: (fingerprint, output hashes)} of every stage with a readable manifest."""
    out = {}
    for path in run_dir.glob("*/manifest.json"):
        try:
            m = json.loads(path.read_text())
            out[path.parent.name] = (m["fingerprint"], {k: v["sha256"] for k, v in m["hashes"].items()})
        except (ValueError, KeyError):
            pass
    return out


def check_invariants(run_dir: Path) -> list[str]:
    """What is wrong with a run directory right after a kill; [] when every invariant holds:
    - every manifest.json is whole JSON (written atomically) with status complete;
    - every output a manifest lists exists and hashes to the recorded sha256;
    - a complete stage has no .staging left (its outputs were moved into place before the manifest);
    - every parent a complete stage records is complete now with the same fingerprint and output hashes
      (the child consumed finished outputs, never a partial attempt's);
    - a recorded evaluation has its eval.json, with the same headline number."""
    problems, manifests = [], {}
    for stage_dir in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = stage_dir / "manifest.json"
        if not path.exists():
            continue
        try:
            m = json.loads(path.read_text())
        except ValueError as e:
            problems.append(f"{path}: torn manifest ({e})")
            continue
        manifests[stage_dir.name] = m
        if m.get("status") != "complete":
            problems.append(f"{path}: status {m.get('status')!r}")
        for key, rel in m.get("outputs", {}).items():
            out = stage_dir / rel
            if not out.exists():
                problems.append(f"{stage_dir.name}: output {rel} missing")
            elif tree_sha256(out) != m["hashes"][key]["sha256"]:
                problems.append(f"{stage_dir.name}: output {rel} does not match its recorded sha256")
        if (stage_dir / ".staging").exists():
            problems.append(f"{stage_dir.name}: complete but .staging is still there")
        if m.get("eval"):
            ev = stage_dir / "eval.json"
            try:
                on_disk = json.loads(ev.read_text())
            except (OSError, ValueError) as e:
                problems.append(f"{stage_dir.name}: manifest has an evaluation but eval.json is unreadable ({e})")
            else:
                if on_disk.get("greedy_accuracy") != m["eval"].get("greedy_accuracy"):
                    problems.append(f"{stage_dir.name}: eval.json and the manifest disagree")
    for name, m in manifests.items():
        for parent in m.get("parents", []):
            pm = manifests.get(parent["stage"])
            if pm is None:
                problems.append(f"{name} is complete but its parent {parent['stage']} is not")
            elif pm["fingerprint"] != parent["fingerprint"] or {
                k: v["sha256"] for k, v in pm.get("hashes", {}).items()
            } != parent["outputs"]:
                problems.append(f"{name} consumed outputs of {parent['stage']} that are not its finished ones")
    return problems


def _stage_now(text: str) -> str:
    found = CURRENT.findall(text)
    if not found:
        return "startup"
    stage, what = found[-1]
    return f"{stage} ({'evaluation' if what in ('complete in', 'complete; evaluating', 'evaluated', 'cache hit') else what})"


def attempt(cmd: list[str], log_path: Path, kill: dict | None, timeout: float, order: list[str] = ()) -> dict:
    """One run-all. `kill`: {"target": stage, "delay": s} (after that stage, or a later one when it is
    already complete, starts) or {"startup": s} (after spawn); None runs to the end. Returns what happened."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0, fire_at = time.time(), None
    if kill and "startup" in kill:
        fire_at = t0 + kill["startup"]
    while proc.poll() is None:
        now = time.time()
        if now - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"rc": "timeout", "at": _stage_now(log_path.read_text(errors="replace"))}
        if kill and fire_at is None:
            started = [a or b for a, _, b in STARTED.findall(log_path.read_text(errors="replace"))]
            if any(order.index(s) >= order.index(kill["target"]) for s in started):
                fire_at = now + kill["delay"]
        if fire_at is not None and now >= fire_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"rc": "killed", "after_s": round(now - t0, 1), "at": _stage_now(log_path.read_text(errors="replace"))}
        time.sleep(0.05)
    return {"rc": proc.returncode, "after_s": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=40.0, help="latest kill, seconds after a stage starts")
    ap.add_argument("--startup-share", type=float, default=0.15, help="share of kills in a process's first seconds")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one run-all may take")
    ap.add_argument("--summary", type=Path, default=None, help="JSON summary (default: <run.dir>/faults.json)")
    ap.add_argument("overrides", nargs="*", help="r1pipe overrides: conf=tiny run.dir=runs/faults ...")
    args = ap.parse_args(argv)

    ov = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in args.overrides if "=" in o}
    if "run.dir" not in ov:
        ap.error("give run.dir=...: the run directory is deleted first")
    run_dir = Path(ov["run.dir"])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from r1pipe import config, execute, graph, state

    order = graph.chain(config.load(args.overrides))
    rng = random.Random(args.seed)
    startup = set(rng.sample(range(args.kills), round(args.kills * args.startup_share)))
    targets = iter(sorted((rng.choice(order) for _ in range(args.kills - len(startup))), key=order.index))
    plan = [{"startup": round(rng.uniform(0.5, 8.0), 2)} if i in startup
            else {"target": next(targets), "delay": round(rng.uniform(0, args.max_delay), 2)} for i in range(args.kills)]

    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    logs = run_dir.parent / f"{run_dir.name}.logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    cmd = [sys.executable, "-m", "r1pipe.cli", "run-all", *args.overrides]
    t0, record, failures, done_before = time.time(), [], [], {}
    i, n = 0, 0
    while i < len(plan) and n < len(plan) + 10:
        kill = plan[i]
        if record and record[-1]["rc"] == 0:  # the run finished before that kill fired: it falls inside a
            # no-op run-all, so within the time the last one took (under a second: no torch is imported)
            kill = {"startup": round(rng.uniform(0.05, 0.9 * record[-1]["after_s"]), 2), "retargeted": True}
        res = attempt(cmd, logs / f"attempt-{n:02d}.log", kill, args.timeout, order)
        problems = check_invariants(run_dir)
        now = finished(run_dir)
        for stage, before in done_before.items():  # finished work stays finished, byte for byte
            if now.get(stage) != before:
                problems.append(f"{stage} was complete before this kill and is not the same now")
        done_before = {**done_before, **now}
        record.append({"kill": i + 1 if res["rc"] == "killed" else None, **kill, **res, "problems": problems})
        print(f"attempt {n + 1:2d}, kill {i + 1:2d}/{args.kills}: {json.dumps(kill)} -> {res.get('rc')} at "
              f"{res.get('at', '-')} after {res.get('after_s', '-')} s; invariants "
              f"{'hold' if not problems else 'BROKEN: ' + '; '.join(problems)}", flush=True)
        failures += problems
        if res["rc"] not in ("killed", 0):  # 0: finished before the kill (it is tried again); else a failure
            failures.append(f"attempt {n + 1} exited with {res['rc']} (see {logs / f'attempt-{n:02d}.log'})")
            break
        i, n = i + (res["rc"] == "killed"), n + 1
    final = attempt(cmd, logs / "final.log", None, args.timeout)
    again = attempt(cmd, logs / "again.log", None, args.timeout)
    final_problems = check_invariants(run_dir)
    if (run_dir / ".replaced").exists() and any((run_dir / ".replaced").iterdir()):
        final_problems.append(f"{run_dir / '.replaced'} still holds set-aside outputs after the run finished")
    final_problems += [f"{s} was complete during the kills and is not the same at the end"
                       for s, before in done_before.items() if finished(run_dir).get(s) != before]
    cfg = config.load(args.overrides)
    st = state.states(cfg, full=True)
    not_complete = [f"{n} is {s.state} ({s.reason})" for n, s in st.items() if not s.complete]
    not_evaluated = [n for n, s in st.items() if s.complete and execute.wants_eval(cfg, n, s.manifest) and not s.manifest.get("eval")]
    again_text = (logs / "again.log").read_text(errors="replace")
    trained_again = sorted(set(a or b for a, _, b in STARTED.findall(again_text)))
    killed = sum(r["rc"] == "killed" for r in record)
    if killed < args.kills:
        failures.append(f"only {killed} of {args.kills} kills landed")
    if final["rc"] != 0:
        failures.append(f"the run after the kills exited with {final['rc']} (see {logs / 'final.log'})")
    failures += final_problems + not_complete + [f"{n} was never evaluated" for n in not_evaluated]
    if again["rc"] != 0 or trained_again:
        failures.append(f"run-all on the finished run exited {again['rc']} and ran {trained_again}")
    summary = {
        "kills": record, "final": final, "again": again, "failures": failures,
        "stages_hit": sorted({r["at"].split(" ")[0] for r in record if r.get("rc") == "killed"}),
        "wall_s": round(time.time() - t0, 1),
        "eval": {n: (s.manifest or {}).get("eval", {}).get("greedy_accuracy") for n, s in st.items()},
    }
    out = args.summary or run_dir / "faults.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{killed} kills landed in {', '.join(summary['stages_hit'])}; final run rc {final['rc']}, "
          f"rerun trained {trained_again or 'nothing'}; {summary['wall_s']:.0f} s in all; summary {out}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"ok: every invariant held after all {killed} kills and the run finished complete, intact and evaluated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
