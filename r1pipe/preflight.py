"""`run-all --dry-run` and `run --stage --dry-run` (`dry_run`): everything that can be checked before a run, on
any machine, loading no model, and the report of it.

What a real run of the same command would refuse, the dry run refuses (a missing parent, several nodes for
run-all). For a GPU preset checked on a laptop or a CI runner, what only the target machine can show (a GPU for
bf16, vLLM, DeepSpeed) is listed as a need, not raised; everything else is an error as in a real run:
- each stage's config against its TRL config class, at the world size its launcher will start, and the
  GRPO batch arithmetic;
- the launcher settings;
- every data source a stage will read, loaded and normalized with its field mapping (rows counted), and every
  evaluation benchmark. A hub dataset is read from $R1PIPE_DATA_MIRROR when set (CI points it at fixture files
  in the public datasets' layouts); without a local copy it is reported as not checked;
- every model a stage loads that no stage writes (base.model, distill.student.model, preference reward models):
  a local directory's config, safetensors weights and tokenizer; a hub id in the hub cache, or asked of the hub;
- whether the preset's batch sizes were set for the number of processes the launcher starts (run.world_size).
The hub is asked once: offline, what needs it is "not checked" at once, not after a minute of retries. What could
not be checked is counted, and the dry run fails on it unless told it is expected (--allow-unchecked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r1pipe import benchmarks, data, hub, launch, needs, stages
from r1pipe import config as config_mod
from r1pipe.checks import validate, world_size_warnings
from r1pipe.errors import R1Error


@dataclass
class Report:
    needs: dict[str, list[str]] = field(default_factory=dict)  # what only the target machine can provide -> where
    sources: list[tuple[str, str, str, str]] = field(default_factory=list)  # (stage, key, source, outcome)
    models: list[tuple[str, str, str, str]] = field(default_factory=list)  # (stage, key, model, outcome)
    warnings: list[str] = field(default_factory=list)

    def unchecked(self) -> tuple[int, str]:
        """What this machine could not check: how many, and by kind ("2 models, 1 need of the machine that runs
        it"): models and data sources it could not reach, and needs only the target machine can show."""
        kinds = ((sum(o.startswith("not checked") for *_, o in self.models), "model", "models"),
                 (sum(o.startswith("not checked") for *_, o in self.sources), "data source", "data sources"),
                 (len(self.needs), "need of the machine that runs it", "needs of the machine that runs it"))
        return sum(n for n, *_ in kinds), ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in kinds if n)


def dry_run(cfg, overrides: list[str], start, stop, force: bool, allow_unchecked: bool, console,
            one: bool = False) -> None:
    """`run-all --dry-run` and `run --stage --dry-run`: plan, check and print the report on `console`; loads no
    model. Raises when something could not be checked here, unless allowed. `one`: for `run --stage` (its parents
    must be complete, as `run` requires), else for run-all (one node, as run-all requires)."""
    from rich.markup import escape
    from rich.table import Table

    from r1pipe import graph, runner, state

    targets = graph.select(cfg, start, stop)  # a stage not in this recipe fails here
    spec = launch.spec(cfg)
    if one:
        st = state.states(cfg)
        for p in graph.parents_of(cfg, start):
            if not st[p].complete:
                raise runner.incomplete_parent(start, p, st[p], overrides)
    else:
        runner.check_one_node(spec)
    steps = state.plan(cfg, targets, force=force)
    report = check(cfg, [s.stage for s in steps if s.action != "skip"])
    table = Table(title=f"plan for {config_mod.run_dir(cfg)}")
    for col in ("stage", "action", "why"):
        table.add_column(col)
    for s in steps:
        table.add_row(s.stage, s.action, s.reason)
    console.print(table)
    for title, what, rows in (("models (none loaded)", "model", report.models),
                              ("data sources (field mappings checked)", "source", report.sources)):
        if rows:
            found = Table(title=title)
            for col in ("stage", "key", what, "result"):
                found.add_column(col, overflow="fold")
            for row in rows:
                found.add_row(*(escape(c) for c in row))  # "[train]" is a split, not markup
            console.print(found)
    console.print(f"launcher: {spec['name']}, {launch.world_size(spec)} process(es) per training stage",
                  markup=False, highlight=False)
    console.print("config checked against TRL (field names, types, batch arithmetic): ok",
                  markup=False, highlight=False)
    for what, where in report.needs.items():
        console.print(f"needs on the machine that runs it: {what} for {', '.join(dict.fromkeys(where))}",
                      markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    n, kinds = report.unchecked()
    if not n:
        console.print("everything checked: ok", markup=False, highlight=False)
    elif allow_unchecked:
        console.print(f"not checked here: {kinds} (allowed by --allow-unchecked)", markup=False, highlight=False)
    else:
        raise R1Error(f"{n} could not be checked from here: {kinds}; the lines above say which",
                      hint="check them where they can be reached, or pass --allow-unchecked when that is expected, "
                           "as for a GPU preset checked on a laptop")


def check(cfg, names: list[str]) -> Report:
    report = Report()
    with needs.checking_elsewhere() as report.needs:
        validate(cfg, names)
        for name in names:
            if (config_mod.stage_config(cfg, name).get("sampling") or {}).get("backend") == "vllm":
                needs.missing("vllm", f"{name}.sampling.backend")
        if names and cfg.eval.after_stage and cfg.eval.backend == "vllm":
            needs.missing("vllm", "eval.backend")
    report.warnings += world_size_warnings(cfg, names)
    for name in names:
        stage_cfg = config_mod.stage_config(cfg, name)
        for key, model in stages.get(name).models(stage_cfg).items():
            revision = stages.get(name).revision(stage_cfg, key)
            report.models.append((name, key, str(model), hub.check_model(model, f"{name}.{key}", revision)))
        for source in stages.get(name).reads(stage_cfg):  # what the stage declares it reads under this config
            where = f"{name}.{source.key}"
            spec = stages.at(stage_cfg, source.key)
            report.sources.append((name, source.key, _describe(spec, where), _load(spec, source.need, where)))
    if names and cfg.eval.after_stage:
        from r1pipe.evaluation import benchmark_specs

        for bench, spec in benchmark_specs(config_mod.to_plain(cfg.eval)).items():
            where = f"eval.benchmarks.{bench}"
            report.sources.append(("eval", f"benchmarks.{bench}", _describe(benchmarks.resolve(spec, where), where),
                                   _count(lambda: benchmarks.load(bench, spec))))
    return report


def _load(source: dict[str, Any], need, where: str) -> str:
    if need == stages.PREFERENCES:
        return _count(lambda: data.load_preferences(source, where), where)
    # a source may map more columns than the stage needs: check those it maps too (a typo there fails later)
    mapped = tuple(k for k in ("answer", "solution") if k in (source.get("fields") or {}) or
                   (k == "solution" and source.get("solution_template")))
    return _count(lambda: data.load_rows(source, need=tuple(dict.fromkeys(need + mapped)), where=where), where)


def _count(load, where: str = "") -> str:
    try:
        rows = load()
    except data.DataUnavailable as e:
        return f"not checked: {e.message}"
    except R1Error as e:
        e.message = f"{where}: {e.message}" if where and not e.message.startswith(where) else e.message
        raise
    return f"ok, {len(rows)} rows"


def _describe(source: dict[str, Any], where: str) -> str:
    kind = data.source_kind(source, where)
    split = f" [{source['split']}]" if kind == "hub" and source.get("split") else ""
    return f"{kind}:{source[kind]}{split}"
