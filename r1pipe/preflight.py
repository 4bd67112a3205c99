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

import contextlib
from dataclasses import dataclass, field
from typing import Any

from r1pipe import config as config_mod
from r1pipe import data
from r1pipe.errors import R1Error

PA, PS, P = ("prompt", "answer"), ("prompt", "solution"), ("prompt",)
PREFERENCES = "preferences"
# What each stage's run() reads: (key path in its config, fields it needs). Mirrors the stages' load_rows calls.
SOURCES: dict[str, list[tuple[str, Any]]] = {
    "base": [("tokenizer.corpus", PS)],
    "cold_sft": [("data", PS)],
    "reasoning_rl": [("data", PA)],
    "rejection_sampling": [("data", PA), ("non_reasoning.data", PS)],
    "second_sft": [("baseline.data", PS)],
    "reward_model": [("data", PREFERENCES), ("heldout", PREFERENCES)],
    "alignment_rl": [("data", PA), ("general_data", P), ("general_heldout", P)],
    "distill": [("data", PA), ("non_reasoning.data", PS), ("baseline.data", PS)],
}


_NEEDS: dict[str, list[str]] | None = None  # what -> [where]; set while a --dry-run checks


def elsewhere() -> bool:
    """Whether configs are being checked for another machine (--dry-run) rather than run here."""
    return _NEEDS is not None


def defer(what: str, where: str) -> bool:
    """Note that the target machine must provide `what` (for `where`); False when not in a --dry-run, where the
    caller raises as usual."""
    if _NEEDS is None:
        return False
    _NEEDS.setdefault(what, []).append(where)
    return True


def missing(package: str, where: str, extra: str | None = None) -> bool:
    """A package the run needs and this machine lacks: True (raise) in a real run, noted in a --dry-run.
    `extra`: r1pipe's optional dependency that installs it (default: the package's name)."""
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        return False
    return not defer(f"{package} (pip install 'r1pipe[{extra or package}]')", where)


@contextlib.contextmanager
def _checking_elsewhere():
    global _NEEDS
    _NEEDS = needs = {}
    try:
        yield needs
    finally:
        _NEEDS = None


@dataclass
class Report:
    needs: dict[str, list[str]] = field(default_factory=dict)  # what only the target machine can provide -> where
    sources: list[tuple[str, str, str, str]] = field(default_factory=list)  # (stage, key, source, outcome)


def check(cfg, names: list[str]) -> Report:
    from r1pipe import runner

    report = Report()
    with _checking_elsewhere() as report.needs:
        runner.validate(cfg, names)
        for name in names:
            if (config_mod.stage_config(cfg, name).get("sampling") or {}).get("backend") == "vllm":
                missing("vllm", f"{name}.sampling.backend")
        if names and cfg.eval.after_stage and cfg.eval.backend == "vllm":
            missing("vllm", "eval.backend")
    for name in names:
        stage_cfg = config_mod.stage_config(cfg, name)
        for key, need in SOURCES.get(name, []):
            source = _at(stage_cfg, key)
            if not isinstance(source, dict) or (name == "base" and stage_cfg.get("model")) or \
                    (key == "baseline.data" and not (stage_cfg.get("baseline") or {}).get("enabled")):
                continue
            where = f"{name}.{key}"
            report.sources.append((name, key, _describe(source, where), _load(source, need, where)))
    if names and cfg.eval.after_stage:
        from r1pipe import benchmarks
        from r1pipe.evaluation import benchmark_specs

        for bench, spec in benchmark_specs(config_mod.to_plain(cfg.eval)).items():
            where = f"eval.benchmarks.{bench}"
            report.sources.append(("eval", f"benchmarks.{bench}", _describe(benchmarks.resolve(spec, where), where),
                                   _count(lambda: benchmarks.load(bench, spec))))
    return report


def _load(source: dict[str, Any], need, where: str) -> str:
    if need == PREFERENCES:
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


def _at(node: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _describe(source: dict[str, Any], where: str) -> str:
    kind = data.source_kind(source, where)
    split = f" [{source['split']}]" if kind == "hub" and source.get("split") else ""
    return f"{kind}:{source[kind]}{split}"
