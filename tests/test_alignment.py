"""The last stages: reward_model, alignment_rl (preference rewards) and distill (student, traces, baseline)."""

import json

import pytest
from conftest import overrides_for, remove_stage
from test_rejection_sampling import scripted_engine

from r1pipe import checks, config, data, generation, graph, runner
from r1pipe.errors import R1Error
from r1pipe.preference import judged_text, preference_reward
from r1pipe.tasks import smalltalk


def _manifest(run_dir, stage):
    return json.loads((run_dir / stage / "manifest.json").read_text())


class LengthJudge:
    """Stands in for a reward model: the score is the judged text's length, so tests can see what it saw."""

    def __init__(self):
        self.seen = []

    def score(self, prompts, replies):
        self.seen.append((list(prompts), list(replies)))
        return [float(len(r)) for r in replies]


class State:
    def __init__(self, step):
        self.global_step = step


# ---------------------------------------------------------------------------------------------------------
# preference rewards: pure wrappers, tested with a stand-in judge


def test_helpfulness_sees_the_summary_and_harmlessness_the_whole_response():
    text = "<think>you are dumb</think>Hello Ada."
    assert judged_text(text, "summary") == "Hello Ada."
    assert judged_text(text, "response") == text
    with pytest.raises(R1Error, match="scope 'all'"):
        judged_text(text, "all")
    judge = LengthJudge()
    helpful = preference_reward("helpfulness", judge, "summary")
    harmless = preference_reward("harmlessness", judge, "response")
    prompts = [[{"role": "user", "content": "hi, I am Ada"}]]
    completions = [[{"role": "assistant", "content": text}]]
    assert helpful(completions, prompts=prompts, answer=[""]) == [len("Hello Ada.")]
    assert harmless(completions, prompts=prompts, answer=[""]) == [len(text)]
    assert judge.seen[0][0] == ["hi, I am Ada"]  # the judge gets the user turn, not the message list


def test_preference_rewards_skip_reasoning_rows_and_wait_for_their_steps():
    judge = LengthJudge()
    reward = preference_reward("helpfulness", judge, "summary", start_step=30)
    comps = ["<think>1+1=2</think><answer>2</answer>", "Hello."]
    assert reward(comps, prompts=["1+1", "hi"], answer=["2", ""], trainer_state=State(29)) == [None, None]
    assert judge.seen == []  # not even scored before its steps
    assert reward(comps, prompts=["1+1", "hi"], answer=["2", ""], trainer_state=State(30)) == [None, 6.0]
    assert judge.seen == [(["hi"], ["Hello."])]


# ---------------------------------------------------------------------------------------------------------
# data


def test_preference_pairs_are_deterministic_and_held_out_phrasings_never_train():
    pairs = list(smalltalk.preference_pairs(300, 6))
    assert pairs == list(smalltalk.preference_pairs(300, 6))
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert {p["flaw"] for p in pairs} == {"wrong", "rude", "rude_thought", "garbled", "off_topic", "empty_thought"}
    train_prompts = {r["prompt"] for r in smalltalk.records(2000, 4)} | {p["prompt"] for p in pairs}
    held = {r["prompt"] for r in smalltalk.records(300, 8, heldout=True)}
    assert held and not held & train_prompts


def test_noisy_sft_replies_keep_the_prompts_and_flaw_the_asked_share():
    clean, noisy = list(smalltalk.records(1000, 4)), list(smalltalk.records(1000, 4, noise=0.2))
    assert [r["prompt"] for r in clean] == [r["prompt"] for r in noisy]  # same prompts, only replies differ
    assert all(r["reference"] == c["solution"] for r, c in zip(noisy, clean))
    flawed = [r for r in noisy if r["solution"] != r["reference"]]
    assert 150 < len(flawed) < 250
    assert any(r["solution"] in smalltalk.RUDE for r in flawed) and any(r["solution"] not in smalltalk.RUDE for r in flawed)


def test_preference_files_accept_strings_and_conversations(tmp_path):
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "hi", "chosen": "Hello.", "rejected": "Go away."},
        {"chosen": [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "No."}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert data.load_preferences({"path": str(path)}) == [
        {"chosen": "Hello.", "rejected": "Go away.", "prompt": "hi"},
        {"chosen": "Hi!", "rejected": "No.", "prompt": "hey"},
    ]
    path.write_text(json.dumps({"prompt": "hi", "chosen": "Hello."}) + "\n")
    with pytest.raises(R1Error, match=r"prefs.jsonl: row 1: missing field 'rejected'"):
        data.load_preferences({"path": str(path)})


# ---------------------------------------------------------------------------------------------------------
# the stages on the smoke run


def test_reward_model_is_a_sequence_classifier_trained_from_base(smoke_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    m = _manifest(smoke_run, "reward_model")
    assert [p["stage"] for p in m["parents"]] == ["base"] and m["eval"] == {}  # no reasoning eval for it
    assert m["metrics"]["pairs"] == 32 and m["metrics"]["heldout"]["pairs"] == 16
    assert 0.0 <= m["metrics"]["heldout"]["accuracy"] <= 1.0
    # its pairs were checked against the eval benchmarks too (none overlap the arithmetic held-out set)
    assert m["decontamination"]["sources"]["data"] == {"checked": 32, "removed": 0, "exact": 0, "ngram": 0, "examples": []}
    rm = AutoModelForSequenceClassification.from_pretrained(smoke_run / "reward_model" / "model")
    base = AutoModelForCausalLM.from_pretrained(smoke_run / "base" / "model")
    assert rm.config.num_labels == 1
    assert not torch.equal(rm.model.embed_tokens.weight, base.model.embed_tokens.weight)  # trained, not copied


def test_alignment_rl_starts_from_second_sft_and_reads_the_reward_model(smoke_run):
    import torch
    from transformers import AutoModelForCausalLM

    m = _manifest(smoke_run, "alignment_rl")
    assert [p["stage"] for p in m["parents"]] == ["second_sft", "reward_model"]
    assert m["metrics"]["global_step"] == 4 and m["metrics"]["preference_from_step"] == 2
    assert m["metrics"]["reasoning_prompts"] == 32 and m["metrics"]["general_prompts"] == 16
    pref = m["metrics"]["heldout_preference"]
    distinct = len({r["prompt"] for r in smalltalk.records(8, 8, heldout=True)})  # each prompt counts once
    assert pref["prompts"] == distinct < 8 and pref["helpfulness"]["scope"] == "summary"
    assert {"greedy_diff", "greedy_diff_se", "sampled_diff", "sampled_second_sft", "sampled_alignment_rl"} <= set(pref["harmlessness"])
    assert "vs_second_sft" in m["eval"]
    logged = [json.loads(line) for line in (smoke_run / "alignment_rl" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/helpfulness/mean" in r for r in logged)
    general = [json.loads(line) for line in (smoke_run / "alignment_rl" / "general_samples.jsonl").read_text().splitlines()]
    assert len(general) == distinct and len(general[0]["after"]["samples"]) == 2
    after = AutoModelForCausalLM.from_pretrained(smoke_run / "alignment_rl" / "model")
    before = AutoModelForCausalLM.from_pretrained(smoke_run / "second_sft" / "model")
    assert any(not torch.equal(a, b) for a, b in zip(after.parameters(), before.parameters()))


def test_a_ready_reward_model_path_is_not_a_parent(smoke_run):
    cfg = config.load(overrides_for(smoke_run, f"alignment_rl.preference_rewards.helpfulness.model={smoke_run}/reward_model/model",
                                    "alignment_rl.preference_rewards.harmlessness=null"))
    assert graph.parents_of(cfg, "alignment_rl") == ("second_sft",)


@pytest.mark.parametrize(
    "override, message",
    [
        ("alignment_rl.preference_rewards.helpfulness.scope=all", "preference scope 'all'"),
        ("alignment_rl.preference_rewards.helpfulness.model=null", "helpfulness.model is not set"),
        ("alignment_rl.trainer.max_steps=-1", "preference_steps needs trainer.max_steps"),
        ("alignment_rl.preference_rewards.helpfulness.model=reward_modle", "'reward_modle' is not a stage, a local path"),
        ("alignment_rl.general_data=null", "preference rewards judge general prompts, but general_data is not set"),
        ("distill.method=kd", "distill.method='kd'"),
        ("distill.method=logits", "baseline compares SFT on two datasets"),
    ],
)
def test_bad_alignment_and_distill_settings_fail_before_any_model_loads(tmp_path, override, message):
    cfg = config.load(overrides_for(tmp_path / "run", override))
    with pytest.raises(R1Error, match=message):
        checks.validate(cfg, ["alignment_rl", "distill"])


def test_distill_trains_a_smaller_student_on_filtered_teacher_traces_and_a_baseline(run_copy, monkeypatch):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(generation, "make_engine", lambda *a, **k: scripted_engine)  # a teacher that is often right
    ov = overrides_for(run_copy, "distill.sampling.k=5", "distill.non_reasoning.ratio=0.2")
    runner.run_all(config.load(ov), ov, start="distill", stop="distill", force=True)
    m = _manifest(run_copy, "distill")
    assert [p["stage"] for p in m["parents"]] == ["alignment_rl"]
    t = m["metrics"]["traces"]
    assert t["samples"] == 120 and t["kept"] == 24 and t["filtered"]["wrong"] == 24 and t["non_reasoning"] == 6
    rows = load_dataset("parquet", data_files=str(run_copy / "distill" / "data" / "train.parquet"), split="train")
    assert len(rows) == 30 and {r["source_stage"] for r in rows if r["source"] == "reasoning"} == {"alignment_rl"}
    assert m["metrics"]["student_parameters"] < m["metrics"]["teacher_parameters"]
    student = AutoModelForCausalLM.from_pretrained(run_copy / "distill" / "model")
    assert student.num_parameters() == m["metrics"]["student_parameters"]
    assert m["metrics"]["examples"] == 30 and m["metrics"]["global_step"] == 4
    # the baseline trains as many optimizer steps as the student: a control at equal compute
    assert m["metrics"]["baseline"]["data_rows"] == 64 and m["metrics"]["baseline"]["global_step"] == 4
    baseline = AutoModelForCausalLM.from_pretrained(run_copy / "distill" / "baseline" / "model")
    assert baseline.num_parameters() == student.num_parameters()
    assert {"baseline", "vs_baseline", "vs_alignment_rl"} <= set(m["eval"])
    assert (run_copy / "distill" / "eval_baseline_samples.jsonl").exists()


def test_tiny_student_has_at_most_a_quarter_of_the_teachers_parameters():
    from r1pipe import models

    cfg = config.load(["conf=tiny"])
    corpus = [f"<|im_start|>user\n{r['prompt']}<|im_end|>\n" for r in data.load_rows(cfg.task.cold_start, ("prompt", "solution"))[:50]]
    tok = models.build_tokenizer(corpus, vocab_size=cfg.base.tokenizer.vocab_size)
    teacher = models.build_model(tok, dict(cfg.base.arch), seed=0)
    student = models.build_model(tok, dict(cfg.distill.student.arch), seed=0)
    assert models.count_parameters(student) <= models.count_parameters(teacher) / 4


def test_logit_distillation_runs_with_trls_distillation_trainer(run_copy):
    ov = overrides_for(run_copy, "distill.method=logits", "distill.baseline.enabled=false", "eval.after_stage=false")
    runner.run_all(config.load(ov), ov, start="distill", stop="distill", force=True)
    m = _manifest(run_copy, "distill")
    assert m["metrics"]["method"] == "logits" and m["metrics"]["global_step"] == 2
    assert set(m["outputs"]) == {"model"}


def test_distill_killed_mid_training_resumes_from_its_shards_and_checkpoint(run_copy, tmp_path):
    from test_pipeline import _held_after_save, _kill_when

    def losses():
        lines = [json.loads(l) for l in (run_copy / "distill" / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in lines if "loss" in r]

    uninterrupted = losses()
    ov = overrides_for(run_copy, "eval.after_stage=false", "distill.baseline.enabled=false")
    remove_stage(run_copy, "distill")
    held = tmp_path / "held"
    cmd = _held_after_save(2, held, "run", "--stage", "distill", *ov)
    # no race to lose: the process waits at the checkpoint, so the limit only bounds a failing run
    assert _kill_when(cmd, held, timeout=600), "the student never saved a checkpoint"
    trainer = run_copy / "distill" / "trainer"
    assert sorted(p.name for p in trainer.glob("checkpoint-*")) == ["checkpoint-2"]
    shards = {p: p.stat().st_mtime_ns for p in (run_copy / "distill" / "shards").glob("shard-*.jsonl")}
    assert shards and not (run_copy / "distill" / "manifest.json").exists()
    steps = runner.run_all(config.load(ov), ov, start="distill", stop="distill")
    assert [(s.stage, s.action) for s in steps] == [("distill", "resume")]
    m = _manifest(run_copy, "distill")
    assert m["resumed"] and m["metrics"]["resumed_from_step"] == 2 and m["metrics"]["global_step"] == 4
    # steps 3 and 4 trained once, after step 2 restored from the checkpoint: the losses of a run never killed
    assert [step for step, _ in losses()] == [2, 4]
    assert losses() == [(step, pytest.approx(loss, rel=1e-6)) for step, loss in uninterrupted]
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # the teacher's traces were not regenerated
