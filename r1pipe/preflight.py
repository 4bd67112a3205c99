"""`run-all --dry-run`: everything that can be checked before a run, on any machine, loading no model.

For a GPU preset checked on a laptop or a CI runner, what only the target machine can show (a GPU for bf16,
vLLM, DeepSpeed) is listed as a need, not raised; everything else is an error as in a real run:
- each stage's config against its TRL config class, at the world size its launcher will start, and the
  GRPO batch arithmetic;
- the launcher settings;
- every data source a stage will read, loaded and normalized with its field mapping (rows counted), and every
  evaluation benchmark. A hub dataset is read from $R1PIPE_DATA_MIRROR when set (CI points it at fixture files
  in the public datasets' layouts); without a local copy it is reported as not checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r1pipe import benchmarks, data, needs, stages
from r1pipe import config as config_mod
from r1pipe.checks import validate
from r1pipe.errors import R1Error


@dataclass
class Report:
    needs: dict[str, list[str]] = field(default_factory=dict)  # what only the target machine can provide -> where
    sources: list[tuple[str, str, str, str]] = field(default_factory=list)  # (stage, key, source, outcome)


def check(cfg, names: list[str]) -> Report:
    report = Report()
    with needs.checking_elsewhere() as report.needs:
        validate(cfg, names)
        for name in names:
            if (config_mod.stage_config(cfg, name).get("sampling") or {}).get("backend") == "vllm":
                needs.missing("vllm", f"{name}.sampling.backend")
        if names and cfg.eval.after_stage and cfg.eval.backend == "vllm":
            needs.missing("vllm", "eval.backend")
    for name in names:
        stage_cfg = config_mod.stage_config(cfg, name)
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
