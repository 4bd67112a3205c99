"""Security defaults: trust_remote_code off unless set; safetensors only; torch.load only with weights_only=True;
dataset content and model completions are never evaluated as code."""

import ast
import json
import os
import re
from pathlib import Path

import pytest

from r1pipe import benchmarks, data, models, rewards
from r1pipe.errors import R1Error

PACKAGE = Path(models.__file__).parent


class _Touch:
    """Unpickling this runs `touch marker`: a file that exists afterwards proves the pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def hostile(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f'\\boxed{{__import__("os").system("touch {m}")}}',
        f"<answer>exec(\"open('{m}','w')\")</answer>",
        f"<think>x</think><answer>__import__('os').system('touch {m}')</answer>",
        f"<think>x</think><answer>1 + eval(\"open('{m}','w')\")</answer>",
        f"The final answer is (lambda: open('{m}','w'))() I hope",
        f"<answer>$\\text{{__import__('os').system('touch {m}')}}$</answer>",
        f"<answer>\\operatorname{{exec}}(\"open('{m}','w')\")</answer>",
        "{prompt.__init__.__globals__}",
    ]


def tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return Qwen2ForCausalLM(config)


# ---------------------------------------------------------------------------------------------------- weights


def test_pickled_only_model_is_refused_and_the_same_weights_load_from_safetensors(tmp_path):
    import torch

    model = tiny_model()
    pickled = tmp_path / "bin"
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # transformers 5 writes safetensors only
    with pytest.raises(R1Error, match="safetensors only") as e:
        models.load_causal_lm(pickled)
    assert "\n" not in str(e.value)

    model.save_pretrained(tmp_path / "st")
    loaded = models.load_causal_lm(tmp_path / "st")
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("precheck", [True, False])
def test_hostile_pickle_in_model_dir_is_never_unpickled(tmp_path, monkeypatch, precheck):
    import torch

    if not precheck:  # transformers' use_safetensors=True must refuse it on its own too
        monkeypatch.setattr(models, "refuse_pickled_weights", lambda path: None)
    marker = tmp_path / "pwned"
    tiny_model().config.save_pretrained(tmp_path / "m")
    torch.save({"w": _Touch(marker)}, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(R1Error):
        models.load_causal_lm(tmp_path / "m")
    assert not marker.exists()


def _with_custom_code(directory: Path, marker: Path, model_type: str) -> None:
    code = f"open({str(marker)!r}, 'w').close()\nfrom transformers import Qwen2ForCausalLM as EvilForCausalLM\n"
    (directory / "modeling_evil.py").write_text(code)
    (directory / "configuration_evil.py").write_text(code + "from transformers import Qwen2Config as EvilConfig\n")
    cfg = json.loads((directory / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                       "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (directory / "config.json").write_text(json.dumps(cfg))


def test_auto_map_custom_code_is_not_run_without_trust_remote_code(tmp_path):
    marker = tmp_path / "pwned"
    tiny_model().save_pretrained(tmp_path / "known")
    _with_custom_code(tmp_path / "known", marker, "qwen2")
    assert type(models.load_causal_lm(tmp_path / "known")).__name__ == "Qwen2ForCausalLM"  # the library's class

    tiny_model().save_pretrained(tmp_path / "unknown")
    _with_custom_code(tmp_path / "unknown", marker, "evil")
    with pytest.raises(R1Error, match="custom code"):
        models.load_causal_lm(tmp_path / "unknown")
    assert not marker.exists()


def test_tokenizer_auto_map_custom_code_is_not_run_without_trust_remote_code(tmp_path):
    marker = tmp_path / "pwned"
    models.build_tokenizer(["1+2=3", "hello"], vocab_size=300).save_pretrained(tmp_path)
    (tmp_path / "tokenization_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "EvilTokenizer"
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(R1Error, match="custom code"):
        models.load_tokenizer(tmp_path)
    assert not marker.exists()


def test_trust_remote_code_is_off_in_every_preset():
    from r1pipe import config

    for preset in sorted(p.stem for p in (config.conf_dir() / "presets").glob("*.yaml")):
        cfg = config.load([f"conf={preset}"])
        assert cfg.trust_remote_code is False, preset
        assert cfg.base.trust_remote_code is False, preset


def _keywords(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords}


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            yield node, f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None), f


def test_every_load_passes_trust_remote_code_through_and_models_load_safetensors_only():
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for call, name, func in _calls(ast.parse(path.read_text())):
            kw = _keywords(call)
            where = f"{path.relative_to(PACKAGE.parent)}:{call.lineno}"
            if name == "from_pretrained" or name == "LLM":
                checked += 1
                assert "trust_remote_code" in kw and not _is_true(kw["trust_remote_code"]), where
                owner = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
                # a GGUF file holds tensors and metadata, no pickles: use_safetensors does not apply to it
                if name == "from_pretrained" and "Model" in owner and "gguf_file" not in kw:
                    assert _is_true(kw.get("use_safetensors")), f"{where}: {owner}.from_pretrained, pickles allowed"
            if name == "save_pretrained":
                safe = kw.get("safe_serialization")
                assert not isinstance(safe, ast.Constant) or safe.value, where
    assert checked >= 5


# ----------------------------------------------------------------------------------------------- torch.load


def test_trainer_resume_refuses_hostile_rng_optimizer_and_scheduler_pickles(tmp_path):
    import pickle

    import torch
    from transformers import Trainer, TrainingArguments

    marker = tmp_path / "pwned"
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], max_steps=1)
    trainer = Trainer(model=tiny_model(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    for name in ("rng_state.pth", "optimizer.pt", "scheduler.pt"):
        torch.save({"python": _Touch(marker)}, ckpt / name)
    with pytest.raises(pickle.UnpicklingError):
        trainer._load_rng_state(str(ckpt))
    with pytest.raises(pickle.UnpicklingError):
        trainer._load_optimizer_and_scheduler(str(ckpt))
    assert not marker.exists()


def test_installed_trainer_calls_torch_load_only_with_weights_only_true():
    import inspect

    import transformers.trainer

    loads = [c for c, name, f in _calls(ast.parse(inspect.getsource(transformers.trainer)))
             if name == "load" and ast.unparse(f) == "torch.load"]
    assert len(loads) >= 5
    assert all(_is_true(_keywords(c).get("weights_only")) for c in loads)


# ---------------------------------------------------------------------------- nothing is evaluated as code


def test_rewards_and_verifiers_never_run_hostile_completions_or_gold_answers(tmp_path, monkeypatch):
    import math_verify.parser as mp

    parsed = []
    real = mp.parse_expr
    monkeypatch.setattr(mp, "parse_expr", lambda s, **kw: (parsed.append(s), real(s, **kw))[1])
    mp.parse_expr_cached.cache_clear()
    mp.parse_latex_cached.cache_clear()
    marker = tmp_path / "pwned"
    texts = hostile(marker) + ["The final answer is 2*(3+4) I hope"]
    for verifier in ("integer", "math"):
        for gold in texts:
            for text in texts:
                for completion in (text, [{"role": "assistant", "content": text}]):
                    for fn in rewards.REGISTRY.values():
                        fn([completion], answer=[gold], verifier=[verifier])
    assert not marker.exists()
    assert rewards.math_equal("The final answer is 2*(3+4) I hope", "14")  # the one path that reaches parse_expr
    # math-verify hands sympy's parse_expr (an eval) nothing but digits and operators
    assert parsed and all(re.fullmatch(r"[\d.\s+\-*/()×÷]*", s) for s in parsed), parsed


def test_hostile_rows_load_as_plain_strings_from_every_file_type(tmp_path):
    from datasets import Dataset

    marker = tmp_path / "pwned"
    rows = [{"prompt": t, "answer": t, "solution": t} for t in hostile(marker)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    for suffix in ("jsonl", "json", "parquet"):
        assert data.load_rows({"path": str(tmp_path / f"d.{suffix}")}, data.NORMALIZED) == rows
    pairs = [{"prompt": t, "chosen": t, "rejected": t} for t in hostile(marker)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    assert data.load_preferences({"path": str(tmp_path / "p.jsonl")}) == pairs
    bench = benchmarks.load("b", {"path": str(tmp_path / "d.jsonl"), "prompt_template": "Q: {prompt}"})
    assert [b["prompt"] for b in bench] == [f"Q: {r['prompt']}" for r in rows]
    assert not marker.exists()


def test_hub_dataset_with_a_loading_script_is_refused_not_run(tmp_path, monkeypatch):
    """r1pipe never asks `datasets` to run a dataset's own code, and reports the refusal in one line.

    The pinned `datasets` cannot run loading scripts at all, asked or not, so a real load proves nothing about
    r1pipe. The stand-in below is a `datasets` that can (as 2.x could, with trust_remote_code=True): a script
    runs only if r1pipe asks for it, so the test fails if any hub loader (training rows, preference pairs,
    benchmarks) ever does."""
    import datasets

    marker = tmp_path / "pwned"
    repo = tmp_path / "evil"
    repo.mkdir()
    (repo / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    asked = []

    def load_dataset(path, *args, **kwargs):
        asked.append(kwargs)
        if kwargs.get("trust_remote_code"):
            marker.touch()  # what evil.py would do
            return datasets.Dataset.from_list([{"prompt": "1+1", "answer": "2", "chosen": "a", "rejected": "b"}])
        raise RuntimeError("Dataset scripts are no longer supported, but found evil.py\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for load in (lambda: data.load_rows({"hub": str(repo)}, ("prompt", "answer")),
                 lambda: data.load_preferences({"hub": str(repo)}),
                 lambda: benchmarks.load("evil", {"hub": str(repo)})):
        with pytest.raises(data.DataUnavailable) as e:
            load()
        assert e.value.message == f"cannot load hub dataset {repo}: Dataset scripts are no longer supported, but found evil.py"
        assert "local copy" in e.value.hint
    assert len(asked) == 3 and not marker.exists()


# ------------------------------------------------------------------------------------------- static check

_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile"}
_FORBIDDEN = {"pickle.load", "pickle.loads", "cPickle.load", "marshal.load", "marshal.loads", "dill.load",
              "dill.loads", "shelve.open", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle",
              "pandas.read_pickle", "os.system", "os.popen"}
_FORBIDDEN_NAMES = {"sympify", "parse_expr", "unsafe_load", "read_pickle", "register_for_checkpointing",
                    "load_custom_state"}  # the last two: accelerate unpickles those with weights_only=False


def unsafe_calls(source: str) -> list[str]:
    found = []
    for call, name, func in _calls(ast.parse(source)):
        dotted, kw = ast.unparse(func), _keywords(call)
        if isinstance(func, ast.Name) and name in _BUILTINS:
            found.append(dotted)
        elif dotted in _FORBIDDEN or name in _FORBIDDEN_NAMES:
            found.append(dotted)
        elif dotted == "torch.load" and not _is_true(kw.get("weights_only")):
            found.append(dotted)
        elif dotted == "yaml.load" and "Safe" not in ast.unparse(kw.get("Loader") or (call.args + [ast.Constant(None)] * 2)[1]):
            found.append(dotted)
        elif dotted in {"np.load", "numpy.load"} and _is_true(kw.get("allow_pickle")):
            found.append(dotted)
        elif kw.get("shell") is not None and _is_true(kw["shell"]):
            found.append(f"{dotted}(shell=True)")
    return found


def test_static_check_flags_unsafe_calls_and_ignores_comments_and_methods():
    bad = ("import torch, pickle, yaml, numpy as np, subprocess\n"
           "torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\neval(s)\nexec(s)\n"
           "yaml.load(s, Loader=yaml.Loader)\nyaml.load(s)\nnp.load(f, allow_pickle=True)\n"
           "subprocess.run(s, shell=True)\nsympy.sympify(s)\n")
    assert unsafe_calls(bad) == ["torch.load", "torch.load", "pickle.loads", "eval", "exec", "yaml.load", "yaml.load",
                                 "np.load", "subprocess.run(shell=True)", "sympy.sympify"]
    ok = ("# eval(s) torch.load(f) pickle.load(f)\nmodel.eval()\nre.compile('x')\ntorch.load(f, weights_only=True)\n"
          "yaml.load(s, Loader=yaml.SafeLoader)\njson.loads(s)\ns = 'exec(x)'\n")
    assert unsafe_calls(ok) == []


def test_r1pipe_has_no_unsafe_deserialization_or_code_evaluation():
    found = {str(p.relative_to(PACKAGE.parent)): unsafe_calls(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
