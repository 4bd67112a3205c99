"""scripts/check_models.py: every model of a run loads and answers with plain transformers + jinja2."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1pipe import rewards

SCRIPT = Path(__file__).parents[1] / "scripts" / "check_models.py"
# Runs the script with r1pipe made unimportable: anything of r1pipe's it reached for would fail the run.
WITHOUT_R1PIPE = """
import runpy, sys
sys.modules["r1pipe"] = None
sys.argv = ["check_models.py", *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""
MODELS = ("base", "cold_sft", "reasoning_rl", "second_sft", "second_sft/baseline", "reward_model", "alignment_rl",
          "distill", "distill/baseline")


def check_models(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_R1PIPE.format(script=str(SCRIPT)), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def script_module():
    spec = importlib.util.spec_from_file_location("check_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_model_of_a_smoke_run_loads_and_answers_without_r1pipe(smoke_run, tmp_path):
    # 24 new tokens: the smoke preset's evaluation budget, so the answers can be set beside r1pipe's own
    out = check_models(smoke_run, "--n", 4, "--max-new-tokens", 24, "--json", tmp_path / "check.json")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    # every stage with a model (rejection_sampling has none); listed in the order they started, which other tests
    # that rerun stages of this shared run decide
    assert sorted(rows) == sorted(MODELS)
    assert "sequence classifier: loads" in rows["reward_model"]
    report = json.loads((tmp_path / "check.json").read_text())
    for stage in report["stages"]:
        if stage["kind"] == "sequence_classifier":
            continue
        samples = stage["samples"]
        assert len(samples) == 4 and stage["parameters"] > 0
        # The printed numbers, recomputed from the printed answers with r1pipe's own definitions
        strict = [rewards.strict_format(s["completion"]) for s in samples]
        right = [rewards.is_correct(s["completion"], s["answer"]) for s in samples]
        assert stage["strict_format"] == sum(strict) / 4 and stage["accuracy"] == sum(right) / 4
        assert f"{sum(strict)}/4 {100 * sum(strict) / 4:.1f}%" in rows[stage["stage"]]
        assert f"{sum(right)}/4 {100 * sum(right) / 4:.1f}%" in rows[stage["stage"]]
        assert repr(samples[0]["completion"])[:40] in rows[stage["stage"]]
        # The same greedy answers r1pipe's evaluation recorded for that model (base evaluated nothing: it
        # borrows the first evaluated stage's questions)
        stage_dir = smoke_run / stage["stage"].split("/")[0]
        name = "eval_baseline_samples.jsonl" if stage["stage"].endswith("/baseline") else "eval_samples.jsonl"
        assert stage["questions_from"] == ("cold_sft" if stage["stage"] == "base" else "own")
        if stage["stage"] != "base":
            recorded = [json.loads(line) for line in (stage_dir / name).read_text().splitlines()][:4]
            assert [s["prompt"] for s in samples] == [r["prompt"] for r in recorded]
            assert [s["completion"] for s in samples] == [r["greedy"] for r in recorded]


@pytest.mark.parametrize("breakage, says", [
    ("template", "chat template of"),
    ("weights", "does not load with AutoModelForCausalLM"),
])
def test_a_broken_model_is_one_line_naming_its_stage(run_copy, breakage, says):
    model = run_copy / "cold_sft" / "model"
    if breakage == "template":
        (model / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }")  # unclosed tag
    else:
        (model / "model.safetensors").unlink()
    out = check_models(run_copy, "--n", 2, "--max-new-tokens", 4)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check_models: cold_sft: ") and says in lines[0], out.stderr


def test_strict_format_and_accuracy_agree_with_r1pipe():
    mod = script_module()
    texts = ["<think>a</think><answer>42</answer>", " <think>\na\n</think>\n<answer> 42 </answer>\n",
             "<think>a</think>\n<answer>42</answer> more", "<answer>42</answer>",
             "<think>a<think>b</think><answer>42</answer>",
             "<think>a</think><answer>4<answer>2</answer>", "<think></think><answer></answer>", "42",
             "<think>a</think><answer>1,020</answer>", "<think>a</think><answer>+42</answer><answer>7</answer>",
             "<think>x <answer>42</answer></think><answer>7</answer>", "<think>a</think><answer>forty-two</answer>"]
    for text in texts:
        assert mod.is_strict(text) == rewards.strict_format(text), text
        for gold in ("42", "1020", "7"):
            assert mod.is_correct(text, gold) == rewards.is_correct(text, gold), (text, gold)
    assert mod.is_correct("<answer> forty-two </answer>", "forty-two")  # not an integer: equal strings


def test_a_response_prefix_is_appended_to_the_prompt_and_judged_with_the_reply(tmp_path):
    from transformers import AutoTokenizer

    from conftest import save_tiny_model
    from r1pipe import models

    module = script_module()
    model_dir = save_tiny_model(tmp_path / "model")
    models.save_tokenizer(models.load_tokenizer(model_dir), model_dir)  # the serving template, as stages save it
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"prompt": p, "answer": a, "response_prefix": "<think>"}) + "\n"
                                 for p, a in (("12+34", "46"), ("5+6", "11"))))
    rows = module.read_questions(questions, 2)
    result = module.check("cold_sft", model_dir, rows, "file", 6)
    assert all(s["completion"].startswith("<think>") for s in result["samples"])
    text = module.prompts(model_dir, AutoTokenizer.from_pretrained(model_dir), rows)[0]
    assert text.endswith("<|im_start|>assistant\n<think>")
