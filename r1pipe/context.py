"""What a stage gets and gives back: `StageContext`, its inputs (resolved config, parents' outputs, its own
directory) and, filled in while it runs, its result (outputs written, decontamination, how it was launched).

The runner builds one per attempt; a launched stage's ranks rebuild it from `to_json()` (r1pipe/worker.py) and
hand their result back with `result()` / `take_result()`, so the context is serialized in one place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1pipe import benchmarks, data, decontam
from r1pipe import manifest as mf
from r1pipe.errors import R1Error

log = logging.getLogger("r1pipe")

# what a launched rank is given (to_json) besides name, dir and the parents' directories
_INPUTS = ("config", "parent_manifests", "seed", "resume", "trust_remote_code", "contamination_against")


@dataclass
class StageContext:
    """Everything a stage may touch: its resolved config, its parents' outputs and its own directory."""

    name: str
    config: dict[str, Any]
    dir: Path
    parent_manifests: dict[str, dict[str, Any]]
    parent_dirs: dict[str, Path]
    seed: int
    resume: bool
    trust_remote_code: bool = False
    # eval benchmarks (name -> spec) that training data is checked against
    contamination_against: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the result: outputs written (key -> name under the stage's directory), what each source lost
    outputs: dict[str, str] = field(default_factory=dict)
    decontamination: dict[str, Any] = field(default_factory=dict)
    # how the stage's work ran: {launcher, world_size, ranks: [{rank, host, pid}]} (r1pipe/launch.py)
    launch: dict[str, Any] = field(default_factory=lambda: {"launcher": "local", "world_size": 1})
    _contamination_index: Any = None

    def __post_init__(self) -> None:
        # the runner and every launched rank build one: each then runs code replies with the stage's limits
        if "sandbox" in self.config:
            from r1pipe import verifiers

            verifiers.configure(self.config["sandbox"])

    # -- inputs --------------------------------------------------------------------------------------------

    def load_rows(self, source: dict[str, Any], need: tuple[str, ...], label: str) -> list[dict[str, Any]]:
        """Training rows from a data source, with every row that overlaps an evaluation benchmark removed
        (config `decontaminate`); what was removed is counted under `label` in the manifest."""
        return self.decontaminate(data.load_rows(source, need=need, where=f"{self.name}.{label}"), label,
                                  ("question", "prompt", "solution"))

    def decontaminate(self, rows: list[dict[str, Any]], label: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        if "decontaminate" not in self.config:
            # the runner puts the settings in the config of each stage that declares task data: a stage that
            # reads some without declaring it would otherwise train on it unchecked, and say so nowhere
            raise R1Error(f"{self.name} reads task data ({label}) it does not declare",
                          hint=f"add a stages.Source for it to the SOURCES of the {self.name} stage module")
        spec = self.config["decontaminate"] or {}
        if not spec.get("enabled"):
            return rows
        if self._contamination_index is None:
            self._contamination_index, against = contamination_index(self.contamination_against, int(spec.get("ngram", 8)))
            self.decontamination["against"] = against
        kept, report = decontam.filter_rows(rows, self._contamination_index, fields=fields)
        self.decontamination.setdefault("sources", {})[label] = report
        if report["removed"]:
            log.warning("%s: decontamination removed %d of %d rows of %s (they overlap an eval benchmark)",
                        self.name, report["removed"], report["checked"], label)
        if not kept:
            raise R1Error(f"{self.name}: every row of {label} overlaps an evaluation benchmark",
                          hint="train on other data, or set decontaminate.enabled=false if that is intended")
        return kept

    def parent_output(self, stage: str, key: str) -> Path:
        manifest = self.parent_manifests[stage]
        if key not in manifest.get("outputs", {}):
            raise R1Error(f"stage {stage} has no output {key!r}", hint=f"its outputs: {list(manifest['outputs'])}")
        return self.parent_dirs[stage] / manifest["outputs"][key]

    def load_model(self, path: Path):
        """(model, tokenizer) from a directory r1pipe wrote (a parent's `model`), in the stage's dtype and
        under the run's trust_remote_code setting."""
        from r1pipe import models

        remote = self.trust_remote_code
        tokenizer = models.load_tokenizer(path, trust_remote_code=remote)
        return models.load_causal_lm(path, dtype=self.config.get("dtype", "float32"), trust_remote_code=remote), tokenizer

    @property
    def trainer_dir(self) -> Path:
        return self.dir / "trainer"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    # -- the result ----------------------------------------------------------------------------------------

    def output(self, key: str, name: str | None = None) -> Path:
        """A path to write output `key` to (a directory or a file called `name`, default `key`); the runner
        moves it to `<stage>/<name>` once the stage succeeds."""
        name = name or key
        path = self.dir / mf.STAGING / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.outputs[key] = name
        return path

    def result(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What a launched rank 0 hands back (take_result reads it)."""
        return {"metrics": metrics, "outputs": self.outputs, "decontamination": self.decontamination}

    def take_result(self, result: dict[str, Any]) -> dict[str, Any]:
        self.outputs.update(result.get("outputs") or {})
        self.decontamination.update(result.get("decontamination") or {})
        return result.get("metrics") or {}

    # -- serialization for launched ranks ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dir": str(self.dir), "parent_dirs": {k: str(v) for k, v in self.parent_dirs.items()},
                **{k: getattr(self, k) for k in _INPUTS}}

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> "StageContext":
        return cls(name=spec["name"], dir=Path(spec["dir"]), parent_dirs={k: Path(v) for k, v in spec["parent_dirs"].items()},
                   **{k: spec[k] for k in _INPUTS})


def contamination_index(against: dict[str, dict[str, Any]], ngram: int):
    """The decontamination index over the prompts of every benchmark in `against`, and {name: rows sha256}
    (what the manifest records, so evaluation can tell whether a benchmark was checked)."""
    from r1pipe.evaluation import questions_sha256

    texts, shas = [], {}
    for name, spec in against.items():
        rows = benchmarks.load(name, spec)
        texts += [r.get("question", r["prompt"]) for r in rows]  # the question itself, not the template
        shas[name] = questions_sha256(rows)
    return decontam.Index(texts, n=ngram), shas
