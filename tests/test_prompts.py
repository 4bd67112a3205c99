"""How a question is asked is a task setting (prompt_template, system_prompt, response_prefix): applied alike to
training data, RL prompts, sampling and evaluation, part of the fingerprints; and saved chat templates are plain
Jinja2."""

import json

import pytest
from conftest import overrides_for

from r1pipe import config, data, models, runner, state
from r1pipe.errors import R1Error

TEMPLATE = "Add: {prompt}. Think in <think></think>, answer in <answer></answer>."
SYSTEM = "You are a careful calculator."
PREFIX = "<think>"


def test_a_source_with_a_template_and_a_system_prompt_asks_through_both():
    rows = data.load_rows({"builtin": "arithmetic", "size": 3, "seed": 1, "prompt_template": TEMPLATE,
                           "system_prompt": SYSTEM}, need=("prompt", "answer", "solution"))
    plain = data.load_rows({"builtin": "arithmetic", "size": 3, "seed": 1}, need=("prompt", "answer", "solution"))
    for r, p in zip(rows, plain):
        assert r["question"] == p["prompt"] and r["prompt"] == TEMPLATE.format(prompt=p["prompt"])
        assert data.chat(r) == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["prompt"]}]
    assert data.chat(plain[0]) == [{"role": "user", "content": plain[0]["prompt"]}]
    assert "system" not in plain[0] and "question" not in plain[0]
    sft = data.sft_messages(rows)[0]["messages"]
    assert [m["role"] for m in sft] == ["system", "user", "assistant"]


@pytest.mark.parametrize("template, message", [
    ("no placeholder", "must contain {prompt}"),
    ("{prompt} {answer}", "no other placeholder"),
    ("{prompt", "not a valid format string"),
    (5, "must be a string"),
])
def test_a_bad_prompt_template_names_the_source(template, message):
    with pytest.raises(R1Error, match="builtin:arithmetic") as e:
        data.load_rows({"builtin": "arithmetic", "size": 2, "seed": 1, "prompt_template": template}, need=("prompt",))
    assert message in str(e.value)


def test_the_template_is_part_of_every_reasoning_stage_fingerprint(smoke_run):
    ov = overrides_for(smoke_run, f"task.prompt_template='{TEMPLATE}'")
    st = state.states(config.load(ov))
    assert st["base"].state == "stale"  # its tokenizer corpus is the cold-start data, asked the new way
    cfg = config.load(ov)
    for stage, key in (("cold_sft", "data"), ("reasoning_rl", "data"), ("rejection_sampling", "data")):
        assert config.stage_config(cfg, stage)[key]["prompt_template"] == TEMPLATE
    assert config.to_plain(cfg.eval.benchmarks.heldout)["source"]["prompt_template"] == TEMPLATE


def test_training_sampling_and_evaluation_all_ask_the_same_way(tmp_path):
    run = tmp_path / "run"
    ov = overrides_for(run, f"task.prompt_template='{TEMPLATE}'", f"task.system_prompt='{SYSTEM}'",
                       f"task.response_prefix='{PREFIX}'", "rejection_sampling.sampling.k=1")
    runner.run_all(config.load(ov), ov, stop="rejection_sampling")

    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(run / "rejection_sampling" / "data" / "train.parquet"), split="train")
    reasoning = [r for r in ds if r["source"] == "reasoning"] or None
    shard = json.loads((run / "rejection_sampling" / "shards" / "shard-00000.jsonl").read_text().splitlines()[0]) \
        if (run / "rejection_sampling" / "shards").exists() else None
    # what rejection sampling asked the model, and what second_sft will train on
    asked = shard["prompt"] if shard else reasoning[0]["messages"][:2]
    assert asked[0] == {"role": "system", "content": SYSTEM} and asked[1]["content"].startswith("Add: ")
    samples = [json.loads(line) for line in (run / "cold_sft" / "eval_samples.jsonl").read_text().splitlines()]
    assert all(s["system"] == SYSTEM and s["prompt"].startswith("Add: ") for s in samples)
    # the reply's start was written for the model, and every reply is scored whole
    assert all(s["response_prefix"] == PREFIX and s["greedy"].startswith(PREFIX) for s in samples)
    if shard:
        assert asked[-1] == {"role": "assistant", "content": PREFIX}
    assert all(r["messages"][-1]["content"].startswith(PREFIX) for r in reasoning or [])
    grpo = [json.loads(line) for line in (run / "reasoning_rl" / "samples.jsonl").read_text().splitlines()]
    assert SYSTEM in grpo[0]["prompt"] and "Add: " in grpo[0]["prompt"]


def test_saved_chat_templates_render_in_plain_jinja2(smoke_run):
    """Serving stacks (llama.cpp, vLLM's own renderers) use plain Jinja2, which rejects transformers'
    {% generation %} tag: saved models carry the same template without it, and render the same text."""
    import jinja2
    from transformers import AutoTokenizer

    with pytest.raises(jinja2.TemplateSyntaxError):  # what the training template would do there
        jinja2.Environment().from_string(models.CHAT_TEMPLATE)
    turns = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "12+34"}]
    for stage in ("base", "cold_sft", "second_sft", "distill"):
        path = smoke_run / stage / "model"
        tok = AutoTokenizer.from_pretrained(path)
        assert "{% generation %}" not in tok.chat_template
        text = jinja2.Environment().from_string(tok.chat_template).render(messages=turns, add_generation_prompt=True)
        assert text == tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        assert text.endswith("<|im_start|>assistant\n")
        # r1pipe's own loader puts the markers back: SFT's assistant-only loss needs them
        assert models.load_tokenizer(path).chat_template == models.CHAT_TEMPLATE


def test_a_response_prefix_is_written_for_the_model_to_continue_but_not_into_training_data():
    rows = data.load_rows({"builtin": "arithmetic", "size": 2, "seed": 1, "system_prompt": SYSTEM,
                           "response_prefix": PREFIX}, need=("prompt", "answer", "solution"))
    assert data.ask(rows[0]) == data.chat(rows[0]) + [{"role": "assistant", "content": PREFIX}]
    assert [m["role"] for m in data.chat(rows[0])] == ["system", "user"]
    sft = data.sft_messages(rows)[0]["messages"]  # the whole reply is trained on, as before
    assert [m["role"] for m in sft] == ["system", "user", "assistant"] and sft[-1]["content"] == rows[0]["solution"]
    plain = data.load_rows({"builtin": "arithmetic", "size": 2, "seed": 1}, need=("prompt",))
    assert data.ask(plain[0]) == data.chat(plain[0])
    with pytest.raises(R1Error, match="builtin:arithmetic.*response_prefix must be a string"):
        data.load_rows({"builtin": "arithmetic", "size": 2, "seed": 1, "response_prefix": 5}, need=("prompt",))


def test_generation_continues_the_prefix_and_returns_whole_replies(tmp_path):
    from conftest import save_tiny_model

    from r1pipe.generation import Sampling, chat_prompts, generate

    rows = data.load_rows({"builtin": "arithmetic", "size": 3, "seed": 1, "response_prefix": PREFIX + "\n"},
                          need=("prompt",))
    path = save_tiny_model(tmp_path / "model")
    tok, model = models.load_tokenizer(path), models.load_causal_lm(path)
    text = chat_prompts(tok, [data.ask(rows[0])])[0]
    assert text.endswith("<|im_start|>assistant\n" + PREFIX + "\n")  # no end of turn: the model writes on
    outs = generate(model, tok, [data.ask(r) for r in rows], Sampling(n=2, temperature=1.0, max_new_tokens=4))
    plain = generate(model, tok, [data.chat(r) for r in rows], Sampling(n=2, temperature=1.0, max_new_tokens=4))
    assert all(c.startswith(PREFIX) for o in outs for c in o)
    assert all(len(o) == 2 for o in outs) and outs != plain


def test_rewards_judge_the_whole_reply_when_the_prompt_wrote_its_start():
    from r1pipe import rewards

    (fmt, acc), _ = rewards.build({"format": {}, "accuracy": {}})
    prompts = [[{"role": "user", "content": "1+2"}, {"role": "assistant", "content": PREFIX + "\n"}]]
    completions = [[{"role": "assistant", "content": "1+2=3</think><answer>3</answer>"}]]
    assert fmt(completions, prompts=prompts, answer=["3"]) == [1.0]
    assert acc(completions, prompts=prompts, answer=["3"]) == [1.0]
    assert fmt(completions, prompts=[prompts[0][:1]], answer=["3"]) == [0.0]  # no prefix: not in format
    assert fmt(["1+2=3</think><answer>3</answer>"], prompts=prompts, answer=["3"]) == [1.0]  # standard format


def test_a_response_prefix_is_part_of_the_evaluation_cache_key():
    from r1pipe import evaluation

    rows = [{"id": 1, "prompt": "1+2", "answer": "3"}]
    assert evaluation.rows_sha256(rows) != evaluation.rows_sha256([{**rows[0], "response_prefix": PREFIX}])
    assert evaluation.questions_sha256(rows) == evaluation.questions_sha256([{**rows[0], "response_prefix": PREFIX}])
