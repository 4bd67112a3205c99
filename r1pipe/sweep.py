"""Sweeps: `r1pipe run-all -m` runs the recipe once per combination of values, in Hydra's multirun syntax.

    r1pipe run-all -m conf=tiny seed=1,2,3 cold_sft.trainer.learning_rate=1e-4,3e-4   # 6 runs
    r1pipe run-all -m --dry-run conf=tiny 'seed=range(1,4)'                            # each member's plan
    r1pipe compare runs/tiny-sweep                                                       # what differed, what it did

Every sweep override (`a=1,2,3`, `range(...)`, `choice(...)`: whatever Hydra's own override parser enumerates)
is an axis; the members are their cartesian product, in Hydra's order (the last axis varies fastest), and keep
every other override as given. The sweep directory is `<run.dir>-sweep` (run.dir resolved for the first
member); member i runs in `<sweep>/<i>` and all of them share one store, `<sweep>/store` (unless store.dir or
$R1PIPE_STORE says otherwise), so a stage the members agree on (base, when only RL settings vary) trains once
and the others link to it. `<sweep>/sweep.yaml` lists each member's directory and overrides; `compare` and
`report --sweep` read it. Rerunning the same command maps each member to the same directory, so finished
members skip and an interrupted one resumes.

Members run one after another on this machine; a failed member is reported in one line and the next one
starts. r1pipe has no scheduler of its own. On a cluster, run each member's stages as Slurm jobs:
`r1pipe slurm --stage NAME <member's overrides from sweep.yaml>` writes one job per stage, chained with
`sbatch --dependency=afterok:<jobid>`; members are independent, so their chains can run side by side (they
wait on each other only where they need the same store entry). Hydra's submitit launcher is another way to
fan out the members (one `r1pipe run-all` per member, with the overrides sweep.yaml lists).

Reads config and YAML only: no torch until a member runs.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1pipe import config as config_mod
from r1pipe import manifest as mf
from r1pipe import runner, store
from r1pipe.errors import R1Error, one_line

log = logging.getLogger("r1pipe")

SWEEP_YAML = "sweep.yaml"
LOCATION_KEYS = ("run.dir", "store.dir")  # where results go: the sweep sets them, a user cannot sweep them



@dataclass
class Member:
    dir: str  # under the sweep directory: "0", "1", ... in expansion order
    overrides: list[str]  # what it runs with, run.dir (and store.dir) included
    swept: list[str]  # the overrides that tell it from the other members: its label


@dataclass
class Sweep:
    dir: Path
    members: list[Member]


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            out.append(parser.parse_override(text))
        except HydraException as e:
            raise R1Error(f"cannot read override {text!r}: {one_line(e, 200)}",
                          hint="Hydra's grammar: key=value, key=a,b,c, key=range(1,4), key=choice(a,b)") from None
    return out


def expand(overrides: list[str]) -> list[list[str]]:
    """Each member's overrides: the cartesian product of the sweep overrides, the others kept in every member.

    Raises R1Error for a sweep of run.dir or store.dir (the sweep places each member), an interval() (no list
    of values to run), glob() (list the choices instead), shuffle() (member i must be the same run every time
    the command is repeated) and a sweep over no value."""
    from hydra.core.override_parser.types import ValueType

    axes = []
    for text, o in zip(overrides, _parse(overrides)):
        if not o.is_sweep_override():
            axes.append([text])
            continue
        key = o.get_key_element()
        if o.key_or_group in LOCATION_KEYS:
            raise R1Error(f"{o.key_or_group} cannot be swept ({text}): the sweep gives each member its own "
                          "directory", hint=f"set it once, e.g. {o.key_or_group}=runs/mysweep; members go under it")
        if not o.is_discrete_sweep() or o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            raise R1Error(f"{text}: a {o.value_type.name.lower()} has no list of values to run",
                          hint=f"list them: {key}=a,b,c, {key}=range(1,4) or {key}=choice(a,b)")
        if getattr(o.value(), "shuffle", False):
            raise R1Error(f"{text}: shuffle() would give member directories a new order on every rerun",
                          hint="list the values in the order to run them")
        values = [f"{key}={v}" for v in o.sweep_string_iterator()]
        if not values:
            raise R1Error(f"{text} sweeps over no value", hint=f"e.g. {key}=range(1,4) runs 1, 2 and 3")
        axes.append(values)
    return [list(member) for member in itertools.product(*axes)]


def _quoted(path: Path | str) -> str:
    """A path as an override value: Hydra would read a comma as a sweep and a space as an error."""
    text = str(path)
    if re.fullmatch(r"[\w./~+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def members(expanded: list[list[str]], sweep_dir: Path, own_store: bool) -> list[Member]:
    """Place each expanded member in `<sweep_dir>/<i>`; with `own_store`, all of them share `<sweep_dir>/store`.
    A user's run.dir names the sweep (it is in sweep_dir already), so it is dropped from the members'."""
    keys = [[o.key_or_group for o in _parse(ov)] for ov in expanded]
    common = set.intersection(*(set(ov) for ov in expanded)) if expanded else set()
    out = []
    for i, (ov, ks) in enumerate(zip(expanded, keys)):
        kept = [o for o, k in zip(ov, ks) if k != "run.dir"]
        placed = [*kept, f"run.dir={_quoted(sweep_dir / str(i))}"]
        if own_store:
            placed.append(f"store.dir={_quoted(sweep_dir / 'store')}")
        out.append(Member(str(i), placed, [o for o in ov if o not in common]))
    return out


def plan(overrides: list[str]) -> Sweep:
    """The sweep `run-all -m OVERRIDES` runs: its directory and members (composes the first member's config)."""
    expanded = expand(overrides)
    root = config_mod.run_dir(config_mod.load(expanded[0]))
    sweep_dir = root.with_name(f"{root.name}-sweep")
    user_store = any(o.key_or_group == "store.dir" for o in _parse(overrides)) or bool(os.environ.get(store.ENV))
    return Sweep(sweep_dir, members(expanded, sweep_dir, own_store=not user_store))


def write(sweep: Sweep) -> Path:
    path = sweep.dir / SWEEP_YAML
    mf.write_yaml_atomic(path, {"members": [{"dir": m.dir, "overrides": m.overrides, "swept": m.swept}
                                            for m in sweep.members]})
    return path


def read(sweep_dir: Path) -> Sweep:
    """A sweep as `run-all -m` wrote it (`compare` and `report --sweep` read members from here)."""
    import yaml

    path = Path(sweep_dir) / SWEEP_YAML
    if not path.is_file():
        raise R1Error(f"no sweep in {sweep_dir}: {SWEEP_YAML} is missing",
                      hint="run one: r1pipe run-all -m seed=1,2 ...")
    data = yaml.safe_load(path.read_text()) or {}
    rows = data.get("members") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "dir" in r for r in rows):
        raise R1Error(f"{path} lists no members", hint="rerun the sweep's run-all -m command to write it again")
    return Sweep(Path(sweep_dir), [Member(str(r["dir"]), list(r.get("overrides") or []), list(r.get("swept") or []))
                                   for r in rows])


def is_sweep(path: Path) -> bool:
    return (Path(path) / SWEEP_YAML).is_file()


def run(sweep: Sweep, start: str | None = None, stop: str | None = None, force: bool = False) -> list[Member]:
    """Run every member in turn; returns the members that failed. Every member's config is composed before
    the first one runs, so a typo in the last value fails now and not hours later."""
    configs = []
    for m in sweep.members:
        try:
            configs.append(config_mod.load(m.overrides))
        except R1Error as e:
            raise R1Error(f"sweep member {m.dir} ({' '.join(m.swept)}): {e.message}", hint=e.hint) from e
    write(sweep)  # before any member runs: compare can read a sweep that is still going
    failed = []
    for m, cfg in zip(sweep.members, configs):
        log.info("sweep member %s of %d (%s): %s", m.dir, len(sweep.members), " ".join(m.swept) or "no sweep",
                 config_mod.run_dir(cfg))
        try:
            runner.run_all(cfg, m.overrides, start=start, stop=stop, force=force)
        except Exception as e:  # noqa: BLE001 - one member's failure must not stop the others
            log.error("sweep member %s failed: %s", m.dir, one_line(e))
            log.debug("traceback of member %s", m.dir, exc_info=True)
            failed.append(m)
    return failed
