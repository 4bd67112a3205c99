"""rejection_sampling and second_sft: the filters applied to real generations, the dataset TRL reads, and
generation that resumes by shard."""

import json
import sys

import pytest
from conftest import overrides_for, remove_stage

from r1pipe import checks, config, generation, runner, state

OK = "<think>{w}</think><answer>{s}</answer>"


def scripted_engine(turns, sampling):
    """Stands in for the model: per prompt a correct answer (twice), a wrong one, one in two languages and
    one without tags, so every filter has something to do."""
    from r1pipe.tasks.arithmetic import parse_prompt, working

    out = []
    for t in turns:  # a chat: the user's turn holds the problem
        a, b = parse_prompt(t[-1]["content"] if isinstance(t, list) else t)
        good = OK.format(w=working(a, b), s=a + b)
        out.append([good, good, OK.format(w=working(a, b), s=a + b + 1),
                    OK.format(w="加 " + working(a, b), s=a + b), f"{a + b}"][: sampling.n])
    return out


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(generation, "make_engine", lambda *a, **k: scripted_engine)


def test_filters_provenance_and_a_dataset_trl_trains_on(run_copy, scripted):
    ov = overrides_for(run_copy, "rejection_sampling.sampling.k=5", "rejection_sampling.non_reasoning.ratio=0.2")
    runner.run_all(config.load(ov), ov, start="rejection_sampling", stop="rejection_sampling", force=True)
    m = json.loads((run_copy / "rejection_sampling" / "manifest.json").read_text())["metrics"]
    assert m["prompts"] == 24 and m["samples"] == 120 and m["kept"] == 24
    assert m["filtered"] == {"no_answer": 24, "wrong": 24, "format": 0, "mixed_language": 24, "long_paragraph": 0,
                             "code_block": 0, "duplicate": 24, "over_cap": 0}
    assert m["acceptance_rate"] == pytest.approx(0.2) and m["non_reasoning"] == 6 and m["rows"] == 30

    from datasets import load_dataset

    ds = load_dataset(str(run_copy / "rejection_sampling" / "data"), split="train")  # as-is, no conversion
    assert len(ds) == 30 and set(ds["source"]) == {"reasoning", "non_reasoning"}
    row = next(r for r in ds if r["source"] == "reasoning")
    assert row["messages"][1]["role"] == "assistant" and row["filter_reason"] == "kept"
    assert row["reward_accuracy"] == 1.0 and row["source_stage"] == "reasoning_rl" and len(row["source_fingerprint"]) == 64
    rejected = load_dataset("parquet", data_files=str(run_copy / "rejection_sampling" / "rejected.parquet"), split="train")
    assert sorted(set(rejected["filter_reason"])) == ["duplicate", "mixed_language", "no_answer", "wrong"]

    # TRL's own SFTTrainer trains on the dataset unchanged. Models ship the plain serving template (as Qwen and
    # SmolLM do); assistant-only loss needs the training one with {% generation %} markers, r1pipe's CHAT_TEMPLATE.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from r1pipe.models import CHAT_TEMPLATE

    base = run_copy / "base" / "model"
    args = SFTConfig(output_dir=str(run_copy / "trl"), max_steps=2, per_device_train_batch_size=4, use_cpu=True,
                     bf16=False, report_to="none", assistant_only_loss=True, save_strategy="no")
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHAT_TEMPLATE
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=ds,
                         processing_class=tok)
    assert trainer.train().global_step == 2


def test_second_sft_retrains_the_base_on_that_data(run_copy, scripted):
    ov = overrides_for(run_copy)
    runner.run_all(config.load(ov), ov, start="rejection_sampling", force=True)
    m = json.loads((run_copy / "second_sft" / "manifest.json").read_text())
    assert [p["stage"] for p in m["parents"]] == ["base", "rejection_sampling"]
    assert m["metrics"]["examples"] == 32 and m["metrics"]["global_step"] == 4  # 24 kept + 8 non-reasoning


def test_min_kept_guards_an_empty_dataset(run_copy):
    from r1pipe.errors import R1Error

    ov = overrides_for(run_copy, "rejection_sampling.min_kept=1")
    with pytest.raises(R1Error, match=r"0 of 48 samples passed the filters, min_kept is 1"):
        runner.run_all(config.load(ov), ov, start="rejection_sampling", force=True)
    st = state.states(config.load(ov))["rejection_sampling"]  # its entry (this config's) holds no result
    assert not st.complete and not (st.dir / "manifest.json").exists()


def test_vllm_backend_without_vllm_is_a_clear_error(tmp_path):
    from r1pipe.errors import R1Error

    pytest.importorskip("torch")
    if "vllm" in sys.modules or __import__("importlib").util.find_spec("vllm"):
        pytest.skip("vLLM is installed here")
    with pytest.raises(R1Error, match="vLLM is not installed"):
        generation.make_engine(tmp_path, backend="vllm")


def test_sharded_generation_keeps_finished_shards_and_matches_a_straight_run(smoke_run, tmp_path):
    from r1pipe.generation import Sampling, generate_sharded, make_engine

    engine = make_engine(smoke_run / "cold_sft" / "model")
    turns = [f"{a}+{a + 7}" for a in range(10, 30)]
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, batch_size=16, seed=3)
    straight, _ = generate_sharded(engine, turns, sampling, tmp_path / "a", shard_size=6)

    calls = []

    def dying(chunk, s):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the third shard
        calls.append(chunk)
        return engine(chunk, s)

    with pytest.raises(KeyboardInterrupt):
        generate_sharded(dying, turns, sampling, tmp_path / "b", shard_size=6)
    done = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert done == ["shard-00000.jsonl", "shard-00001.jsonl"]
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "b").iterdir()}

    seen = []
    resumed, _ = generate_sharded(lambda c, s: seen.append(c) or engine(c, s), turns, sampling, tmp_path / "b", 6)
    assert seen == [turns[12:18], turns[18:]]  # only the missing shards were generated
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert resumed == straight


def test_kill_mid_generation_then_rerun_keeps_finished_shards(run_copy):
    import subprocess

    from test_pipeline import _kill_when

    extra = ("rejection_sampling.sampling.shard_size=2", "rejection_sampling.sampling.max_new_tokens=24")
    ov = overrides_for(run_copy, *extra)
    remove_stage(run_copy, "rejection_sampling")
    first = run_copy / "rejection_sampling" / "shards" / "shard-00000.jsonl"
    cmd = [sys.executable, "-m", "r1pipe.cli", "run", "--stage", "rejection_sampling", *ov]
    assert _kill_when(cmd, first), "generation never finished a shard"
    shards = sorted((run_copy / "rejection_sampling" / "shards").glob("shard-*.jsonl"))
    assert 1 <= len(shards) < 12 and not (run_copy / "rejection_sampling" / "manifest.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in shards}
    assert state.states(config.load(ov))["rejection_sampling"].state == "partial"

    steps = runner.run_all(config.load(ov), ov, start="rejection_sampling", stop="rejection_sampling")
    assert [(s.stage, s.action) for s in steps] == [("rejection_sampling", "resume")]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards were not regenerated
    assert len(list((run_copy / "rejection_sampling" / "shards").glob("shard-*.jsonl"))) == 12
    m = json.loads((run_copy / "rejection_sampling" / "manifest.json").read_text())
    assert m["resumed"] and m["metrics"]["samples"] == 48


@pytest.mark.parametrize(
    "override,message",
    [
        ("rejection_sampling.sampling.k=0", "sampling.k=0 must be a positive integer"),
        ("rejection_sampling.sampling.backend=sglang", "backend='sglang'"),
        ("rejection_sampling.filters.language=xx", "no script check for language 'xx'"),
    ],
)
def test_bad_sampling_settings_fail_before_generation(tmp_path, override, message):
    from r1pipe.errors import R1Error

    ov = overrides_for(tmp_path / "r", override)
    with pytest.raises(R1Error, match=message):
        checks.validate(config.load(ov), ["rejection_sampling"])
