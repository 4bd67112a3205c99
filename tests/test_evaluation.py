"""Evaluation: cached by (model hash, benchmark, settings), resumable, public benchmarks, budget forcing; and
decontamination of training data against the benchmarks."""

import json
import shutil

import pytest

from conftest import FIXTURES, overrides_for
from test_cli import _cli


def _eval(run, *extra):
    r = _cli("eval", "--stage", "cold_sft", *overrides_for(run, *extra))
    assert r.returncode == 0, r.stderr
    return json.loads((run / "cold_sft" / "eval.json").read_text()), r.stderr


def test_evaluating_an_unchanged_model_again_is_a_cache_hit(run_copy):
    first = json.loads((run_copy / "cold_sft" / "eval.json").read_text())
    assert first["cache"]["hit"] is False and first["benchmark"] == "heldout"
    again, log = _eval(run_copy)
    assert again["cache"] == {"key": first["cache"]["key"], "hit": True} and "cache hit" in log
    strip = lambda m: {k: v for k, v in m.items() if k != "cache"}  # noqa: E731
    assert strip(again) == strip(first)
    # a setting that changes what is generated is a different entry
    other, _ = _eval(run_copy, "eval.temperature=0.9")
    assert other["cache"]["hit"] is False and other["cache"]["key"] != first["cache"]["key"]
    # a paired Δ only between the same protocols: cold_sft was last evaluated at T=0.9, top-p 0.95
    _cli("eval", "--stage", "reasoning_rl", *overrides_for(run_copy, "eval.temperature=0.9", "eval.top_p=0.8"))
    assert "vs_cold_sft" not in json.loads((run_copy / "reasoning_rl" / "eval.json").read_text())
    _cli("eval", "--stage", "reasoning_rl", *overrides_for(run_copy, "eval.temperature=0.9"))
    assert "vs_cold_sft" in json.loads((run_copy / "reasoning_rl" / "eval.json").read_text())
    # and so is a different model: the same settings on second_sft's weights have another key
    other_model = json.loads((run_copy / "second_sft" / "eval.json").read_text())
    assert other_model["cache"]["key"] != first["cache"]["key"]


def test_an_interrupted_evaluation_resumes_from_its_shards(smoke_run, tmp_path, monkeypatch):
    from r1pipe import evaluation, generation
    from r1pipe.data import load_rows

    rows = load_rows({"builtin": "arithmetic", "size": 16, "seed": 7}, need=("prompt", "answer"))
    settings = dict(backend="transformers", dtype="float32", greedy=True, k=2, temperature=0.6, top_p=0.95,
                    max_new_tokens=16, batch_size=64, seed=0, shard_size=4, cache=True, budget={})
    model = smoke_run / "cold_sft" / "model"
    clean, clean_samples, _ = evaluation.evaluate_model(model, rows, settings, "integer", tmp_path / "clean")

    real = generation.make_engine
    calls = {"n": 0}

    def flaky(*a, **k):
        engine = real(*a, **k)

        def run(turns, sampling):
            calls["n"] += 1
            if calls["n"] == 6:  # greedy's 4 shards done, sampling's first done: then the "crash"
                raise KeyboardInterrupt
            return engine(turns, sampling)
        return run

    monkeypatch.setattr(generation, "make_engine", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate_model(model, rows, settings, "integer", tmp_path / "resumed")
    assert len(list((tmp_path / "resumed" / "sampled").glob("shard-*.jsonl"))) == 1
    calls["n"] = 100  # no more crashes; count what is generated now
    m, samples, hit = evaluation.evaluate_model(model, rows, settings, "integer", tmp_path / "resumed")
    assert not hit and calls["n"] == 103  # only sampling's 3 missing shards
    assert samples == clean_samples
    assert {k: v for k, v in m.items() if k != "seconds"} == {k: v for k, v in clean.items() if k != "seconds"}


def test_public_benchmark_in_its_own_schema_is_evaluated_beside_the_headline(run_copy):
    spec = f"+eval.benchmarks.gsm8k={{schema: gsm8k, path: '{FIXTURES / 'gsm8k_sample.jsonl'}'}}"
    saved, _ = _eval(run_copy, spec)
    assert saved["benchmark"] == "heldout" and saved["n_problems"] == 16  # the headline is unchanged
    gsm = saved["benchmarks"]["gsm8k"]
    assert gsm["n_problems"] == 3 and gsm["settings"]["verifier"] == "math"
    # the training data was checked against the held-out set, but never against this file
    assert saved["decontaminated"] is True
    assert gsm["decontaminated"] is False and gsm["not_decontaminated_in"] == ["cold_sft"]
    lines = (run_copy / "cold_sft" / "eval_samples.gsm8k.jsonl").read_text().splitlines()
    assert [json.loads(l)["answer"] for l in lines] == ["72", "10", "5"]


def test_a_missing_benchmark_file_is_a_one_line_error(run_copy):
    r = _cli("eval", "--stage", "cold_sft",
             *overrides_for(run_copy, "+eval.benchmarks.math={schema: math500, path: nowhere.jsonl}"))
    assert r.returncode == 1 and "nowhere.jsonl does not exist" in r.stderr and "Traceback" not in r.stderr


def test_training_rows_that_appear_in_an_eval_set_are_removed_and_counted(run_copy, tmp_path):
    from r1pipe import config, runner
    from r1pipe.data import load_rows
    from r1pipe.tasks import arithmetic

    heldout = arithmetic.problems(16, 7)  # the smoke preset's held-out set
    clean = arithmetic.problems(40, 1, exclude=heldout)
    leaked = list(arithmetic.records(clean + heldout[:5], with_solution=True))
    path = tmp_path / "cold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in leaked))
    ov = overrides_for(run_copy, f"cold_sft.data={{path: '{path}'}}", "eval.after_stage=false")
    runner.run_stage(config.load(ov), "cold_sft", ov)
    m = json.loads((run_copy / "cold_sft" / "manifest.json").read_text())
    report = m["decontamination"]["sources"]["data"]
    assert list(m["decontamination"]["against"]) == ["heldout"]
    assert report["checked"] == 45 and report["removed"] == 5 and report["exact"] == 5
    assert m["metrics"]["examples"] == 40
    assert len(load_rows({"path": str(path)}, need=("prompt",))) == 45  # the user's file is untouched
    # switched off, that is a different config (the stage reruns) ...
    ov_off = [*ov, "decontaminate.enabled=false"]
    assert runner.states(config.load(ov_off))["cold_sft"].state == "stale"
    # ... but a new eval benchmark is not: evaluation says instead that no stage checked against it
    spec = f"+eval.benchmarks.gsm8k={{schema: gsm8k, path: '{FIXTURES / 'gsm8k_sample.jsonl'}'}}"
    assert runner.states(config.load([*ov, spec]))["cold_sft"].state == "complete"


def test_decontamination_compares_questions_not_the_prompt_template():
    from r1pipe.runner import contamination_index
    from r1pipe.tasks import arithmetic

    a, b = arithmetic.problems(1, 7)[0]
    spec = {"builtin": "arithmetic", "size": 16, "seed": 7, "prompt_template": "{prompt} Put the answer in tags."}
    index, shas = contamination_index({"heldout": spec}, 8)
    assert index.hit(f"{a}+{b}") == "exact"  # the bare question is still caught
    assert index.hit("999+111 Put the answer in tags.") is None  # sharing the instruction is not a copy
    plain, plain_shas = contamination_index({"heldout": {k: v for k, v in spec.items() if k != "prompt_template"}}, 8)
    assert shas == plain_shas  # the template does not change what was checked


@pytest.mark.parametrize("override, message", [
    ("+eval.benchmarks.x={path: a.jsonl, prompt_template: 5}", "eval.benchmarks.x.prompt_template must be a str"),
    ("+eval.benchmarks.x={schema: gsm9k}", "unknown benchmark schema 'gsm9k'"),
    ("+eval.benchmarks.x={path: a.jsonl, verifier: exact}", "verifier must be integer or math"),
    ("eval.budget=16", "eval.budget must be a mapping"),
    ("eval.budget.max_waits=-1", "eval.budget.max_waits must be a whole number"),
])
def test_bad_eval_settings_fail_before_anything_runs(tmp_path, override, message):
    r = _cli("run-all", "--dry-run", *overrides_for(tmp_path / "run", override))
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_budget_step_caps_thinking_and_replaces_an_early_end_with_wait():
    from r1pipe.generation import Sampling, budget_step

    cap = Sampling(max_new_tokens=40, max_think_tokens=5)
    # at the cap with no end of thinking: closed, and the answer phase follows
    assert budget_step("<think> a b c d", 5, False, 0, 0, cap) == ("<think> a b c d</think>", 6, 0, "answer")
    # an end of thinking in time: kept
    assert budget_step("<think> a </think>", 3, False, 0, 0, cap) == ("<think> a </think>", 3, 0, "answer")
    floor = Sampling(max_new_tokens=40, min_think_tokens=10, max_waits=2)
    # too early: the end is replaced by Wait, twice at most
    assert budget_step("<think> a </think>", 3, False, 0, 0, floor) == ("<think> a Wait", 3, 1, "think")
    assert budget_step(" b </think>", 2, False, 3, 1, floor) == (" b Wait", 5, 2, "think")
    assert budget_step(" c </think>", 2, False, 5, 2, floor) == (" c </think>", 7, 2, "answer")
    # a reply with no think block that ends its turn is done, and so is one out of tokens
    assert budget_step("hello", 1, True, 0, 0, floor) == ("hello", 1, 0, "done")
    assert budget_step("x" * 40, 40, False, 0, 0, floor)[3] == "done"
    assert not Sampling().budget_forced and cap.budget_forced and floor.budget_forced


def test_budget_forcing_with_a_real_model_cuts_thinking_at_the_cap(smoke_run):
    from r1pipe.generation import Sampling, make_engine

    engine = make_engine(smoke_run / "cold_sft" / "model")
    prompts = ["12+34", "567+89", "5+5"]
    free = engine(prompts, Sampling(n=1, max_new_tokens=24))
    capped = engine(prompts, Sampling(n=1, max_new_tokens=24, max_think_tokens=3))
    for [f], [c] in zip(free, capped):
        assert "</think>" in c
        head = c.split("</think>", 1)[0]
        free_head = f.split("</think>", 1)[0]
        # greedy: the capped thinking is the start of the free one, cut at or before the cap
        assert free_head.startswith(head) and len(head) <= len(free_head)
        if "</think>" not in f[: len(head) + 8]:
            assert len(head) < len(free_head)
