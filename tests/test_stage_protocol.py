"""A stage is one module and one YAML. The registry checks every stage against the protocol, and a stage
defined in this file joins a chain (config, plan, dry run, decontamination, resume) without editing any list."""

import ast
import json
import types
from pathlib import Path

import pytest
from conftest import overrides_for

from r1pipe import config, data, graph, preflight, runner, stages, state
from r1pipe import manifest as mf
from r1pipe.errors import R1Error

PACKAGE = Path(__file__).resolve().parent.parent / "r1pipe"


def test_every_registered_stage_keeps_the_protocol():
    cfg = config.load(["conf=tiny"])
    for i, name in enumerate(stages.names()):
        stage = stages.get(name)
        stage.check()
        assert stage.name == name == stage.module.__name__.rsplit(".", 1)[1]  # module, config key, directory
        assert (config.conf_dir() / "stage" / f"{name}.yaml").is_file()
        assert set(stage.parents()) <= set(stages.names()[:i])  # the registry's order is topological
        stage_cfg = config.stage_config(cfg, name)
        for source in stage.reads(stage_cfg):  # every declared source names a data source in the config
            assert isinstance(stages.at(stage_cfg, source.key), dict), (name, source.key)
        # the decontamination settings go exactly to the stages that declare task data
        assert ("decontaminate" in stage_cfg) == stage.reads_task_data(stage_cfg)
    # decontaminate=null: a stage with task data is told it checks nothing, rather than refused its data
    off = config.load(["conf=tiny", "decontaminate=null"])
    assert config.stage_config(off, "cold_sft")["decontaminate"] == {"enabled": False}
    assert "decontaminate" not in config.stage_config(off, "base")
    assert [n for n in stages.names() if stages.get(n).grpo] == ["reasoning_rl", "alignment_rl"]
    assert not stages.get("reward_model").evaluates


def test_a_module_that_breaks_the_protocol_is_refused(monkeypatch):
    bad = types.ModuleType("bad_stage")
    bad.NAME, bad.VERSION, bad.OUTPUTS = "bad", 1, ("model",)
    bad.run = lambda ctx: {}
    with pytest.raises(R1Error, match="declares neither PARENTS nor parents"):
        stages.register(bad)
    bad.PARENTS, bad.SOURCES = ("base",), ("data",)
    with pytest.raises(R1Error, match="SOURCES holds 'data'"):
        stages.register(bad)
    with pytest.raises(R1Error, match="already registered"):
        clash = types.ModuleType("clash")
        clash.NAME, clash.VERSION, clash.OUTPUTS, clash.PARENTS, clash.run = "cold_sft", 1, (), (), bad.run
        stages.register(clash)
    assert "bad" not in stages.names() and stages.module("cold_sft").__name__ == "r1pipe.stages.cold_sft"
    monkeypatch.setattr(stages, "_REGISTRY", {})  # a fresh process: r1pipe's own stages not loaded yet
    with pytest.raises(R1Error, match="already registered"):
        stages.register(clash)  # still refused: it cannot take a built-in's place before they load
    assert stages.module("cold_sft").__name__ == "r1pipe.stages.cold_sft"


def _probe_module(conf_dir: Path) -> types.ModuleType:
    """A stage written the way docs/stages.md says: read task data, write one output, report a metric."""
    mod = types.ModuleType("probe_stage")
    mod.NAME, mod.VERSION, mod.PARENTS, mod.OUTPUTS = "probe", 1, ("base",), ("data",)
    mod.SOURCES = (stages.Source("data", ("prompt", "solution")),)
    mod.PROGRESS = ("partial.json",)
    mod.CONF_DIR = conf_dir

    def run(ctx):
        rows = ctx.load_rows(ctx.config["data"], ("prompt", "solution"), "data")
        out = ctx.output("data", "rows.jsonl")
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"rows": len(rows), "note": ctx.config["note"]}

    mod.run = run
    return mod


@pytest.fixture
def probe(run_copy, tmp_path):
    """The smoke run (built before the probe exists) and the probe registered, with its YAML and its data:
    two held-out questions a training set must not contain, and one fresh."""
    cfg = config.load(overrides_for(run_copy))
    heldout = data.load_rows(config.to_plain(cfg.task.heldout), need=("prompt",))
    rows = [{"prompt": r.get("question", r["prompt"]), "solution": "copied"} for r in heldout[:2]]
    rows.append({"prompt": "How many legs have three spiders and a cat?", "solution": "28"})
    source = tmp_path / "probe.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "conf" / "stage").mkdir(parents=True)
    (tmp_path / "conf" / "stage" / "probe.yaml").write_text(f"data: {{path: {source}}}\nnote: from its own yaml\n")
    mod = _probe_module(tmp_path / "conf")
    stages.register(mod)
    try:
        yield run_copy, mod
    finally:
        stages.unregister("probe")
    assert "probe" not in stages.names()


def test_a_stage_defined_outside_r1pipe_runs_in_the_chain(probe):
    run_dir, mod = probe
    ov = overrides_for(run_dir, "probe.note=overridden")
    cfg = config.load(ov)
    assert graph.chain(cfg)[-1] == "probe" and graph.parents_of(cfg, "probe") == ("base",)
    assert config.stage_config(cfg, "probe")["decontaminate"]["enabled"] is True  # it declares task data

    # --dry-run reads what the stage declares, and plans it alone: the smoke run's stages are unchanged
    steps = state.plan(cfg, graph.chain(cfg))
    assert [(s.stage, s.action) for s in steps if s.action != "skip"] == [("probe", "run")]
    report = preflight.check(cfg, ["probe"])
    assert [(s, key, outcome) for s, key, _, outcome in report.sources if s == "probe"] == [("probe", "data", "ok, 3 rows")]

    runner.run_all(cfg, ov)
    manifest = json.loads((run_dir / "probe" / "manifest.json").read_text())
    assert manifest["metrics"] == {"rows": 1, "note": "overridden"}  # the two held-out questions were removed
    assert manifest["decontamination"]["sources"]["data"]["removed"] == 2
    assert set(manifest["decontamination"]["against"]) == {"heldout"}
    assert (run_dir / "probe" / "rows.jsonl").read_text().count("\n") == 1
    assert state.states(cfg)["probe"].state == "complete"
    assert [s.action for s in runner.run_all(cfg, ov)] == ["skip"] * len(graph.chain(cfg))

    # an interrupted attempt (no manifest yet) resumes when it left what the stage declares as progress
    fingerprint = json.loads((run_dir / "probe" / "manifest.json").read_text())["fingerprint"]
    (run_dir / "probe" / "manifest.json").unlink()
    (run_dir / "probe" / mf.IN_PROGRESS).write_text(json.dumps({"fingerprint": fingerprint}))
    assert state.states(cfg)["probe"].state == "missing"  # nothing to resume: it starts clean
    (run_dir / "probe" / "partial.json").write_text("{}")
    assert state.states(cfg)["probe"].state == "partial"


def test_task_data_a_stage_does_not_declare_is_refused(probe):
    run_dir, mod = probe
    mod.SOURCES = ()  # forgotten: without the refusal it would train on the data unchecked, and say nothing
    ov = overrides_for(run_dir)
    with pytest.raises(R1Error, match=r"probe reads task data \(data\) it does not declare"):
        runner.run_stage(config.load(ov), "probe", ov)
    assert not (run_dir / "probe" / "manifest.json").exists()


def _imports(path: Path, package: str) -> set[str]:
    """The r1pipe modules a module imports, at the top or inside a function alike."""
    tree, out = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        out |= {n for n in names if n.startswith("r1pipe")}
    # a submodule importing its own package is not a cycle: Python has finished the package first
    return out - {package}


def test_r1pipes_modules_import_each_other_without_a_cycle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph_ = {m: _imports(p, m.rsplit(".", 1)[0]) & set(modules) for m, p in modules.items()}
    seen, on_path = set(), []

    def visit(m):
        if m in on_path:
            raise AssertionError("import cycle: " + " -> ".join([*on_path[on_path.index(m):], m]))
        if m in seen:
            return
        on_path.append(m)
        for n in sorted(graph_[m]):
            visit(n)
        on_path.pop()
        seen.add(m)

    for m in sorted(graph_):
        visit(m)
    assert "r1pipe.runner" in graph_ and graph_["r1pipe.launch"]  # the walk saw the modules it guards
