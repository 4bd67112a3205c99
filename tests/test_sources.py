"""One reading of a data source's kind (data.source_kind): loading, --dry-run, model cards and benchmarks agree,
and a source that names two kinds (what `+task.X={path: ...}` merged into a builtin makes) fails before any
stage runs, with the override that really replaces it."""

import json

import pytest

from r1pipe import benchmarks, config, data, graph, modelcard, preflight, runner
from r1pipe.errors import R1Error

BOTH = {"builtin": "arithmetic", "size": 8, "seed": 1, "path": "mine.jsonl"}


def _rows(path, n):
    path.write_text("".join(json.dumps({"prompt": f"{i}+1", "answer": str(i + 1),
                                        "solution": f"<think>{i}+1</think><answer>{i + 1}</answer>"}) + "\n"
                            for i in range(n)))
    return path


def test_a_source_naming_two_kinds_is_one_line_naming_both_keys_and_its_place():
    with pytest.raises(R1Error) as e:
        data.source_kind(BOTH, "cold_sft.data")
    text = str(e.value)
    assert "cold_sft.data names both builtin: and path:" in text and "mine.jsonl" in text and "\n" not in text
    assert "'~cold_sft.data' '+cold_sft.data={path: mine.jsonl}'" in text  # what to write instead
    assert data.source_kind({"builtin": None, "path": "x.jsonl"}) == "path"  # a key set to null names nothing
    assert data.source_kind({"schema": "gsm8k"}, required=False) is None


def test_every_reader_refuses_the_ambiguous_source_instead_of_picking_one(tmp_path):
    src = {**BOTH, "path": str(_rows(tmp_path / "mine.jsonl", 3))}
    with pytest.raises(R1Error, match="names both builtin: and path:"):
        data.load_rows(src, need=("prompt", "answer"), where="cold_sft.data")
    with pytest.raises(R1Error, match="reward_model.data names both builtin: and hub:"):
        data.load_preferences({"builtin": "smalltalk", "size": 4, "seed": 1, "hub": "x/y"}, "reward_model.data")
    with pytest.raises(R1Error, match=r"eval.benchmarks.b names both builtin: and path:"):
        benchmarks.resolve({"schema": "gsm8k", **src}, "eval.benchmarks.b")
    with pytest.raises(R1Error, match="names both builtin: and path:"):
        preflight._describe(src, "cold_sft.data")
    # a card describes recorded configs: it claims no kind for one that names two (and does not fail)
    assert "builtin arithmetic" not in modelcard.describe_source(src) and "file" not in modelcard.describe_source(src)


def test_loading_dry_run_and_card_name_the_same_source(tmp_path):
    path = str(_rows(tmp_path / "mine.jsonl", 3))
    for src, kind in (({"path": path}, "path"), ({"builtin": "arithmetic", "size": 3, "seed": 1}, "builtin"),
                      ({"builtin": None, "size": 3, "path": path}, "path")):
        rows = data.load_rows(src, need=("prompt", "answer"))
        assert (rows[0]["prompt"] == "0+1") == (kind == "path")
        assert preflight._describe(src, "x").startswith(f"{kind}:")
        assert modelcard.describe_source(src).startswith({"path": "file", "builtin": "builtin"}[kind])
    assert benchmarks.resolve({"schema": "gsm8k", "path": path})["path"] == path  # the schema's hub is dropped


def test_a_merging_override_fails_before_any_stage_and_the_hint_really_replaces_it(tmp_path):
    mine = _rows(tmp_path / "mine.jsonl", 80)
    run_dir = tmp_path / "run"
    ov = ["conf=smoke", f"run.dir={run_dir}", f"+task.cold_start={{path: {mine}}}"]
    cfg = config.load(ov)
    assert {"builtin", "path"} <= set(config.stage_config(cfg, "cold_sft")["data"])  # what Hydra composed
    with pytest.raises(R1Error) as e:
        runner.run_all(cfg, ov)
    text = str(e.value)
    assert "(task.cold_start) names both builtin: and path:" in text and "\n" not in text
    assert not (run_dir / "base").exists()  # nothing trained, nothing written for any stage
    with pytest.raises(R1Error, match=r"\(task.cold_start\) names both"):
        preflight.check(cfg, graph.chain(cfg))  # --dry-run says the same
    # the hint's override: the source is the user's file alone, everywhere it is used
    hint = e.value.hint.split("delete it first: ")[1].split(";")[0]
    fixed = [o.strip("'") for o in hint.split("' '")]
    assert fixed == ["~task.cold_start", f"+task.cold_start={{path: {mine}}}"]
    cfg = config.load(ov[:2] + fixed)
    assert config.stage_config(cfg, "cold_sft")["data"] == {"path": str(mine)}
    assert config.stage_config(cfg, "base")["tokenizer"]["corpus"] == {"path": str(mine)}
    report = preflight.check(cfg, graph.chain(cfg))
    assert ("cold_sft", "data", f"path:{mine}", "ok, 80 rows") in report.sources


def test_replacing_a_source_without_plus_says_how_to_replace_it():
    with pytest.raises(R1Error) as e:
        config.load(["conf=smoke", "task.cold_start={path: data.jsonl}"])
    assert "'~task.cold_start' '+task.cold_start={path: data.jsonl}'" in e.value.hint


def test_smoke_preset_over_a_user_task_of_files_reads_a_few_rows_of_them(tmp_path):
    task_dir = tmp_path / "conf" / "task"
    task_dir.mkdir(parents=True)
    files = {name: _rows(tmp_path / f"{name}.jsonl", 100) for name in ("heldout", "cot", "prompts")}
    (task_dir / "mytask.yaml").write_text(
        f"name: mytask\nverifier: integer\nheldout: {{path: {files['heldout']}}}\ncold_start: {{path: {files['cot']}}}\n"
        f"prompts: {{path: {files['prompts']}}}\nrejection_prompts: ${{task.prompts}}\n"
        "non_reasoning: {builtin: smalltalk, size: 100, seed: 4}\ngeneral_prompts: {builtin: smalltalk, size: 100, seed: 5}\n"
        "general_heldout: {builtin: smalltalk, size: 100, seed: 8, heldout: true}\n"
        "preferences: {builtin: smalltalk, size: 100, seed: 6}\n"
        "preferences_heldout: {builtin: smalltalk, size: 100, seed: 9, heldout: true}\n")
    cfg = config.load(["conf=smoke", "task=mytask", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                       f"run.dir={tmp_path / 'run'}"])
    # the preset's sizes merge into the task's files without naming a builtin beside them
    assert config.to_plain(cfg.task.heldout) == {"path": str(files["heldout"]), "size": 16, "limit": 16}
    report = preflight.check(cfg, graph.chain(cfg))
    found = {(stage, key): (src, outcome) for stage, key, src, outcome in report.sources}
    assert found["cold_sft", "data"] == (f"path:{files['cot']}", "ok, 64 rows")
    assert found["rejection_sampling", "data"] == (f"path:{files['prompts']}", "ok, 24 rows")
    assert found["eval", "benchmarks.heldout"] == (f"path:{files['heldout']}", "ok, 16 rows")
