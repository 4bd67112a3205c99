"""Evaluation: cached by (model hash, benchmark, settings), resumable, public benchmarks, budget forcing; and
decontamination of training data against the benchmarks."""

import json
import shutil

import pytest
from conftest import FIXTURES, overrides_for
from test_cli import _cli


def skilled_engine(skill: dict[str, int]):
    """A stand-in for generation.make_engine whose models have known skills: the model in a directory named in
    `skill` (its stage, or `baseline` for distill's second student) answers its j-th reply to a+b right when
    right(skill[name], a, b, j). A wrong reply says a+b+1, strict on the first sample and without its think
    block after, so accuracy and strict format differ."""
    from pathlib import Path

    from r1pipe.tasks.arithmetic import parse_prompt

    def make(model_dir, **_):
        level = skill[Path(model_dir).parent.name]

        def engine(turns, sampling):
            out = []
            for t in turns:
                a, b = parse_prompt(t[-1]["content"])
                out.append([f"<think>{a}+{b}</think><answer>{a + b}</answer>" if right(level, a, b, j) else
                            f"<think>{a}+{b}</think><answer>{a + b + 1}</answer>" if j == 0 else
                            f"<answer>{a + b + 1}</answer>" for j in range(sampling.n)])
            return out
        return engine
    return make


def right(level: int, a: int, b: int, j: int) -> bool:
    """Whether a skilled_engine model at `level` (0 to 4) answers a+b right in its j-th reply."""
    return (a + b + j) % 4 < level


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
    from r1pipe import config, runner, state
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
    assert state.states(config.load(ov_off))["cold_sft"].state == "stale"
    # ... but a new eval benchmark is not: evaluation says instead that no stage checked against it
    spec = f"+eval.benchmarks.gsm8k={{schema: gsm8k, path: '{FIXTURES / 'gsm8k_sample.jsonl'}'}}"
    assert state.states(config.load([*ov, spec]))["cold_sft"].state == "complete"


def test_decontamination_compares_questions_not_the_prompt_template():
    from r1pipe.context import contamination_index
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
    ("+eval.benchmarks.x={path: a.jsonl, verifier: exact}", "eval.benchmarks.x.verifier: unknown verifier 'exact'"),
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


# ---------------------------------------------------------------------------------------------------------
# The numbers themselves, on hand-made samples whose every metric is worked out by hand below. Each value lies
# strictly between 0 and 1 and differs from the others, so a metric averaged over the wrong axis, a sign
# flipped or two metrics swapped gives a number these tests do not expect.


def _t(x):  # strict format: a think block, then the answer
    return f"<think>r</think><answer>{x}</answer>"


def _l(x):  # lenient: the right tags for the answer, but no think block
    return f"<answer>{x}</answer>"


NO_ANSWER = "<think>r</think>no answer"

# 4 problems, k=3. Correct samples by column: [1,1,0,1], [1,0,0,0], [0,0,1,0], so the per-problem means
# (the right axis) and the per-column means (the wrong one) have different spreads.
BEFORE = [
    {"prompt": "p1", "answer": "5", "greedy": _t(5), "samples": [_t(5), _t(5), _t(7)]},  # 2/3; votes 5:2
    {"prompt": "p2", "answer": "8", "greedy": _l(3), "samples": [_l(8), _t(2), _t(2)]},  # 1/3; votes 2:2 beat 8:1
    {"prompt": "p3", "answer": "4", "greedy": _l(4), "samples": [NO_ANSWER, NO_ANSWER, _l(4)]},  # 1/3; no answer no vote
    {"prompt": "p4", "answer": "6", "greedy": NO_ANSWER, "samples": [_t(6), _t(7), NO_ANSWER]},  # 1/3; tie 6:1, 7:1
]


def test_summarize_computes_each_metric_per_problem_then_over_problems():
    from r1pipe.evaluation import summarize

    m = summarize(BEFORE, "integer")
    assert m["n_problems"] == 4 and m["k"] == 3
    # greedy correct [1, 0, 1, 0]: sample variance 1/3, SE sqrt(1/3 / 4)
    assert m["greedy_accuracy"] == 0.5 and m["greedy_accuracy_se"] == pytest.approx((1 / 12) ** 0.5)
    assert m["greedy_strict_format"] == 0.25  # only p1's greedy reply is strict; p3's is right but not strict
    # pass@1 per problem [2/3, 1/3, 1/3, 1/3]: mean 5/12, squared deviations sum to 1/12, SE sqrt(1/36 / 4) =
    # 1/12. Over the 3 columns instead the SE would be 1/6; over all 12 samples flat, 0.149.
    assert m["pass@1"] == pytest.approx(5 / 12) and m["pass@1_se"] == pytest.approx(1 / 12)
    # majority [5, 2, 4, 6] against gold [5, 8, 4, 6]: replies with no answer do not vote (p3's one answer
    # wins), and a tie goes to the answer given first (p4: 6 before 7), as scripts/recompute_eval.py counts
    assert m["cons@3"] == 0.75 and m["cons@3_se"] == pytest.approx(0.25)
    assert m["strict_format"] == pytest.approx((1 + 2 / 3 + 0 + 2 / 3) / 4)  # 7/12, per problem then over them
    # lengths are per sample: a think block is "r", and the lenient replies have none
    replies = [c for s in BEFORE for c in s["samples"]]
    assert m["mean_think_chars"] == pytest.approx(sum(1 for c in replies if "</think>" in c) / 12)
    answers = [c.split("</think>")[-1] for c in replies]
    assert m["mean_answer_chars"] == pytest.approx(sum(map(len, answers)) / 12)


def test_majority_vote_counts_equal_answers_as_one():
    """cons@k votes on what an answer means, as accuracy judges it, not on how it is written."""
    from r1pipe.evaluation import summarize
    from r1pipe.rewards import majority_answer

    assert majority_answer(["7", "05", "5"]) == "05"  # 05 and 5 are one answer with two votes
    assert majority_answer(["1,000", "7", "1000"]) == "1,000"
    assert majority_answer(["3", "4"]) == "3" and majority_answer(["x", "4", "x"]) == "4"  # "x" is no integer: no vote
    assert majority_answer([None, None]) is None and majority_answer([None, "4"]) == "4"
    assert majority_answer(["\\frac{1}{2}", "3", "0.5"], "math") == "\\frac{1}{2}"
    # the same vote in summarize: gold 5, samples 7, 05, 5
    m = summarize([{"prompt": "p", "answer": "5", "greedy": None, "samples": [_t(7), _t("05"), _t(5)]}], "integer")
    assert m["cons@3"] == 1.0 and m["pass@1"] == pytest.approx(2 / 3)


def test_mean_se_is_the_sample_standard_deviation_over_root_n():
    import math

    from r1pipe.evaluation import mean_se

    mean, se = mean_se([0.2, 0.4, 0.9])
    # mean 0.5; squared deviations 0.09 + 0.01 + 0.16 = 0.26 over n-1 = 2, then over n = 3
    assert mean == pytest.approx(0.5) and se == pytest.approx(math.sqrt(0.13 / 3))
    assert mean_se([0.3]) == (0.3, 0.0)
    assert all(math.isnan(v) for v in mean_se([]))


def test_paired_difference_is_after_minus_before_problem_by_problem():
    from r1pipe.evaluation import paired_difference

    after = [
        {**BEFORE[0], "greedy": _t(9), "samples": [_t(5)] * 3},  # greedy 1 -> 0; pass@1 2/3 -> 3/3
        {**BEFORE[1], "greedy": _t(8), "samples": [_t(8), _t(8), _t(1)]},  # 0 -> 1; 1/3 -> 2/3
        {**BEFORE[2], "greedy": _t(4)},  # 1 -> 1; 1/3 -> 1/3
        {**BEFORE[3], "greedy": _t(6)},  # 0 -> 1; 1/3 -> 1/3
    ]
    d = paired_difference(BEFORE, after, "integer")
    # greedy differences [-1, 1, 0, 1]: mean 1/4, squared deviations sum to 2.75, SE sqrt(2.75/3 / 4)
    assert d["greedy_accuracy_diff"] == 0.25 and d["greedy_accuracy_diff_se"] == pytest.approx((2.75 / 12) ** 0.5)
    # pass@1 differences [1/3, 1/3, 0, 0]: mean 1/6, SE sqrt((4/36)/3 / 4)
    assert d["pass@1_diff"] == pytest.approx(1 / 6) and d["pass@1_diff_se"] == pytest.approx((1 / 108) ** 0.5)
    back = paired_difference(after, BEFORE, "integer")
    assert back["greedy_accuracy_diff"] == -0.25 and back["pass@1_diff"] == pytest.approx(-1 / 6)
    assert back["greedy_accuracy_diff_se"] == pytest.approx(d["greedy_accuracy_diff_se"])
    # pairs are taken by position, so problems in another order, or asked another way, give no difference
    # at all rather than one between unrelated problems
    assert paired_difference(BEFORE, after[::-1], "integer") == {}
    assert paired_difference(BEFORE, [{**after[0], "system": "Be brief."}, *after[1:]], "integer") == {}


def test_math_answers_count_from_a_final_boxed_when_there_is_no_answer_block():
    from r1pipe.evaluation import summarize
    from r1pipe.rewards import is_correct, predicted_answer

    boxed = "<think>half of one</think>So it is \\boxed{\\frac{1}{2}}."
    assert predicted_answer(boxed, "math") == "\\frac{1}{2}" and is_correct(boxed, "0.5", "math")
    assert predicted_answer("<think>x</think>\\boxed{\\sqrt{\\frac{1}{4}}}", "math") == "\\sqrt{\\frac{1}{4}}"
    assert predicted_answer(boxed, "integer") is None  # the fallback is for math benchmarks only
    assert predicted_answer("<think>x</think>\\boxed{3} and \\boxed{4}", "math") == "4"  # the last one
    # an <answer> block wins over a box, and a box inside the reasoning is not the answer
    assert predicted_answer("<think>x</think>\\boxed{7} <answer>3</answer>", "math") == "3"
    assert predicted_answer("<think>maybe \\boxed{7}</think>I am not sure", "math") is None
    assert predicted_answer("<think>x</think>\\boxed{\\frac{1}{2}", "math") is None  # cut off by the token limit
    # and it is what evaluation counts and votes with
    rows = [{"prompt": "q", "answer": "0.5", "greedy": boxed,
             "samples": [boxed, "<think>x</think>\\boxed{\\frac{1}{3}}", "<think>x</think>\\boxed{\\frac{1}{2}}"]}]
    m = summarize(rows, "math")
    assert m["greedy_accuracy"] == 1.0 and m["pass@1"] == pytest.approx(2 / 3) and m["cons@3"] == 1.0
    assert summarize(rows, "integer")["pass@1"] == 0.0


def test_cache_false_generates_again_instead_of_reading_the_cache(tmp_path, monkeypatch):
    from r1pipe import evaluation, generation
    from r1pipe.data import load_rows

    rows = load_rows({"builtin": "arithmetic", "size": 8, "seed": 7}, need=("prompt", "answer"))
    settings = dict(backend="transformers", dtype="float32", greedy=True, k=2, temperature=0.6, top_p=0.95,
                    max_new_tokens=16, batch_size=64, seed=0, shard_size=4, cache=True, budget={})
    skill = {"a": 1}
    loads = []
    make = skilled_engine(skill)
    monkeypatch.setattr(generation, "make_engine", lambda *a, **k: (loads.append(a), make(*a, **k))[1])
    model, entry = tmp_path / "a" / "model", tmp_path / "entry"
    first, _, hit = evaluation.evaluate_model(model, rows, settings, "integer", entry)
    assert not hit and len(loads) == 1
    skill["a"] = 4  # the same model answering differently now shows which result is read
    again, _, hit = evaluation.evaluate_model(model, rows, settings, "integer", entry)
    assert hit and len(loads) == 1 and again["greedy_accuracy"] == first["greedy_accuracy"] < 1
    fresh, samples, hit = evaluation.evaluate_model(model, rows, {**settings, "cache": False}, "integer", entry)
    assert not hit and len(loads) == 2 and fresh["greedy_accuracy"] == fresh["pass@1"] == 1.0
    assert all(s["greedy"].endswith(f"<answer>{s['answer']}</answer>") for s in samples)
    # and what it computed is the entry now
    assert evaluation.evaluate_model(model, rows, settings, "integer", entry)[0]["greedy_accuracy"] == 1.0


def test_a_null_benchmark_is_dropped_and_none_left_is_a_one_line_error():
    from r1pipe.errors import R1Error
    from r1pipe.evaluation import benchmark_specs

    held = {"source": {"builtin": "arithmetic", "size": 4, "seed": 7}, "verifier": "integer"}
    assert list(benchmark_specs({"benchmarks": {"heldout": held, "three_digit": None}})) == ["heldout"]
    with pytest.raises(R1Error, match="names no benchmark: every entry is null"):
        benchmark_specs({"benchmarks": {"three_digit": None}})
