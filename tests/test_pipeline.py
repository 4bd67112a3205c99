"""The spine end to end on the smoke preset: manifests, skip, rerun on change, resume after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import overrides_for, remove_stage

from r1pipe import config, execute, graph, runner, state
from r1pipe.errors import R1Error
from r1pipe.models import SERVING_TEMPLATE

ALL = ("base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl", "distill")


def _run_all(run_dir, *extra, **kw):
    ov = overrides_for(run_dir, *extra)
    return runner.run_all(config.load(ov), ov, **kw)


def _kill_when(cmd, path, timeout=600):
    """Start `cmd`, SIGKILL its process group as soon as `path` exists (a .json file: exists whole, since a kill
    while it is half-written rightly leaves that checkpoint unusable); returns whether it appeared. The deadline
    is only a backstop: a 2-core machine busy with other work took over 2 minutes to a first checkpoint."""
    from r1pipe.manifest import read_json_dict

    def there():
        return read_json_dict(path) is not None if path.suffix == ".json" else path.exists()

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while not there() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return there()


_HOLD = """
import runpy, sys, time
from pathlib import Path

from transformers.trainer_callback import CallbackHandler

step, flag = int(sys.argv.pop(1)), Path(sys.argv.pop(1))
saved = CallbackHandler.on_save


def on_save(self, args, state, control):
    control = saved(self, args, state, control)
    if state.global_step == step:
        flag.touch()
        time.sleep(600)
    return control


CallbackHandler.on_save = on_save
runpy.run_module("r1pipe.cli", run_name="__main__")
"""


def _held_after_save(step, flag, *args):
    """`r1pipe *args` that, once training has saved its step-`step` checkpoint (and every callback has seen it),
    touches `flag` and sleeps: killed when `flag` appears, it dies after that checkpoint and before the next
    step however slow the machine, where polling for the checkpoint alone races the rest of the stage."""
    return [sys.executable, "-c", _HOLD, str(step), str(flag), *args]


def _manifest(run_dir, stage):
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_run_all_writes_complete_manifests(smoke_run):
    for stage in ("base", "cold_sft"):
        m = _manifest(smoke_run, stage)
        assert m["status"] == "complete" and m["stage"] == stage
        for key in ("fingerprint", "parents", "config", "outputs", "hashes", "metrics", "env", "seed",
                    "started_at", "finished_at", "duration_s"):
            assert key in m, key
        assert (smoke_run / stage / "config.yaml").exists()
        assert not (smoke_run / stage / ".staging").exists() and not (smoke_run / stage / ".in_progress.json").exists()
    cold = _manifest(smoke_run, "cold_sft")
    assert cold["parents"][0]["stage"] == "base"
    assert cold["parents"][0]["fingerprint"] == _manifest(smoke_run, "base")["fingerprint"]
    assert cold["metrics"]["global_step"] == 6
    assert cold["metrics"]["trainable_parameters"] == cold["metrics"]["total_parameters"] > 0  # full fine-tuning
    assert {"greedy_accuracy", "pass@1", "cons@2", "strict_format"} <= set(cold["eval"])
    lines = (smoke_run / "cold_sft" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines if "loss" in json.loads(l)] == [2, 4, 6]


def test_cold_sft_changed_the_weights_and_loads_with_plain_transformers(smoke_run):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = load_file(smoke_run / "base" / "model" / "model.safetensors")
    after = load_file(smoke_run / "cold_sft" / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before if "norm" not in k)

    path = smoke_run / "cold_sft" / "model"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == eot
    assert tok.chat_template == SERVING_TEMPLATE  # plain Jinja2: serving stacks render it as saved
    ids = tok.encode("<think>1+2=3</think><answer>3</answer>")
    assert tok.decode(ids, skip_special_tokens=True) == "<think>1+2=3</think><answer>3</answer>"  # tags survive
    prompt = tok.apply_chat_template([{"role": "user", "content": "347+285"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    assert (path / "README.md").read_text().startswith("---")


def test_same_command_again_trains_nothing(run_copy):
    before = {s: (run_copy / s / "manifest.json").stat().st_mtime_ns for s in ALL}
    steps = _run_all(run_copy)
    assert [(s.stage, s.action) for s in steps] == [(s, "skip") for s in ALL]
    assert {s: (run_copy / s / "manifest.json").stat().st_mtime_ns for s in before} == before


def test_changing_learning_rate_reruns_cold_sft_and_downstream_only(run_copy):
    base_before = _manifest(run_copy, "base")
    cold_before = _manifest(run_copy, "cold_sft")
    steps = _run_all(run_copy, "cold_sft.trainer.learning_rate=5e-4")
    # reward_model reads only base: it is skipped too
    assert [(s.stage, s.action) for s in steps] == [(s, "skip" if s in ("base", "reward_model") else "run") for s in ALL]
    assert _manifest(run_copy, "base") == base_before
    cold_after = _manifest(run_copy, "cold_sft")
    assert cold_after["fingerprint"] != cold_before["fingerprint"]
    assert cold_after["config"]["trainer"]["learning_rate"] == 5e-4
    assert cold_after["hashes"]["model"]["sha256"] != cold_before["hashes"]["model"]["sha256"]


def test_run_with_missing_parent_names_the_command(tmp_path):
    ov = overrides_for(tmp_path / "empty")
    with pytest.raises(R1Error) as e:
        runner.run_stage(config.load(ov), "cold_sft", ov)
    assert "needs base" in str(e.value) and "r1pipe run --stage base conf=smoke" in str(e.value)
    assert not (tmp_path / "empty" / "cold_sft").exists()


def test_changed_base_makes_cold_sft_stale(run_copy):
    ov = overrides_for(run_copy, "base.arch.hidden_size=48")
    st = state.states(config.load(ov))
    assert st["base"].state == "stale" and st["cold_sft"].state == "stale"
    plan = state.plan(config.load(ov), ["base", "cold_sft"])
    assert [(s.action, s.reason) for s in plan][1] == ("run", "parent base will run")


def test_kill_during_training_then_rerun_resumes(run_copy):
    """SIGKILL cold_sft once a checkpoint exists; the rerun resumes from it and logs the same losses as an
    uninterrupted run."""
    extra = ("cold_sft.trainer.max_steps=40", "cold_sft.trainer.save_steps=10", "eval.after_stage=false")
    ov = overrides_for(run_copy, *extra)
    cmd = [sys.executable, "-m", "r1pipe.cli", "run", "--stage", "cold_sft", "--force", *ov]
    remove_stage(run_copy, "cold_sft")
    ckpt = run_copy / "cold_sft" / "trainer" / "checkpoint-10" / "trainer_state.json"
    assert _kill_when(cmd, ckpt), "training never reached a checkpoint"
    assert not (run_copy / "cold_sft" / "manifest.json").exists()
    st = state.states(config.load(ov))
    assert st["cold_sft"].state == "partial"

    steps = runner.run_all(config.load(ov), ov, stop="cold_sft")
    assert [(s.stage, s.action) for s in steps] == [("base", "skip"), ("cold_sft", "resume")]
    m = _manifest(run_copy, "cold_sft")
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 10 and m["metrics"]["global_step"] == 40
    resumed = [json.loads(l) for l in (run_copy / "cold_sft" / "metrics.jsonl").read_text().splitlines()]
    resumed_losses = {r["step"]: r["loss"] for r in resumed if "loss" in r}
    assert sorted(resumed_losses) == list(range(2, 41, 2))  # every step logged once, none repeated
    # the compute record counts the steps before the kill too: the token count lives in the Trainer's state
    seen = {r["step"]: r["num_input_tokens_seen"] for r in resumed if "num_input_tokens_seen" in r}
    assert m["metrics"]["compute"]["tokens"] == seen[40] > 3.5 * seen[10]

    # The same 40 steps without the kill, in a sibling run directory.
    ref = run_copy.parent / "ref"
    shutil.copytree(run_copy / "base", ref / "base")
    runner.run_all(config.load(overrides_for(ref, *extra)), overrides_for(ref, *extra), stop="cold_sft")
    straight = [json.loads(l) for l in (ref / "cold_sft" / "metrics.jsonl").read_text().splitlines()]
    straight_losses = {r["step"]: r["loss"] for r in straight if "loss" in r}
    assert resumed_losses == pytest.approx(straight_losses, rel=1e-4)


def test_reasoning_rl_logs_rewards_kl_length_and_samples(smoke_run):
    import torch
    from safetensors.torch import load_file

    m = _manifest(smoke_run, "reasoning_rl")
    assert [p["stage"] for p in m["parents"]] == ["cold_sft"] and m["metrics"]["global_step"] == 4
    logged = [json.loads(l) for l in (smoke_run / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for key in ("rewards/accuracy/mean", "rewards/format/mean", "rewards/language_consistency/mean", "kl",
                "completions/mean_length", "clip_ratio/region_mean"):
        assert all(key in r for r in steps), key
    samples = [json.loads(l) for l in (smoke_run / "reasoning_rl" / "samples.jsonl").read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "rewards"} <= set(samples[0])
    assert set(samples[0]["rewards"]) == {"accuracy", "format", "language_consistency"}
    # The smoke model writes random text: every group's rule rewards are equal, GRPO's advantages are zero,
    # and the weights must not move (beta's KL term is zero while policy == reference).
    assert m["metrics"]["final_reward"] == pytest.approx(1.0)  # language consistency only
    before = load_file(smoke_run / "cold_sft" / "model" / "model.safetensors")
    after = load_file(smoke_run / "reasoning_rl" / "model" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reasoning_rl_follows_a_reward_that_varies(run_copy):
    import torch
    from safetensors.torch import load_file

    extra = ("+reasoning_rl.rewards.chars={function: 'conftest:char_length_reward', weight: 1.0}", "eval.after_stage=false")
    _run_all(run_copy, *extra)
    m = _manifest(run_copy, "reasoning_rl")
    assert m["config"]["rewards"]["chars"]["function"] == "conftest:char_length_reward"
    before = load_file(run_copy / "cold_sft" / "model" / "model.safetensors")
    after = load_file(run_copy / "reasoning_rl" / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    logged = (run_copy / "reasoning_rl" / "metrics.jsonl").read_text()
    assert "rewards/chars/mean" in logged


def test_r1_zero_variant_runs_from_base_without_cold_sft(tmp_path):
    extra = ("run.stages=[base,reasoning_rl]", "reasoning_rl.init=base", "reasoning_rl.rewards.language_consistency=null",
             "eval.after_stage=false")
    steps = _run_all(tmp_path / "zero", *extra)
    assert [(s.stage, s.action) for s in steps] == [("base", "run"), ("reasoning_rl", "run")]
    m = _manifest(tmp_path / "zero", "reasoning_rl")
    assert [p["stage"] for p in m["parents"]] == ["base"]
    assert not (tmp_path / "zero" / "cold_sft").exists()
    logged = (tmp_path / "zero" / "reasoning_rl" / "metrics.jsonl").read_text()
    assert "rewards/format/mean" in logged and "language_consistency" not in logged


def test_tiny_zero_preset_composes():
    cfg = config.load(["conf=tiny_zero"])
    assert graph.chain(cfg) == ["base", "reasoning_rl"]
    assert graph.parents_of(cfg, "reasoning_rl") == ("base",)
    assert [k for k, v in cfg.reasoning_rl.rewards.items() if v is not None] == ["accuracy", "format"]


def test_grpo_batch_arithmetic_fails_before_any_model_loads(tmp_path):
    ov = overrides_for(tmp_path / "r", "reasoning_rl.trainer.num_generations=3")
    with pytest.raises(R1Error, match="reasoning_rl: 1 process x per_device_train_batch_size 4 x 1 steps per generation = 4 completions, not a multiple of num_generations 3"):
        runner.run_all(config.load(ov), ov)
    assert not [p for p in (tmp_path / "r").glob("*") if p.name != ".lock"]  # no stage directory was made


def test_kill_during_grpo_then_rerun_resumes(run_copy):
    extra = ("reasoning_rl.trainer.max_steps=12", "reasoning_rl.trainer.save_steps=3", "eval.after_stage=false")
    ov = overrides_for(run_copy, *extra)
    remove_stage(run_copy, "reasoning_rl")
    cmd = [sys.executable, "-m", "r1pipe.cli", "run", "--stage", "reasoning_rl", *ov]
    ckpt = run_copy / "reasoning_rl" / "trainer" / "checkpoint-3" / "trainer_state.json"
    assert _kill_when(cmd, ckpt), "GRPO never reached a checkpoint"
    assert state.states(config.load(ov))["reasoning_rl"].state == "partial"
    steps = runner.run_all(config.load(ov), ov, stop="reasoning_rl")
    assert [(s.stage, s.action) for s in steps][-1] == ("reasoning_rl", "resume")
    m = _manifest(run_copy, "reasoning_rl")
    assert m["resumed"] and m["metrics"]["resumed_from_step"] >= 3 and m["metrics"]["global_step"] == 12
    logged = [json.loads(l)["step"] for l in (run_copy / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()
              if "reward" in json.loads(l)]
    assert logged == list(range(1, 13))


def test_eval_numbers_recompute_exactly_from_saved_samples(run_copy, monkeypatch):
    """README's promise: scripts/recompute_eval.py, which shares no code with r1pipe, gets every number in
    eval.json back from eval_samples.jsonl and says so when one differs. The smoke models answer nothing right,
    so cold_sft and reasoning_rl are evaluated again by stand-ins that answer some problems right."""
    from statistics import mean

    from test_evaluation import right, skilled_engine

    from r1pipe import generation
    from r1pipe.evaluation import paired_difference, read_samples, summarize
    from r1pipe.tasks.arithmetic import parse_prompt

    monkeypatch.setattr(generation, "make_engine", skilled_engine({"cold_sft": 2, "reasoning_rl": 3}))
    # not from the cache: the smoke reasoning_rl has cold_sft's very weights (no reward, no gradient), so both
    # share one entry
    cfg = config.load(overrides_for(run_copy, "eval.cache=false"))
    for stage in ("cold_sft", "reasoning_rl"):  # the parent first: the child's paired Δ reads its samples
        execute.evaluate_after(cfg, stage, _manifest(run_copy, stage))

    stage = run_copy / "cold_sft"
    saved = json.loads((stage / "eval.json").read_text())
    samples = read_samples(stage)
    assert len(samples) == 16 and all(len(s["samples"]) == 2 for s in samples)
    assert 0 < saved["greedy_accuracy"] < 1 and 0 < saved["pass@1"] < 1 and saved["pass@1"] != saved["greedy_accuracy"]
    run_facts = ("seconds", "settings", "generation", "benchmark", "cache", "decontaminated")
    assert summarize(samples, "integer") == {k: v for k, v in saved.items() if k not in run_facts and not k.startswith("vs_")}
    assert _manifest(run_copy, "cold_sft")["eval"] == saved

    script = Path(__file__).parents[1] / "scripts" / "recompute_eval.py"

    def recompute():
        return subprocess.run([sys.executable, str(script), str(run_copy)], capture_output=True, text=True)

    r = recompute()
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {l.split()[0]: l for l in r.stdout.splitlines()}
    assert lines["cold_sft"].endswith("match") and lines["reasoning_rl"].endswith("match")
    assert f"greedy {saved['greedy_accuracy']:.4f}" in lines["cold_sft"]
    # one sample's worth off, in one number of one stage: found and named
    (stage / "eval.json").write_text(json.dumps({**saved, "pass@1": saved["pass@1"] + 1 / 32}))
    r = recompute()
    lines = {l.split()[0]: l for l in r.stdout.splitlines()}
    assert r.returncode == 1 and lines["cold_sft"].endswith("MISMATCH: pass@1") and lines["reasoning_rl"].endswith("match")

    # the paired comparison: reasoning_rl's gain over cold_sft, problem by problem, from how the stand-ins answer
    problems = [parse_prompt(s["prompt"]) for s in samples]
    gain = [right(3, a, b, 0) - right(2, a, b, 0) for a, b in problems]
    rl = json.loads((run_copy / "reasoning_rl" / "eval.json").read_text())
    assert rl["vs_cold_sft"]["greedy_accuracy_diff"] == pytest.approx(mean(gain)) and mean(gain) > 0
    assert rl["vs_cold_sft"] == paired_difference(samples, read_samples(run_copy / "reasoning_rl"), "integer")


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(run_copy):
    """A live holder (another process with the flock) is named and refused; once it dies, its lock is free."""
    lock = run_copy / ".lock"
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(R1Error, match=f"in use by process {holder.pid}"):
            _run_all(run_copy)
        with pytest.raises(R1Error, match=f"in use by process {holder.pid}"):
            runner.run_stage(config.load(overrides_for(run_copy)), "cold_sft", [])
    finally:
        holder.kill()
        holder.wait()
    assert lock.read_text() == str(holder.pid)  # refused runs left the holder's lock alone
    steps = _run_all(run_copy)  # killed: the kernel released its flock, the next run takes it
    assert [s.action for s in steps] == ["skip"] * len(ALL)


def test_a_rerun_waits_for_the_dying_children_of_a_killed_writer(tmp_path):
    """Killed, an r1pipe leaves its launcher and ranks holding the lock (inherited) for the moment they take
    to die with it: a rerun then waits for them instead of refusing (the flaky kill-and-resume test's cause).
    A live holder is still refused at once."""
    import time

    from r1pipe.lock import RunLock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, sys.argv[2].encode()); print('held', flush=True); "
            "time.sleep(float(sys.argv[3]))")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".lock"), dead.stdout.strip(), "2"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"  # held for 2 s in the name of a PID that no longer exists
    t0 = time.monotonic()
    with RunLock(tmp_path):
        waited = time.monotonic() - t0
    child.wait()
    assert waited > 0.5, "took a lock that was still held"


def test_a_hub_style_base_model_is_prepared_for_the_recipe(smoke_run, tmp_path):
    """A model dir like a hub base model (no generation markers, pad == eos, no R1 tags) goes through base
    and cold_sft: r1pipe fixes the tokenizer, grows the embeddings, and records what it changed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "hub_model"
    tok = AutoTokenizer.from_pretrained(smoke_run / "base" / "model")
    model = AutoModelForCausalLM.from_pretrained(smoke_run / "base" / "model")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.pad_token = tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(src)
    model.save_pretrained(src)

    steps = _run_all(tmp_path / "run", f"base.model={src}", "eval.after_stage=false", stop="cold_sft")
    assert [s.action for s in steps] == ["run", "run"]
    m = _manifest(tmp_path / "run", "base")
    assert m["metrics"]["source"] == str(src) and not m["metrics"]["built_from_scratch"]
    assert any("chat template" in c for c in m["metrics"]["tokenizer_changes"])
    out = tmp_path / "run" / "base" / "model"
    tok2, model2 = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    assert tok2.chat_template == SERVING_TEMPLATE and tok2.eos_token == "<|im_end|>"
    assert tok2.pad_token_id != tok2.eos_token_id
    assert model2.get_input_embeddings().weight.shape[0] >= len(tok2)
    assert _manifest(tmp_path / "run", "cold_sft")["status"] == "complete"
