"""Code tasks: MBPP and HumanEval in their public layouts, the code verifier (a reply's final code block run with
the row's tests in the sandbox), the verifier registry, an open data schema whose extra columns reach rewards,
and the sandbox settings checked with the config."""

import json
import shutil
import sys

import pytest
from conftest import FIXTURES

from r1pipe import benchmarks, config, data, evaluation, filters, sandbox, verifiers
from r1pipe.errors import R1Error

MIRROR = FIXTURES / "hub"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def reply(code: str, think: str = "Work out the function.") -> str:
    return f"<think>\n{think}\n</think>\n<answer>\n```python\n{code}\n```\n</answer>"


def raw(path):
    return [json.loads(line) for line in open(MIRROR / path)]


@pytest.fixture
def mirror(monkeypatch):
    monkeypatch.setenv("R1PIPE_DATA_MIRROR", str(MIRROR))


# -- final_code: which program a reply gives -------------------------------------------------------------


def test_final_code_is_the_last_block_of_the_answer():
    assert verifiers.final_code(reply("x = 1")) == "x = 1\n"
    two = "<think>try ```python\ny = 0\n```</think>\n```py\na = 1\n```\nthen\n```\nb = 2\n```"
    assert verifiers.final_code(two) == "b = 2\n"  # after </think>; the one in the reasoning is a draft
    assert verifiers.final_code("<answer>def f():\n    return 1</answer>") == "def f():\n    return 1"  # no fence


@pytest.mark.parametrize("text, code", [
    ("<answer>\r\n```python\r\nx = 1\r\n```\r\n</answer>", "x = 1\n"),  # CRLF
    ("<think>a</think>\n```bash\npip install x\n```\n```python\ny = 2\n```", "y = 2\n"),  # not paired with bash's
    ("<think>a</think>\n```Python title=sol.py\nz = 3\n```", "z = 3\n"),
    ("<think>a</think>\n```python\ns = '```'\nw = 4\n```", "s = '```'\nw = 4\n"),  # a fence in a string
    ("<think>a</think>\n- step\n  ```python\n  def f():\n      return 1\n  ```", "def f():\n    return 1\n"),
    ("<think>a</think><answer>```python\nq = 5\n```</answer>", "q = 5\n"),
    ("<think>a</think>\n```bash\nls\n```", None),
    ("<think>a</think>\n```python\nx = 1\n", None),  # never closed
])
def test_the_code_of_replies_as_models_write_them(text, code):
    assert verifiers.final_code(text) == code


def test_no_code_when_the_reasoning_never_ends_or_no_answer_is_given():
    assert verifiers.final_code("<think>\n```python\nx = 1\n```\n<answer>```python\nx = 1\n```</answer>") is None
    assert verifiers.final_code("<think>plan</think>\nI cannot do this.") is None
    assert verifiers.final_code("<think>plan</think><answer>  </answer>") is None


# -- the public layouts ----------------------------------------------------------------------------------


def test_mbpp_rows_ask_with_the_tests_shown_and_check_against_them(mirror):
    rows = benchmarks.load("mbpp", {"schema": "mbpp"})
    first = raw("google-research-datasets/mbpp/test.jsonl")[0]
    assert len(rows) == 4 and rows[0]["id"] == str(first["task_id"])
    assert rows[0]["prompt"].startswith(first["text"]) and first["test_list"][1] in rows[0]["prompt"]
    assert rows[0]["answer"] == "\n".join(first["test_list"])  # the asserts, one per line
    assert benchmarks.verifier({"schema": "mbpp"}) == "code"


@needs_bwrap
def test_canonical_solutions_pass_and_wrong_ones_fail(mirror):
    mbpp = benchmarks.load("mbpp", {"schema": "mbpp"})
    humaneval = benchmarks.load("humaneval", {"schema": "humaneval"})
    rows = mbpp + humaneval
    canonical = [r["code"] for r in raw("google-research-datasets/mbpp/test.jsonl")]
    canonical += [r["prompt"] + r["canonical_solution"] for r in raw("openai/openai_humaneval/test.jsonl")]
    golds = [r["answer"] for r in rows]
    assert verifiers.verify_many([reply(c) for c in canonical], golds, "code") == [True] * len(rows)
    # wrong: the right function name returning nothing; the right code with an off-by-one; no code at all
    names = [c.split("def ", 1)[1].split("(", 1)[0] for c in canonical]
    wrong = [reply(f"def {n}(*args):\n    return None") for n in names]
    assert verifiers.verify_many(wrong, golds, "code") == [False] * len(rows)
    off = canonical[-1].replace("k * k <= n", "k * k < n")  # is_prime(49) slips through
    assert verifiers.verify_many([reply(off), "<think>x</think>no code"], [golds[-1]] * 2, "code") == [False, False]


@needs_bwrap
def test_a_code_benchmark_is_summarized_like_any_other(mirror):
    rows = benchmarks.load("humaneval", {"schema": "humaneval"})[:2]
    good = [r["prompt"] + r["canonical_solution"] for r in raw("openai/openai_humaneval/test.jsonl")[:2]]
    samples = [{"prompt": r["prompt"], "answer": r["answer"], "greedy": reply(g),
                "samples": [reply(g), reply("pass"), reply(g), "<think>cut off"]} for r, g in zip(rows, good)]
    m = evaluation.summarize(samples, "code")
    assert m["greedy_accuracy"] == 1.0 and m["pass@1"] == 0.5 and m["cons@4"] == 1.0


@needs_bwrap
def test_rejection_sampling_keeps_passing_programs_only(mirror):
    row = benchmarks.load("mbpp", {"schema": "mbpp"})[2]
    good = raw("google-research-datasets/mbpp/test.jsonl")[2]["code"]
    cfg = {"require_format": True, "drop_code_blocks": True, "min_language_share": None, "max_paragraph_chars": None}
    wrong = reply("def count_vowels(s):\n    return 0")
    reasons = filters.select([reply(good), wrong, reply(good), "<think>a</think>"], row["answer"], "code", cfg)
    # a code block in the answer is how code is given: only one in the reasoning is R1's "code_block"
    assert reasons == ["kept", "wrong", "duplicate", "no_answer"]


# -- an open schema --------------------------------------------------------------------------------------


def test_extra_columns_are_kept_as_the_dataset_has_them(tmp_path):
    path = tmp_path / "code.jsonl"
    path.write_text(json.dumps({"q": "Write f.", "tests": ["assert f() == 1"], "lang": "en", "meta": {"a": 1}}) + "\n")
    fields = {"prompt": "q", "answer": "{tests}", "tests": "tests", "language": "lang", "meta": "meta"}
    rows = data.load_rows({"path": str(path), "fields": fields}, need=("prompt", "answer"))
    assert rows[0]["answer"] == "assert f() == 1"
    assert data.extra_columns(rows[0]) == {"tests": ["assert f() == 1"], "language": "en", "meta": {"a": 1}}
    path.write_text(json.dumps({"q": "Write f.", "tests": ["x"]}) + "\n")
    with pytest.raises(R1Error, match=r"row 1: missing field 'lang' \(r1pipe's language\)"):
        data.load_rows({"path": str(path), "fields": {"prompt": "q", "answer": "tests", "language": "lang"}},
                       need=("prompt", "answer"))


def test_a_field_template_names_its_missing_column(tmp_path):
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps({"prompt": "def f():", "test": "def check(c): pass"}) + "\n")
    src = {"path": str(path), "fields": {"answer": "{test}\ncheck({entry_point})"}}
    with pytest.raises(R1Error, match=r"row 1: missing field 'entry_point' \(named in fields.answer\)"):
        data.load_rows(src, need=("prompt", "answer"))


# -- the verifier registry -------------------------------------------------------------------------------


def test_your_own_verifier_by_module_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_verifiers.py").write_text("def loud(completion, gold):\n    return gold.upper() in completion\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert verifiers.verify_many(["<answer>YES</answer>", "no"], ["yes", "yes"], "my_verifiers:loud") == [True, False]
    with pytest.raises(R1Error, match="cannot import verifier 'my_verifiers:quiet'"):
        verifiers.get("my_verifiers:quiet")
    with pytest.raises(R1Error, match="unknown verifier 'exact'.*integer, math, code"):
        verifiers.check_name("exact")


def _cfg(tmp_path, *overrides):
    return config.load(["conf=smoke", f"run.dir={tmp_path}", *overrides])


def test_a_wrong_verifier_or_sandbox_setting_fails_the_config_check(tmp_path):
    from r1pipe import checks, graph

    cfg = _cfg(tmp_path, "reasoning_rl.verifier=exact")
    with pytest.raises(R1Error, match="reasoning_rl.verifier: unknown verifier 'exact'"):
        checks.validate(cfg, graph.chain(cfg))
    for override, message in (("sandbox.mode=docker", "sandbox.mode must be one of bwrap, none"),
                              ("sandbox.wall_seconds=-1", "sandbox.wall_seconds must be a number > 0"),
                              ("+sandbox.gpus=1", "sandbox has no setting 'gpus'")):
        cfg = _cfg(tmp_path, "task.verifier=code", override)
        with pytest.raises(R1Error, match=message):
            checks.validate(cfg, graph.chain(cfg))


def test_the_sandbox_settings_are_part_of_only_the_stages_that_run_code(tmp_path):
    math_cfg = _cfg(tmp_path, "sandbox.wall_seconds=3")
    assert "sandbox" not in config.stage_config(math_cfg, "reasoning_rl")
    code_cfg = _cfg(tmp_path, "task.verifier=code", "sandbox.wall_seconds=3", "sandbox.file_mb=4")
    assert config.stage_config(code_cfg, "reasoning_rl")["sandbox"]["wall_seconds"] == 3
    verifiers.configure(config.stage_config(code_cfg, "reasoning_rl")["sandbox"])
    try:  # every limit of sandbox.Limits is a setting, and reaches the runs
        assert verifiers.limits() == sandbox.Limits(cpu_seconds=5, wall_seconds=3, file_mb=4)
    finally:
        verifiers.configure(None)
    assert "sandbox" not in config.stage_config(code_cfg, "cold_sft")  # trains on solutions, runs nothing


@needs_bwrap
def test_a_stage_context_runs_code_with_its_stages_limits(tmp_path):
    from r1pipe.context import StageContext

    StageContext(name="reasoning_rl", config={"sandbox": {"wall_seconds": 2, "cpu_seconds": 1}}, dir=tmp_path,
                 parent_manifests={}, parent_dirs={}, seed=0, resume=False)
    try:
        assert verifiers.settings()["wall_seconds"] == 2
        assert verifiers.verify_many([reply("while True:\n    pass")], ["assert True"], "code") == [False]
    finally:
        verifiers.configure(None)


@pytest.mark.skipif(sys.platform != "linux", reason="linux only")
def test_the_real_presets_dry_run_checks_the_code_benchmarks(tmp_path, mirror):
    from r1pipe import graph, preflight

    cfg = config.load(["conf=qwen2.5-0.5b", f"run.dir={tmp_path}", "task=mbpp", "launcher=deepspeed_zero2"])
    report = preflight.check(cfg, graph.chain(cfg))
    found = {key: outcome for stage, key, _, outcome in report.sources}
    assert found["benchmarks.humaneval"] == "ok, 4 rows" and found["benchmarks.mbpp"] == "ok, 4 rows"
    assert found["data"] == "ok, 6 rows"  # reasoning_rl on MBPP's train split
    assert config.stage_config(cfg, "reasoning_rl")["verifier"] == "code"


# -- GRPO: the columns TRL passes, and the code reward -----------------------------------------------------


@needs_bwrap
def test_the_accuracy_reward_runs_a_batch_of_programs_as_trl_calls_it(mirror):
    from r1pipe import rewards

    row = benchmarks.load("mbpp", {"schema": "mbpp"})[0]
    good = raw("google-research-datasets/mbpp/test.jsonl")[0]["code"]
    (accuracy,), _ = rewards.build({"accuracy": {"weight": 1.0}})
    replies = [reply(good), reply("def sum_of_squares(nums):\n    return 0"), reply("import sys\nsys.exit(0)"),
               "<think>\n```python\n" + good + "\n```"]  # cut off mid-thought: no answer
    got = accuracy(completions=[[{"role": "assistant", "content": r}] for r in replies], answer=[row["answer"]] * 4,
                   verifier=["code"] * 4, prompts=[[{"role": "user", "content": row["prompt"]}]] * 4)
    assert got == [1.0, 0.0, 0.0, 0.0]
    # tests as a list (a column as the dataset has it) are the asserts, never str(list), which passes anything
    tests = raw("google-research-datasets/mbpp/test.jsonl")[0]["test_list"]
    got = accuracy(completions=[reply(good), reply("x = 1")], answer=[tests, tests], verifier=["code"] * 2)
    assert got == [1.0, 0.0]


PROBE = '''
import json, os

def probe(completions, **columns):
    with open(os.environ["PROBE_OUT"], "a") as f:
        f.write(json.dumps({k: v for k, v in columns.items() if k in ("answer", "verifier", "tests", "id")}) + "\\n")
    return [0.0] * len(completions)
'''


def test_a_code_task_trains_with_grpo_and_every_mapped_column_reaches_the_rewards(tmp_path):
    import os
    import subprocess

    (tmp_path / "probe_mod.py").write_text(PROBE)
    env = {**os.environ, "R1PIPE_DATA_MIRROR": str(MIRROR), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(tmp_path), "PROBE_OUT": str(tmp_path / "columns.jsonl")}
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run-all", "conf=smoke", "task=mbpp",
                        f"run.dir={tmp_path}/run", "--to", "reasoning_rl", "eval.after_stage=false",
                        "+task.prompts.fields.tests=test_list",
                        "+reasoning_rl.rewards.probe={function: 'probe_mod:probe', weight: 0.0}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    calls = [json.loads(line) for line in open(tmp_path / "columns.jsonl")]
    assert calls, "the probe reward was never called"
    first = calls[0]
    assert set(first["verifier"]) == {"code"}
    assert all(isinstance(t, list) and t[0].startswith("assert ") for t in first["tests"])  # as the dataset has it
    assert all(a == "\n".join(t) for a, t in zip(first["answer"], first["tests"]))
    manifest = json.loads((tmp_path / "run" / "reasoning_rl" / "manifest.json").read_text())
    assert manifest["config"]["sandbox"]["mode"] == "bwrap"  # the limits programs ran under, in the fingerprint
    assert manifest["metrics"]["global_step"] >= 1


def test_a_reward_setting_named_like_a_sources_own_column_is_refused(tmp_path, monkeypatch):
    from r1pipe import rewards

    (tmp_path / "my_rewards.py").write_text("def hard(completions, difficulty=None, scale=1.0, **_):\n"
                                            "    return [0.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"hard": {"function": "my_rewards:hard", "difficulty": 3}}
    rewards.build(spec)  # on its own a setting like any other
    with pytest.raises(R1Error, match="reward hard: difficulty is a per-row column TRL passes from the dataset"):
        rewards.build(spec, columns=data.extra_fields({"path": "x.jsonl", "fields": {"difficulty": "level"}}))


def test_rejection_sampling_checks_each_row_by_its_own_verifier(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import r1pipe.generation as generation
    from r1pipe import traces

    rows = [{"prompt": "2+2", "answer": "4", "verifier": "integer"},
            {"prompt": "Write f.", "answer": "assert f() == 1"}]  # no column: the stage's verifier (code)
    completions = [["<think>a</think><answer>4</answer>"], [reply("def f():\n    return 1")]]
    monkeypatch.setattr(generation, "make_engine", lambda *a, **k: None)
    monkeypatch.setattr(generation, "generate_sharded", lambda *a, **k: (completions, 1.0))
    ctx = SimpleNamespace(name="rejection_sampling", parent_manifests={"reasoning_rl": {"fingerprint": "f"}},
                          parent_output=lambda stage, key: tmp_path, dir=tmp_path, seed=0, trust_remote_code=False)
    sampling = {"backend": "transformers", "k": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8,
                "batch_size": 1, "shard_size": 8}
    cfg = {"verifier": "code", "filters": {"require_format": False}, "sampling": sampling}
    kept, rejected, _ = traces.sample_and_filter(ctx, "reasoning_rl", rows, cfg)
    assert [r["reward_accuracy"] for r in kept] == [1.0, 1.0] and not rejected


def test_verify_groups_checks_each_rows_group_by_its_own_verifier_and_regroups():
    groups = [["<answer>4</answer>", "<answer>5</answer>"], [], ["<answer>\\frac{1}{2}</answer>"]]
    assert verifiers.verify_groups(groups, ["4", "9", "0.5"], ["integer", "integer", "math"]) == [
        [True, False], [], [True]]
