"""Real-model presets: each passes --dry-run here (no GPU, no network), its field mappings checked against
fixture files in the public datasets' layouts (tests/fixtures/hub, read through R1PIPE_DATA_MIRROR)."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

from r1pipe import config, data, graph, preflight, runner
from r1pipe.errors import R1Error

PRESETS = ("qwen2.5-0.5b", "qwen2.5-1.5b", "r1_distill_1.5b")
MIRROR = FIXTURES / "hub"


def _check(preset, tmp_path, *extra):
    cfg = config.load([f"conf={preset}", f"run.dir={tmp_path}", *extra])
    return preflight.check(cfg, graph.chain(cfg))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_real_preset_passes_its_dry_run(preset, tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    report = _check(preset, tmp_path, "launcher=deepspeed_zero2")
    assert report.sources and all(outcome.startswith("ok, ") for *_, outcome in report.sources), report.sources
    assert {stage for stage, *_ in report.sources} >= {"cold_sft", "eval"}
    assert "a GPU" in report.needs  # bf16: checked as for the GPU machine, listed as its need
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_from_the_command_line(tmp_path):
    env = {"R1PIPE_DATA_MIRROR": str(MIRROR), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run-all", "conf=qwen2.5-1.5b", "--dry-run",
                        f"run.dir={tmp_path}/run", "launcher=torchrun", "launcher.nproc=8"],
                       capture_output=True, text=True, env=env)
    # offline, the hub models and the GPU cannot be checked here: said, counted, and a non-zero exit
    assert r.returncode == 1, r.stderr
    err = " ".join(r.stderr.split())
    assert "4 could not be checked from here: 2 models, 2 needs of the machine that runs it" in err, err
    assert "--allow-unchecked" in err and "Traceback" not in err
    out = " ".join(r.stdout.split())
    assert "launcher: torchrun, 8 process(es) per training stage" in out
    assert "config checked against TRL (field names, types, batch arithmetic): ok" in out
    assert "hub:open-r1/OpenR1-Math-220k [train]" in out and "data sources" in out
    assert "Qwen/Qwen2.5-1.5B │ not checked: HF_HUB_OFFLINE is set" in out
    assert "warning:" not in out  # 8 processes, as the preset's batch sizes assume

    r = subprocess.run([*r.args, "--allow-unchecked"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "not checked here: 2 models, 2 needs" in " ".join(r.stdout.split()), r.stderr


def test_a_preset_sized_for_more_processes_than_launched_is_warned(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    report = _check("qwen2.5-1.5b", tmp_path)  # no launcher: one process, for a preset set for 8
    assert len(report.warnings) == 1 and "set for 8 training processes" in report.warnings[0]
    assert "launcher local starts 1, so each optimizer step sees 1/8 of the batch" in report.warnings[0]
    assert not _check("qwen2.5-1.5b", tmp_path, "launcher=torchrun", "launcher.nproc=8").warnings
    assert not _check("qwen2.5-1.5b", tmp_path, "run.world_size=1").warnings  # said to be meant


def test_a_wrong_field_mapping_fails_the_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    with pytest.raises(R1Error, match=r"reasoning_rl\.data: hub:openai/gsm8k: row 1: missing field 'query'"):
        _check("qwen2.5-0.5b", tmp_path, "task.prompts.fields.prompt=query")


def test_per_device_batch_is_checked_at_the_launched_world_size(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    # 16 generations; 1 completion per device is whole groups on 16 processes, and not on 8
    _check("qwen2.5-1.5b", tmp_path, "launcher=torchrun", "launcher.nproc=16",
           "reasoning_rl.trainer.per_device_train_batch_size=1", "reasoning_rl.trainer.gradient_accumulation_steps=1")
    with pytest.raises(R1Error, match="8 processes x per_device_train_batch_size 1 x 1 steps per generation = 8"):
        _check("qwen2.5-1.5b", tmp_path, "launcher=torchrun", "launcher.nproc=8",
               "reasoning_rl.trainer.per_device_train_batch_size=1", "reasoning_rl.trainer.gradient_accumulation_steps=1")


def test_without_a_local_copy_hub_data_is_reported_unchecked(tmp_path, monkeypatch):
    monkeypatch.delenv("R1PIPE_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to read offline
    report = _check("r1_distill_1.5b", tmp_path / "run")
    assert all(outcome.startswith("not checked: cannot load hub dataset") for *_, outcome in report.sources)


def test_mirror_without_the_dataset_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(tmp_path))
    with pytest.raises(R1Error, match=f"has no copy of hub:openai/gsm8k split train.*{tmp_path}/openai/gsm8k/train.jsonl"):
        data.load_rows({"hub": "openai/gsm8k", "name": "main", "split": "train"}, need=("prompt",))


def test_solution_template_builds_r1_traces_from_columns(monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    cfg = config.to_plain(config.load(["conf=qwen2.5-0.5b"]).task.cold_start)
    rows = data.load_rows(cfg, need=("prompt", "solution"))
    assert rows[0]["prompt"].startswith("What is the sum of the first six positive odd numbers")
    assert rows[0]["solution"].startswith("<think>\nThe first six odd numbers are 1, 3, 5")
    assert rows[0]["solution"].endswith("$36+15-30=\\boxed{21}$.</answer>")
    distill = config.to_plain(config.load(["conf=r1_distill_1.5b"]).task.cold_start)
    rows = data.load_rows(distill, need=("prompt", "solution", "answer"))
    assert rows[1]["solution"].startswith("<think>\n12 = 2^2 * 3") and rows[1]["answer"] == "6"


def test_solution_template_names_the_missing_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1+1", "trace": "two"}\n{"q": "2+2"}\n')
    src = {"path": str(path), "fields": {"prompt": "q"}, "solution_template": "<think>{trace}</think>"}
    with pytest.raises(R1Error, match=r"row 2: missing field 'trace' \(named in solution_template\)"):
        data.load_rows(src, need=("prompt", "solution"))
    src["solution_template"] = "{trace[5]}"
    path.write_text('{"q": "1+1", "trace": ["a"]}\n')
    with pytest.raises(R1Error, match="row 1: solution_template cannot be filled"):
        data.load_rows(src, need=("prompt", "solution"))


def test_use_vllm_without_vllm_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    ov = ["conf=smoke", f"run.dir={tmp_path}", "+reasoning_rl.trainer.use_vllm=true"]
    with pytest.raises(R1Error, match=r"reasoning_rl.trainer.use_vllm is true, but vLLM is not installed"):
        runner.run_all(config.load(ov), ov)
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize("bad", ["run.world_size='8'", "run.world_size=-2", "run.world_size=2.5",
                                 "run.world_size=true"])
def test_run_world_size_must_be_a_whole_number(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))
    with pytest.raises(R1Error, match="must be a whole number >= 1, or null"):
        _check("qwen2.5-1.5b", tmp_path, bad)
