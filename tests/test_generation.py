"""Generation follows r1pipe's Sampling and nothing else: a model's own generation_config (Qwen2.5-Instruct ships
repetition_penalty, top_k, top_p, temperature) never changes what r1pipe generates, trains on or reports."""

import json
import sys
import types

import pytest
from conftest import save_tiny_model

from r1pipe import models
from r1pipe.errors import R1Error
from r1pipe.generation import Sampling, generate, generation_settings, make_engine, vllm_settings

# settings r1pipe names itself, and settings it never names (transformers would fill those from the model's)
ODD = {"repetition_penalty": 1.5, "top_k": 3, "top_p": 0.5, "temperature": 0.1, "do_sample": True,
       "no_repeat_ngram_size": 2, "min_new_tokens": 6, "max_new_tokens": 3, "num_beams": 2, "length_penalty": 2.0,
       "min_p": 0.5, "typical_p": 0.5, "suppress_tokens": list(range(3, 150))}
PROMPTS = ["12+34", "567+89", "5+5", "hello there"]
GREEDY = Sampling(n=1, max_new_tokens=16)
SAMPLED = Sampling(n=3, temperature=0.9, top_p=0.95, max_new_tokens=16, seed=5)


@pytest.fixture(scope="module")
def twin_models(tmp_path_factory):
    """The same weights saved twice: with a clean generation_config, and with one full of odd settings."""
    root = tmp_path_factory.mktemp("twins")
    clean, odd = save_tiny_model(root / "clean"), save_tiny_model(root / "odd")
    ids = json.loads((clean / "generation_config.json").read_text())
    # written as a hub repository has it (transformers refuses to save beams with sampling)
    (odd / "generation_config.json").write_text(json.dumps({"eos_token_id": ids["eos_token_id"],
                                                            "pad_token_id": ids["pad_token_id"], **ODD}))
    return clean, odd


def test_a_models_odd_generation_config_changes_nothing_r1pipe_generates(twin_models):
    clean, odd = twin_models
    assert json.loads((odd / "generation_config.json").read_text())["repetition_penalty"] == 1.5
    for sampling in (GREEDY, SAMPLED, Sampling(n=2, temperature=0.9, max_new_tokens=16, max_think_tokens=4)):
        assert make_engine(odd)(PROMPTS, sampling) == make_engine(clean)(PROMPTS, sampling)


def test_generate_sets_the_models_config_aside_even_when_it_was_loaded_with_it(twin_models):
    import torch

    clean, odd = twin_models
    tok = models.load_tokenizer(clean)
    raw = models.load_causal_lm(odd, clean_generation=False)  # as transformers loads it: the odd settings on board
    assert raw.generation_config.repetition_penalty == 1.5
    reference = models.load_causal_lm(clean)
    for sampling in (GREEDY, SAMPLED):
        assert generate(raw, tok, PROMPTS, sampling) == generate(reference, tok, PROMPTS, sampling)
    assert raw.generation_config.repetition_penalty == 1.5  # put back as it was
    # the odd settings do change plain transformers' output: the comparison above could fail
    enc = tok(["<|im_start|>user\n12+34<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    plain_odd = raw.generate(**enc, max_new_tokens=16, do_sample=False)
    plain_clean = reference.generate(**enc, max_new_tokens=16, do_sample=False)
    assert plain_odd.tolist() != plain_clean.tolist()


def test_every_loaded_model_keeps_only_token_ids_so_trl_rollouts_inherit_nothing(twin_models):
    # GRPOTrainer and DistillationTrainer build a GenerationConfig of their own settings and pass it to
    # generate(), which fills every field they leave unset (no_repeat_ngram_size, min_new_tokens, ...) from the
    # model's generation_config: r1pipe hands them models whose config holds token ids alone.
    _, odd = twin_models
    model = models.load_causal_lm(odd)
    kept = {k for k in model.generation_config.to_diff_dict() if k != "transformers_version"}
    assert kept <= set(models.GENERATION_IDS) and "eos_token_id" in kept
    dropped = models.clean_generation_config(models.load_causal_lm(odd, clean_generation=False))
    assert dropped == ODD


def test_the_settings_are_complete_and_vllm_gets_the_same_ones():
    greedy, sampled = generation_settings(GREEDY), generation_settings(SAMPLED)
    assert greedy == {"do_sample": False, "num_beams": 1, "max_new_tokens": 16, "min_new_tokens": 0,
                      "num_return_sequences": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    assert sampled == {**greedy, "do_sample": True, "num_return_sequences": 3, "temperature": 0.9, "top_p": 0.95,
                       "top_k": 0}
    v = vllm_settings(SAMPLED, eos=7)
    assert (v["n"], v["temperature"], v["top_p"], v["top_k"], v["min_p"], v["repetition_penalty"], v["min_tokens"],
            v["max_tokens"], v["seed"], v["stop_token_ids"]) == (3, 0.9, 0.95, 0, 0.0, 1.0, 0, 16, 5, [7])
    assert vllm_settings(GREEDY, eos=7)["temperature"] == 0.0


def test_the_vllm_engine_loads_no_generation_config_and_passes_every_setting(twin_models, monkeypatch):
    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["llm"] = kwargs

        def generate(self, prompts, params, use_tqdm=True):
            out = types.SimpleNamespace(outputs=[types.SimpleNamespace(text="x")] * params.n)
            return [out for _ in prompts]

    class SamplingParams:
        def __init__(self, **kwargs):
            seen["params"] = kwargs
            self.n = kwargs["n"]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    clean, _ = twin_models
    assert make_engine(clean, backend="vllm")(PROMPTS[:2], SAMPLED) == [["x"] * 3] * 2
    assert seen["llm"]["generation_config"] == "vllm"  # vLLM's "auto" would read the model's generation_config.json
    eos = models.load_tokenizer(clean).convert_tokens_to_ids(models.EOS_TURN)
    assert seen["params"] == vllm_settings(SAMPLED, eos)


def test_eval_records_every_setting_it_generated_with(twin_models, tmp_path):
    from r1pipe.evaluation import evaluate_model

    _, odd = twin_models
    settings = {"backend": "transformers", "dtype": "float32", "greedy": True, "k": 2, "temperature": 0.6,
                "top_p": 0.95, "max_new_tokens": 8, "batch_size": 8, "seed": 0, "shard_size": 8, "budget": None}
    rows = [{"id": "a", "prompt": "12+34", "answer": "46"}, {"id": "b", "prompt": "5+5", "answer": "10"}]
    metrics, _, hit = evaluate_model(odd, rows, settings, "integer", tmp_path / "entry")
    again, _, hit_again = evaluate_model(odd, rows, settings, "integer", tmp_path / "entry")
    assert (hit, hit_again) == (False, True) and again["generation"] == metrics["generation"]
    gen = metrics["generation"]
    assert gen["backend"] == "transformers"
    assert gen["greedy"] == {**generation_settings(Sampling(n=1, max_new_tokens=8)), "seed": 0}
    assert gen["sampled"]["top_k"] == 0 and gen["sampled"]["repetition_penalty"] == 1.0
    assert gen["sampled"]["temperature"] == 0.6 and gen["sampled"]["top_p"] == 0.95
    assert gen["sampled"]["no_repeat_ngram_size"] == 0 and gen["sampled"]["min_new_tokens"] == 0


def test_base_records_the_source_settings_it_ignores_and_saves_token_ids_only(twin_models, tmp_path):
    from r1pipe import config, runner

    _, odd = twin_models
    ov = ["conf=smoke", f"run.dir={tmp_path / 'run'}", f"base.model={odd}", "run.stages=[base]"]
    manifest = runner.run_stage(config.load(ov), "base", ov)
    assert manifest["metrics"]["generation_config_ignored"] == ODD
    saved = json.loads((tmp_path / "run" / "base" / "model" / "generation_config.json").read_text())
    assert set(saved) - {"transformers_version"} == {"eos_token_id", "pad_token_id"}


# The engine's own decoding loop (generation.decode): what model.generate computes, for less.


def test_greedy_decoding_matches_transformers_generate_token_for_token(twin_models):
    import torch

    from r1pipe.generation import _config, chat_prompts

    clean, _ = twin_models
    tok, model = models.load_tokenizer(clean), models.load_causal_lm(clean)
    turns = PROMPTS * 3  # prompts of different lengths: left padding, rows that finish at different steps
    ours = generate(model, tok, turns, Sampling(n=1, max_new_tokens=24, batch_size=5))
    texts = chat_prompts(tok, turns)
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        seqs = model.generate(**enc, generation_config=_config(Sampling(n=1, max_new_tokens=24),
                                                               model.generation_config.eos_token_id, tok.pad_token_id))
    theirs = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [o[0] for o in ours] == theirs


def test_nucleus_sampling_keeps_exactly_transformers_top_p_set_and_its_distribution():
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    from r1pipe.generation import NUCLEUS_CANDIDATES, _pick

    torch.manual_seed(0)
    vocab = 500
    peaked = torch.randn(3, vocab) * 4  # the nucleus is a handful of tokens: the candidates hold it
    flat = torch.randn(2, vocab) * 0.1  # the nucleus is most of the vocabulary: the full-sort fallback
    for logits, temperature, top_p in ((peaked, 0.6, 0.95), (flat, 1.0, 0.9), (torch.cat([peaked, flat]), 0.6, 0.95)):
        scaled = logits / temperature
        expected = torch.softmax(TopPLogitsWarper(top_p)(None, scaled.clone()), -1)  # transformers' nucleus
        if logits is flat:
            assert (expected > 0).sum(-1).min() > NUCLEUS_CANDIDATES  # this case does exercise the fallback
        draws = torch.stack([_pick(logits, Sampling(temperature=temperature, top_p=top_p)) for _ in range(4000)], 1)
        for row in range(logits.shape[0]):
            support = set(torch.nonzero(expected[row]).squeeze(1).tolist())
            assert set(draws[row].tolist()) <= support  # never a token outside transformers' nucleus
            counts = torch.bincount(draws[row], minlength=vocab).float() / draws.shape[1]
            top = expected[row].argmax()
            assert abs(counts[top] - expected[row][top]) < 0.04  # and its probabilities, renormalized


def test_sampling_is_reproducible_from_the_seed_and_varies_with_it(twin_models):
    clean, _ = twin_models
    tok, model = models.load_tokenizer(clean), models.load_causal_lm(clean)
    a = generate(model, tok, PROMPTS, SAMPLED)
    assert a == generate(model, tok, PROMPTS, SAMPLED)
    assert a != generate(model, tok, PROMPTS, Sampling(**{**SAMPLED.__dict__, "seed": 6}))
    assert all(len(group) == SAMPLED.n for group in a)


def test_grpo_samples_its_groups_through_the_engine_or_trl_as_configured(run_copy):
    """reasoning_rl's rollouts come from r1pipe's loop by default and from TRL's generate with rollouts=trl:
    both move the policy along a reward that varies, log completions within max_completion_length, and say
    which sampled."""
    import torch
    from conftest import overrides_for
    from safetensors.torch import load_file

    from r1pipe import checks, config, runner

    chars = "+reasoning_rl.rewards.chars={function: 'conftest:char_length_reward', weight: 1.0}"
    before = load_file(run_copy / "cold_sft" / "model" / "model.safetensors")
    runs = {}
    for rollouts in ("engine", "trl"):
        ov = overrides_for(run_copy, chars, f"reasoning_rl.rollouts={rollouts}", "eval.after_stage=false")
        m = runs[rollouts] = runner.run_stage(config.load(ov), "reasoning_rl", ov)
        assert m["metrics"]["rollouts"] == {"engine": "r1pipe engine", "trl": "trl"}[rollouts]
        assert m["metrics"]["global_step"] == 4 and 0 < m["metrics"]["final_completions_mean_length"] <= 24
        after = load_file(run_copy / "reasoning_rl" / "model" / "model.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before)
    assert runs["engine"]["fingerprint"] != runs["trl"]["fingerprint"]
    with pytest.raises(Exception, match="rollouts must be auto, engine or trl, got 'vllm'"):
        checks.validate(config.load(overrides_for(run_copy, "reasoning_rl.rollouts=vllm")), ["reasoning_rl"])


def test_auto_rollouts_are_the_engine_on_a_cpu_and_trls_on_a_gpu(monkeypatch):
    """rollouts=auto: r1pipe's loop where it is faster (CPU), TRL's generate where it measured faster (GPU)."""
    from types import SimpleNamespace

    import torch

    from r1pipe.stages.reasoning_rl import rollout_func

    args = SimpleNamespace(use_vllm=False, top_k=0, min_p=None, repetition_penalty=1.0, generation_kwargs=None,
                           temperature=1.0, top_p=1.0, max_completion_length=8, use_cpu=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert callable(rollout_func({"rollouts": "auto"}, args))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rollout_func({"rollouts": "auto"}, args) is None
    assert callable(rollout_func({"rollouts": "auto"}, SimpleNamespace(**{**vars(args), "use_cpu": True})))
    assert callable(rollout_func({"rollouts": "engine"}, args))  # asked for by name: on a GPU too
    assert rollout_func({"rollouts": "trl"}, args) is None


def test_difficulty_filter_dtype_is_checked_up_front(tmp_path):
    from conftest import overrides_for

    from r1pipe import config, preflight

    ov = overrides_for(tmp_path / "run", "reasoning_rl.difficulty_filter.dtype=float16")
    with pytest.raises(R1Error, match="difficulty_filter.dtype must be bfloat16 or null"):
        preflight.check(config.load(ov), ["reasoning_rl"])


@pytest.mark.parametrize("dtype, autocast", [("bfloat16", True), (None, False)])
def test_difficulty_filter_samples_under_bf16_autocast_when_asked(tmp_path, monkeypatch, dtype, autocast):
    import torch

    from r1pipe import generation
    from r1pipe.stages import reasoning_rl

    seen = []

    def fake_generate(model, tokenizer, turns, sampling, desc=""):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return [["<think>x</think><answer>3</answer>", "<think>x</think><answer>4</answer>"] for _ in turns]

    monkeypatch.setattr(generation, "generate", fake_generate)
    ctx = types.SimpleNamespace(dir=tmp_path, seed=0)
    rows = [{"prompt": "1+2", "answer": "3"}, {"prompt": "2+2", "answer": "4"}]
    f = {"k": 2, "temperature": 0.7, "max_new_tokens": 8, "batch_size": 4, "dtype": dtype,
         "min_pass_rate": 0.0, "max_pass_rate": 1.0}
    model = types.SimpleNamespace(device=torch.device("cpu"))  # generate is faked: only the device is read
    kept, stats = reasoning_rl._difficulty_filter(ctx, model, None, rows,
                                                 {"difficulty_filter": f, "verifier": "integer"})
    assert seen == [autocast]
    assert stats["kept"] == 2 and stats["mean_pass_rate"] == 0.5 and (tmp_path / "difficulty.jsonl").exists()
