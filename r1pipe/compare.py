"""Compare runs: what differed in their configs, which stages they share, and what it did to the numbers.

    r1pipe compare runs/tiny runs/tiny-lr3        # two or more run directories; the first is the reference
    r1pipe compare runs/tiny-sweep                # a sweep directory: its members, from sweep.yaml
    r1pipe report --sweep runs/tiny-sweep         # accuracy by stage, a line per member (sweep_report.py)

Three tables, each run against the first:
- config: every key whose value differs (dotted, as an override names it), from each run's run.yaml, or, for
  runs without one, from the stages' manifests (`<stage>.<key>`); run.dir and store.dir always differ, and
  are left out;
- stages: each run's short fingerprint, "shared" when it equals the first run's (the same work), and the time
  the stage trained; "not retrained" where an earlier run in the list uses the very same store entry;
- evaluation: per evaluated stage, each run's headline greedy accuracy and pass@1 (± one standard error), and
  the paired difference from the first run on the same problems, from both runs' eval samples. Paired, its
  standard error is far smaller than the two runs' own: both models answered the same questions.

Reads run.yaml, manifests and eval samples only: no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1pipe import manifest as mf
from r1pipe import stages
from r1pipe import sweep as sweep_mod
from r1pipe.errors import R1Error
from r1pipe.evaluation import paired_difference, read_samples
from r1pipe.report import pct

RUN_YAML = "run.yaml"


class _Absent:
    def __repr__(self) -> str:
        return "—"


ABSENT = _Absent()  # a key one run's config lacks (None is a value: `null`)


@dataclass
class Run:
    label: str
    dir: Path
    manifests: dict[str, dict[str, Any]]  # stage -> manifest, in recipe order
    run_config: dict[str, Any] | None  # run.yaml's `config`, when the run wrote one
    swept: str = ""  # a sweep member's own overrides


@dataclass
class StageCell:
    fingerprint: str
    shared: bool  # equal to the first run's: the same config and lineage
    retrained: bool  # False when an earlier run in the list uses this very store entry
    duration_s: float | None


@dataclass
class EvalCell:
    eval: dict[str, Any]  # the manifest's headline evaluation
    diff: dict[str, Any]  # paired, against the first run: greedy_accuracy_diff(_se), pass@1_diff(_se)
    note: str  # why there is no paired difference ("" when there is, or for the first run)


@dataclass
class Comparison:
    runs: list[Run]
    config: dict[str, list[Any]]  # key -> each run's value, only the keys that differ
    stages: dict[str, list[StageCell | None]]  # None: that run has no such stage
    evals: dict[str, list[EvalCell | None]]


# ------------------------------------------------------------------------------------------------- reading


def stage_manifests(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every stage directory (or link into a store) with a manifest: r1pipe's stages in recipe order, then others."""
    if not run_dir.is_dir():
        return {}
    found = {p.name: m for p in run_dir.iterdir()  # a dot name is r1pipe's own (an entry held during an attempt)
             if p.is_dir() and not p.name.startswith(".") and (m := mf.read_manifest(p)) is not None}
    order = {name: i for i, name in enumerate(stages.names())}
    return {k: found[k] for k in sorted(found, key=lambda k: (order.get(k, len(order)), k))}


def load_run(label: str, run_dir: Path, swept: str = "") -> Run:
    if not run_dir.is_dir():
        raise R1Error(f"no run directory {run_dir}", hint="give the run.dir of a run, e.g. runs/tiny")
    manifests = stage_manifests(run_dir)
    if not manifests:
        raise R1Error(f"{run_dir} holds no finished stage (no <stage>/manifest.json)",
                      hint="run it first: r1pipe run-all")
    run_config = None
    if (run_dir / RUN_YAML).is_file():
        import yaml

        data = yaml.safe_load((run_dir / RUN_YAML).read_text()) or {}
        run_config = data.get("config") if isinstance(data.get("config"), dict) else None
    return Run(label, run_dir, manifests, run_config, swept)


def resolve(paths: list[Path]) -> list[Run]:
    """The runs to compare: each path a run directory, or a sweep directory standing for its members."""
    runs = []
    for path in map(Path, paths):
        if sweep_mod.is_sweep(path):
            runs += [load_run(f"{path.name}/{m.dir}", path / m.dir, " ".join(m.swept))
                     for m in sweep_mod.read(path).members]
        else:
            runs.append(load_run(str(path), path))
    if len(runs) < 2:
        raise R1Error(f"{len(runs)} run to compare in {', '.join(map(str, paths))}",
                      hint="give two or more run directories, or a sweep directory (r1pipe run-all -m ...)")
    return runs


# ---------------------------------------------------------------------------------------------- comparing


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys an override names. Lists are values, not branches."""
    if not isinstance(node, dict) or (not node and prefix):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def flat_configs(runs: list[Run]) -> list[dict[str, Any]]:
    """run.yaml's config when every run has one (the whole config, eval settings included); otherwise what
    all of them have, each stage's config from its manifest, under the stage's name."""
    if all(r.run_config is not None for r in runs):
        return [flatten(r.run_config) for r in runs]
    return [flatten({stage: m.get("config") or {} for stage, m in r.manifests.items()}) for r in runs]


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted(set().union(*configs))
    out = {}
    for key in keys:
        if key in sweep_mod.LOCATION_KEYS:
            continue
        values = [c.get(key, ABSENT) for c in configs]
        if any(v != values[0] for v in values):  # ABSENT equals only itself
            out[key] = values
    return out


def stage_cells(runs: list[Run]) -> dict[str, list[StageCell | None]]:
    names = list(dict.fromkeys(s for r in runs for s in r.manifests))
    out: dict[str, list[StageCell | None]] = {}
    for name in names:
        first = runs[0].manifests.get(name, {}).get("fingerprint")
        seen: set[Path] = set()
        cells: list[StageCell | None] = []
        for r in runs:
            m = r.manifests.get(name)
            if m is None:
                cells.append(None)
                continue
            entry = (r.dir / name).resolve()  # a link into the store: equal paths, equal files
            cells.append(StageCell(m["fingerprint"], m["fingerprint"] == first, entry not in seen, m.get("duration_s")))
            seen.add(entry)
        out[name] = cells
    return out


def headline(m: dict[str, Any]) -> dict[str, Any]:
    ev = m.get("eval") or {}
    return ev if "greedy_accuracy" in ev or "pass@1" in ev else {}


def paired(first: Run, run: Run, stage: str) -> tuple[dict[str, Any], str]:
    """(paired difference run - first, "") on the headline benchmark's samples, or ({}, why not)."""
    a, b = headline(first.manifests.get(stage, {})), headline(run.manifests[stage])
    if not a:
        return {}, f"{first.label} has no evaluation"
    if a.get("benchmark") != b.get("benchmark"):
        return {}, f"other benchmarks ({a.get('benchmark')} / {b.get('benchmark')})"
    verifier = (a.get("settings") or {}).get("verifier")
    if verifier is None or verifier != (b.get("settings") or {}).get("verifier"):
        return {}, "answers checked by different verifiers (or none recorded)"
    before, after = read_samples(first.dir / stage), read_samples(run.dir / stage)
    if not before or not after:
        return {}, "no eval samples to pair"
    diff = paired_difference(before, after, verifier)
    return (diff, "") if diff else ({}, "different problems: no paired difference")


def eval_cells(runs: list[Run]) -> dict[str, list[EvalCell | None]]:
    names = list(dict.fromkeys(s for r in runs for s, m in r.manifests.items() if headline(m)))
    out: dict[str, list[EvalCell | None]] = {}
    for name in names:
        cells: list[EvalCell | None] = []
        for i, r in enumerate(runs):
            ev = headline(r.manifests.get(name, {}))
            if not ev:
                cells.append(None)
                continue
            diff, note = paired(runs[0], r, name) if i else ({}, "")
            cells.append(EvalCell(ev, diff, note))
        out[name] = cells
    return out


def compare(paths: list[Path]) -> Comparison:
    runs = resolve(paths)
    return Comparison(runs, config_diff(flat_configs(runs)), stage_cells(runs), eval_cells(runs))


# ---------------------------------------------------------------------------------------------- showing


def show_value(v: Any) -> str:
    return repr(v) if v is ABSENT else v if isinstance(v, str) else json.dumps(v)


def stage_text(cell: StageCell | None, first: bool) -> str:
    if cell is None:
        return "—"
    fp = cell.fingerprint[:8] + ("" if first else " shared" if cell.shared else " own")
    if not cell.retrained:
        return f"{fp}, not retrained"
    return f"{fp}, {cell.duration_s:.0f} s" if cell.duration_s is not None else fp


def points(d: dict[str, Any], key: str) -> str:
    return f"{100 * d[key]:+.1f} ± {100 * d[key + '_se']:.1f}" if key in d else ""


def trained_s(cells: dict[str, list[StageCell | None]], i: int) -> float:
    """Seconds run i spent training: the stages no earlier run had trained for it."""
    return sum(c.duration_s or 0.0 for col in cells.values() if (c := col[i]) is not None and c.retrained)


def render(c: Comparison, console) -> None:
    from rich.markup import escape  # a value such as [train] is text, not rich markup
    from rich.table import Table

    heads = [escape(r.label + (f"\n{r.swept}" if r.swept else "")) for r in c.runs]
    if c.config:
        t = Table(title="config: the keys that differ")
        for col in ["key", *heads]:
            t.add_column(col, overflow="fold")
        for key, values in c.config.items():
            t.add_row(escape(key), *(escape(show_value(v)) for v in values))
        console.print(t)
    else:
        console.print("config: no key differs (run.dir and store.dir aside)", markup=False, highlight=False)
    t = Table(title=escape(f"stages: fingerprint (shared with {c.runs[0].label}, or own) and training time"))
    for col in ["stage", *heads]:
        t.add_column(col, overflow="fold")
    for name, cells in c.stages.items():
        t.add_row(name, *(stage_text(cell, i == 0) for i, cell in enumerate(cells)))
    t.add_row("trained in all", *(f"{trained_s(c.stages, i):.0f} s" for i in range(len(c.runs))))
    console.print(t)
    if not c.evals:
        console.print("evaluation: no stage of these runs was evaluated", markup=False, highlight=False)
        return
    t = Table(title=escape(f"evaluation (headline benchmark, ± one SE); Δ: paired, on the same problems, vs "
                           f"{c.runs[0].label}"))
    for col in ("stage", "run", "greedy", "Δ greedy", "pass@1", "Δ pass@1"):
        t.add_column(col, overflow="fold")
    for name, cells in c.evals.items():
        for r, cell in zip(c.runs, cells):
            if cell is None:
                t.add_row(name, escape(r.label), "not evaluated", "", "", "")
                continue
            ev = cell.eval
            t.add_row(name, escape(r.label), pct(ev.get("greedy_accuracy"), ev.get("greedy_accuracy_se")),
                      escape(cell.note) or points(cell.diff, "greedy_accuracy_diff"),
                      pct(ev.get("pass@1"), ev.get("pass@1_se")), points(cell.diff, "pass@1_diff"))
    console.print(t)
