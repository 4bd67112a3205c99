"""LoRA as an option of every training stage (the stage's `peft:` block, peft.LoraConfig's own fields): only the
adapter trains, the stage's `model/` is the merged model that plain transformers loads, the adapter is kept
beside it, children read it as any other model, and a killed LoRA run resumes from its adapter checkpoints."""

import json
import shutil
import sys

import pytest
from conftest import overrides_for

from r1pipe import config, preflight, runner, state
from r1pipe.errors import R1Error
from r1pipe.models import SERVING_TEMPLATE

# Rank 2 on the smoke model's seven linear layers: ~5% of its parameters (rank 16 would be as many as it has)
LORA = "{r: 2, lora_alpha: 4, lora_dropout: 0.0, target_modules: all-linear}"
# GRPO on the smoke model needs a reward that differs within a group to move at all (test_pipeline)
VARYING = "+reasoning_rl.rewards.chars={function: 'conftest:char_length_reward', weight: 1.0}"


def _manifest(run_dir, stage):
    return json.loads((run_dir / stage / "manifest.json").read_text())


def _overrides(run_dir, *extra):
    # GRPO's rate: enough for the adapter to move the policy measurably off its reference in 4 steps
    return overrides_for(run_dir, f"cold_sft.peft={LORA}", f"reasoning_rl.peft={LORA}", VARYING,
                         "reasoning_rl.trainer.learning_rate=0.01", "eval.after_stage=false", *extra)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """base, cold_sft with LoRA, reasoning_rl with LoRA from it. GRPO must not build a reference model of its own
    (beta > 0): the loader TRL would build it with raises."""
    import trl.trainer.grpo_trainer as grpo

    def no_second_model(*args, **kwargs):
        raise AssertionError("GRPOTrainer loaded a separate reference model")

    run_dir = tmp_path_factory.mktemp("lora") / "run"
    ov = _overrides(run_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grpo, "create_model_from_path", no_second_model)
        runner.run_all(config.load(ov), ov, stop="reasoning_rl")
    return run_dir


def _weights(run_dir, stage, out="model"):
    from safetensors.torch import load_file

    return load_file(run_dir / stage / out / "model.safetensors")


def test_lora_sft_trains_only_the_adapter_and_saves_a_plain_merged_model(lora_run, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = _manifest(lora_run, "cold_sft")
    assert m["config"]["peft"]["r"] == 2 and set(m["outputs"]) == {"model", "adapter"}
    trainable, total = m["metrics"]["trainable_parameters"], m["metrics"]["total_parameters"]
    assert 0 < trainable < total / 10
    assert total - trainable == _manifest(lora_run, "base")["metrics"]["parameters"]  # the frozen part: the parent

    # merged: the parent's tensors, under the parent's names; the adapted layers changed, nothing else did
    parent, merged = _weights(lora_run, "base"), _weights(lora_run, "cold_sft")
    assert merged.keys() == parent.keys()
    changed = {k for k in parent if not torch.equal(parent[k], merged[k])}
    assert changed and all(k.endswith("_proj.weight") for k in changed)
    assert torch.equal(parent["model.embed_tokens.weight"], merged["model.embed_tokens.weight"])

    model_dir = lora_run / "cold_sft" / "model"
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith("adapter")]
    for name in [n for n in sys.modules if n == "peft" or n.startswith("peft.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import peft` now fails: the model must not need it
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in n or "base_layer" in n for n, _ in model.named_parameters())
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template == SERVING_TEMPLATE
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---") and "LoRA (r=2, lora_alpha=4, lora_dropout=0.0, target_modules=all-linear) merged" in card


def _assert_adapter_on_parent_is_model(run_dir, stage, parent_stage):
    """The stage's adapter/ put on its parent's model with peft, merged, is the stage's model/."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = run_dir / stage / "adapter"
    files = {p.name: p.stat().st_size for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert files["adapter_model.safetensors"] < (run_dir / stage / "model" / "model.safetensors").stat().st_size / 5
    parent = AutoModelForCausalLM.from_pretrained(run_dir / parent_stage / "model")
    rebuilt = PeftModel.from_pretrained(parent, adapter).merge_and_unload().state_dict()
    for k, v in _weights(run_dir, stage).items():
        torch.testing.assert_close(rebuilt[k], v)


def test_the_adapter_output_on_the_parent_model_is_the_merged_model(lora_run):
    _assert_adapter_on_parent_is_model(lora_run, "cold_sft", "base")
    _assert_adapter_on_parent_is_model(lora_run, "reasoning_rl", "cold_sft")


def test_grpo_with_lora_runs_from_a_lora_parent_against_the_adapter_free_model(lora_run):
    """The fixture refused any second model; the KL term against the base with the adapter off starts at 0
    (LoRA's B starts at zero) and grows as the adapter learns: the reference is not the adapted policy."""
    import torch

    m = _manifest(lora_run, "reasoning_rl")
    assert [p["stage"] for p in m["parents"]] == ["cold_sft"] and m["config"]["trainer"]["beta"] > 0
    assert m["metrics"]["global_step"] == 4 and set(m["outputs"]) == {"model", "adapter"}
    assert m["metrics"]["trainable_parameters"] < m["metrics"]["total_parameters"] / 10
    logged = [json.loads(line) for line in (lora_run / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
    kl = [r["kl"] for r in logged if "kl" in r]
    assert len(kl) == 4 and kl[0] == 0.0 and kl[-1] > 0.0
    before, after = _weights(lora_run, "cold_sft"), _weights(lora_run, "reasoning_rl")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_reward_model_trains_a_lora_sequence_classifier_and_saves_it_merged(lora_run, tmp_path):
    """SEQ_CLS: peft trains the new score head whole beside the adapter; the merged classifier loads plainly."""
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path / "run"
    shutil.copytree(lora_run / "base", run_dir / "base")
    ov = overrides_for(run_dir, f"reward_model.peft={LORA}")
    runner.run_stage(config.load(ov), "reward_model", ov)
    m = _manifest(run_dir, "reward_model")
    rm = AutoModelForSequenceClassification.from_pretrained(run_dir / "reward_model" / "model")
    trainable, total = m["metrics"]["trainable_parameters"], m["metrics"]["total_parameters"]
    assert rm.score.weight.numel() < trainable < total / 5  # the adapter and a trained copy of the head
    assert total - trainable == rm.num_parameters()  # frozen: the body and the head as it started
    assert not any("lora" in n or "modules_to_save" in n for n, _ in rm.named_parameters())
    assert 0.0 <= m["metrics"]["heldout"]["accuracy"] <= 1.0  # scored with the merged model from disk


def test_the_peft_block_is_in_the_fingerprint(lora_run):
    cfg = config.load(_overrides(lora_run))
    assert state.states(cfg)["cold_sft"].state == "complete"
    plain = config.load(_overrides(lora_run, "cold_sft.peft=null"))
    assert state.states(plain)["cold_sft"].state == "stale"
    other_rank = config.load(_overrides(lora_run, "cold_sft.peft.r=4"))
    assert state.states(other_rank)["cold_sft"].state == "stale"


@pytest.mark.parametrize(
    "override, message",
    [
        ("cold_sft.peft={r: 8, lora_alpa: 16}", r"cold_sft.peft.lora_alpa is not a field of peft.LoraConfig \(did you mean lora_alpha\?\)"),
        ("reasoning_rl.peft={r: eight}", r"reasoning_rl.peft.r='eight' has the wrong type \(peft.LoraConfig.r takes int\)"),
        ("second_sft.peft={bias: some}", r"second_sft.peft.bias='some' has the wrong type \(.*one of 'none', 'all', 'lora_only'\)"),
        ("alignment_rl.peft=16", r"alignment_rl.peft=16 is not a mapping of peft.LoraConfig fields"),
        ("reward_model.peft={inference_mode: true}", r"reward_model.peft.inference_mode is set by r1pipe"),
        ("distill.peft={r: 8}", r"distill.peft trains a LoRA adapter on a frozen student, but student.model is not set"),
    ],
)
def test_a_bad_peft_block_is_one_line_before_any_model_loads(tmp_path, override, message):
    ov = overrides_for(tmp_path / "run", override)
    with pytest.raises(R1Error, match=message) as e:
        runner.run_all(config.load(ov), ov)
    assert "\n" not in str(e.value)
    assert not [p for p in (tmp_path / "run").glob("*") if p.name != ".lock"]  # no stage directory was made
    with pytest.raises(R1Error, match=message):  # --dry-run checks it too
        preflight.check(config.load(ov), [override.split(".")[0]])


def test_lora_under_a_weight_sharding_launcher_is_refused_and_zero2_is_not(tmp_path):
    for launcher, ok in (("deepspeed_zero3", False), ("fsdp", False), ("deepspeed_zero2", True)):
        cfg = config.load(overrides_for(tmp_path, f"launcher={launcher}", f"cold_sft.peft={LORA}"))
        if ok:
            preflight.check(cfg, ["cold_sft"])  # what only the GPU machine has is noted, not raised
            continue
        with pytest.raises(R1Error, match="cold_sft.peft: a LoRA stage saves its adapter merged into whole weights"):
            preflight.check(cfg, ["cold_sft"])


def test_killed_lora_sft_resumes_from_its_adapter_checkpoint(lora_run, tmp_path):
    """Checkpoints of a LoRA run hold the adapter (not the model); the resumed run logs the same losses and ends
    with the same weights as one that was never interrupted."""
    import torch
    from test_pipeline import _kill_when

    # checkpoints on logging steps: a resume between two logged steps logs the first one's mean over fewer steps
    extra = ("cold_sft.trainer.max_steps=20", "cold_sft.trainer.save_steps=4")
    run_dir = tmp_path / "run"
    shutil.copytree(lora_run / "base", run_dir / "base")
    ov = _overrides(run_dir, *extra)
    cmd = [sys.executable, "-m", "r1pipe.cli", "run", "--stage", "cold_sft", *ov]
    ckpt = run_dir / "cold_sft" / "trainer" / "checkpoint-4"
    assert _kill_when(cmd, ckpt / "trainer_state.json"), "training never reached a checkpoint"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()
    assert state.states(config.load(ov))["cold_sft"].state == "partial"

    steps = runner.run_all(config.load(ov), ov, stop="cold_sft")
    assert [(s.stage, s.action) for s in steps] == [("base", "skip"), ("cold_sft", "resume")]
    m = _manifest(run_dir, "cold_sft")
    assert m["resumed"] and m["metrics"]["resumed_from_step"] >= 4 and m["metrics"]["global_step"] == 20

    ref = tmp_path / "ref"
    shutil.copytree(lora_run / "base", ref / "base")
    runner.run_all(config.load(_overrides(ref, *extra)), _overrides(ref, *extra), stop="cold_sft")

    def losses(d):
        return {r["step"]: r["loss"] for r in map(json.loads, (d / "cold_sft" / "metrics.jsonl").read_text().splitlines())
                if "loss" in r}

    assert sorted(losses(run_dir)) == list(range(2, 21, 2))
    assert losses(run_dir) == pytest.approx(losses(ref), rel=1e-4)
    resumed, straight = _weights(run_dir, "cold_sft"), _weights(ref, "cold_sft")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-4, atol=1e-6)


def test_every_later_training_stage_trains_with_lora(run_copy):
    """second_sft, alignment_rl and distill (its student and the baseline) with a peft: block each: merged model
    plus adapter, adapter-sized training. alignment_rl answers its held-out prompts 'after' with the merged model."""
    stages = ("second_sft", "alignment_rl", "distill")
    student = run_copy / "base" / "model"  # LoRA needs a pretrained student; the smoke one is built from scratch
    ov = overrides_for(run_copy, *(f"{s}.peft={LORA}" for s in stages), f"distill.student.model={student}",
                       "eval.after_stage=false")
    steps = runner.run_all(config.load(ov), ov, start="second_sft")
    assert [s.action for s in steps] == ["run", "skip", "run", "run"]
    for stage in stages:
        m = _manifest(run_copy, stage)
        assert {"model", "adapter"} <= set(m["outputs"]), stage
        assert m["metrics"]["trainable_parameters"] < m["metrics"]["total_parameters"] / 10, stage
        assert not (run_copy / stage / "model" / "adapter_config.json").exists()
    assert "heldout_preference" in _manifest(run_copy, "alignment_rl")["metrics"]
    baseline = _manifest(run_copy, "distill")["metrics"]["baseline"]
    assert baseline["trainable_parameters"] < baseline["total_parameters"] / 10
    assert (run_copy / "distill" / "baseline" / "adapter" / "adapter_config.json").exists()
    assert not (run_copy / "distill" / "baseline" / "model" / "adapter_config.json").exists()


def test_lora_under_torchrun_merges_on_every_rank_and_rank_0_saves(lora_run, tmp_path):
    """Two processes (DDP, gloo): each merges its whole copy, rank 0 writes model/ and adapter/ once."""
    run_dir = tmp_path / "run"
    shutil.copytree(lora_run / "base", run_dir / "base")
    ov = _overrides(run_dir, "launcher=torchrun", "launcher.nproc=2")
    runner.run_stage(config.load(ov), "cold_sft", ov)
    m = _manifest(run_dir, "cold_sft")
    assert m["launch"]["world_size"] == 2 and set(m["outputs"]) == {"model", "adapter"}
    assert m["metrics"]["trainable_parameters"] == _manifest(lora_run, "cold_sft")["metrics"]["trainable_parameters"]
    assert not (run_dir / "cold_sft" / "model" / "adapter_config.json").exists()
    _assert_adapter_on_parent_is_model(run_dir, "cold_sft", "base")
