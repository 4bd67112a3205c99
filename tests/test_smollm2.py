"""A real pretrained model through base: SmolLM2-135M-Instruct (`make smollm2` fetches it once; `make test`
does that first). What the tiny preset cannot show: a real tokenizer with pad == eos, a chat template that
injects a system prompt, R1's tags as several ordinary tokens."""

import json

import pytest
from conftest import overrides_for

from r1pipe import checks, config, fetch, models, runner

SMOLLM2 = fetch.model_dir("smollm2")
needs_smollm2 = pytest.mark.skipif(not fetch.is_fetched("smollm2"), reason="SmolLM2 is not fetched: make smollm2")


def _base(run_dir, *extra):
    ov = overrides_for(run_dir, f"base.model={SMOLLM2}", "eval.after_stage=false", *extra)
    runner.run_stage(config.load(ov), "base", ov)
    return json.loads((run_dir / "base" / "manifest.json").read_text())


@needs_smollm2
@pytest.mark.parametrize("tags", ["text", "tokens"])
def test_base_prepares_smollm2_for_the_recipe(tmp_path, tags):
    import jinja2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = _base(tmp_path / "run", f"base.tags={tags}")["metrics"]
    out = tmp_path / "run" / "base" / "model"
    tok, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    # SmolLM2 ships pad == eos == <|im_end|>: SFT would mask every eos out as padding and never learn to stop
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id != model.generation_config.pad_token_id
    assert m["parameters"] >= 134_000_000 and not m["built_from_scratch"]
    if tags == "text":  # nothing new: the tags are the tokens the model already writes
        assert len(tok) == 49152 == model.get_input_embeddings().weight.shape[0]
        assert any(c.startswith("tags as text: <think> = < think >") for c in m["tokenizer_changes"])
        assert tok.tokenize("<think>") == ["<", "think", ">"]
        assert m["tags"] == {"mode": "text", "embedding_rows": "existing",
                             "tokens": {"<think>": ["<", "think", ">"], "</think>": ["</", "think", ">"],
                                        "<answer>": ["<", "answer", ">"], "</answer>": ["</", "answer", ">"]}}
    else:  # one new token each, on new rows (SmolLM2 has no spare rows), drawn around the mean embedding
        assert len(tok) == 49156 == model.get_input_embeddings().weight.shape[0]
        assert "embeddings resized to 49156 (new rows mean-initialized)" in m["tokenizer_changes"]
        assert tok.tokenize("<think>") == ["<think>"]
        assert m["tags"]["mode"] == "tokens" and m["tags"]["embedding_rows"] == "new, mean-initialized"
        assert m["tags"]["tokens"]["</answer>"] == ["</answer>"]
    # SmolLM2's template injected "You are a helpful AI assistant named SmolLM"; r1pipe's asks only what the task asks,
    # and renders in plain Jinja2 as a serving stack would
    turns = [{"role": "user", "content": "12+34"}]
    text = jinja2.Environment().from_string(tok.chat_template).render(messages=turns, add_generation_prompt=True)
    assert text == tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n12+34<|im_end|>\n<|im_start|>assistant\n"


def test_a_missing_fetched_model_says_how_to_fetch_it(tmp_path, monkeypatch):
    from r1pipe.errors import R1Error

    monkeypatch.setenv("R1PIPE_CACHE", str(tmp_path / "empty-cache"))
    ov = overrides_for(tmp_path / "run", "base.model=${fetched:smollm2}")
    cfg = config.load(ov)
    with pytest.raises(R1Error) as e:
        checks.validate(cfg, ["base"])
    assert "does not exist" in str(e.value) and "r1pipe fetch smollm2" in e.value.hint
    assert not (tmp_path / "run").exists()
