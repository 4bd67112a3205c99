"""An outsider's check that every model a run wrote is a plain Hugging Face model.

    python scripts/check_models.py runs/smollm2_ci [--n 8] [--max-new-tokens 128] [--questions FILE] [--json OUT]

For each stage directory whose manifest.json names a `model` output (and a matched control's `baseline/model`), in the
order the stages ran: load it with AutoModelForCausalLM / AutoTokenizer (no remote code, safetensors only),
render N held-out questions through the model's own chat template with plain jinja2 (and require the text to
equal tokenizer.apply_chat_template's), decode greedily with an explicit GenerationConfig, and print the strict
format rate (`<think>…</think>` then `<answer>…</answer>`, nothing around them), the answer accuracy and one
answer. A sequence classifier (the reward model) is only loaded, with AutoModelForSequenceClassification.

Questions are the first N rows of the stage's own eval_samples.jsonl (fields prompt, optional system, answer,
optional response_prefix: the start of the reply, appended to the rendered prompt and judged with the reply);
a stage that evaluated nothing (base) takes those of the first stage that did, or all take --questions.

It imports transformers and jinja2 and nothing of r1pipe's: whatever it loads, anyone can load. Exit status 1,
with one line on stderr naming the stage, when a model does not load or its chat template does not render.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

# The definition of r1pipe/rewards.py's strict_format, written again: one think block, then one answer block,
# only whitespace around them, and no stray tags inside either.
STRICT = re.compile(
    r"\A\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>(?:(?!</?think>|</?answer>).)*</answer>\s*\Z",
    re.S,
)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
INTEGER = re.compile(r"[+-]?\d+")


class CheckFailed(Exception):
    """One line for stderr: which stage failed and how."""


def is_strict(text: str) -> bool:
    return STRICT.match(text) is not None


def is_correct(text: str, gold: str) -> bool:
    """The last <answer> block after the reasoning equals the gold answer: as integers when the gold answer is
    one (so " 42 ", "+42" and "1,020" count as r1pipe counts them), else as strings after strip."""
    found = ANSWER.findall(text.rsplit("</think>", 1)[-1])
    if not found:
        return False
    pred, gold = found[-1].strip(), str(gold).strip()
    if INTEGER.fullmatch(gold):
        pred = pred.replace(",", "").replace(" ", "")
        return INTEGER.fullmatch(pred) is not None and int(pred) == int(gold)
    return pred == gold


# ------------------------------------------------------------------------------------------------- finding


def models_of(run: Path) -> list[tuple[str, Path]]:
    """(label, model dir) for every model the run's manifests name, in the order the stages started."""
    stages = []
    for manifest_path in run.glob("*/manifest.json"):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckFailed(f"{manifest_path.parent.name}: manifest.json does not read ({e})") from e
        stages.append((manifest.get("started_at") or "", manifest_path.parent, manifest.get("outputs") or {}))
    found = []
    for _, stage_dir, outputs in sorted(stages, key=lambda s: (s[0], s[1].name)):
        if "model" in outputs:
            found.append((stage_dir.name, stage_dir / outputs["model"]))
        if (stage_dir / "baseline" / "model").is_dir():  # a matched control: the cold-start data alone
            found.append((f"{stage_dir.name}/baseline", stage_dir / "baseline" / "model"))
    return found


def read_questions(path: Path, n: int) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if "prompt" not in row or "answer" not in row:
                raise CheckFailed(f"{path} line {i} has no prompt or answer field")
            rows.append({"prompt": row["prompt"], "system": row.get("system"), "answer": str(row["answer"]),
                         "response_prefix": row.get("response_prefix") or ""})
        if len(rows) == n:
            break
    return rows


def messages(row: dict) -> list[dict[str, str]]:
    """The turns that ask a question: its system prompt if it has one, then the user turn (as r1pipe asks it)."""
    turns = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return turns + [{"role": "user", "content": row["prompt"]}]


# ----------------------------------------------------------------------------------------------- template


def chat_template(model_dir: Path) -> tuple[str, dict[str, str]]:
    """The model's own chat template and its special tokens, read from its files (not through transformers)."""
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    template = None
    if (model_dir / "chat_template.jinja").exists():  # where transformers >= 4.43 saves it
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        template = config["chat_template"]
    elif isinstance(config.get("chat_template"), list):  # named templates: the default one is the chat's
        template = next((t["template"] for t in config["chat_template"] if t.get("name") == "default"), None)
    if template is None:
        raise CheckFailed("has no chat template (no chat_template.jinja, none in tokenizer_config.json)")
    tokens = {}
    for key, value in config.items():  # bos_token, eos_token, ...: what templates may name
        if key.endswith("_token") and isinstance(value, dict):
            value = value.get("content")
        if key.endswith("_token") and isinstance(value, str):
            tokens[key] = value
    return template, tokens


def render(template: str, turns: list[dict[str, str]], tokens: dict[str, str]) -> str:
    """The prompt text with jinja2 alone, in the environment chat templates are written for: sandboxed,
    trim_blocks and lstrip_blocks, loop controls, a tojson that keeps non-ASCII text, raise_exception and
    strftime_now (the helpers Hugging Face documents for templates)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: dt.datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=turns, add_generation_prompt=True, **tokens)


# -------------------------------------------------------------------------------------------------- checks


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load(model_dir: Path, cls_name: str):
    import transformers

    if not (model_dir / "config.json").exists():
        raise CheckFailed(f"{model_dir} has no config.json")
    try:
        # Plain loading: no repository code, and safetensors only (a pickle would execute on load).
        model = getattr(transformers, cls_name).from_pretrained(model_dir, trust_remote_code=False,
                                                                use_safetensors=True, dtype="float32")
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except Exception as e:
        raise CheckFailed(f"{model_dir} does not load with {cls_name}: {first_line(e)}") from e
    return model, tokenizer


def is_classifier(model_dir: Path) -> bool:
    try:
        archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return False  # load() says what is wrong
    return any(a.endswith("ForSequenceClassification") for a in archs)


def prompts(model_dir: Path, tokenizer, rows: list[dict]) -> list[str]:
    try:
        template, tokens = chat_template(model_dir)
        texts = [render(template, messages(r), tokens) for r in rows]
    except CheckFailed:
        raise
    except Exception as e:
        raise CheckFailed(f"the chat template of {model_dir} does not render with jinja2: {first_line(e)}") from e
    for row, text in zip(rows, texts):
        theirs = tokenizer.apply_chat_template(messages(row), add_generation_prompt=True, tokenize=False)
        if theirs != text:
            at = next((i for i, (a, b) in enumerate(zip(text, theirs)) if a != b), min(len(text), len(theirs)))
            raise CheckFailed(f"the chat template of {model_dir} renders differently with jinja2 than with "
                              f"apply_chat_template (from character {at}: {text[at:at + 20]!r} vs "
                              f"{theirs[at:at + 20]!r})")
    # A task with a response prefix (e.g. "<think>") had it written after the generation prompt for the model
    # to continue: a server does the same by appending it to the rendered prompt.
    return [text + row.get("response_prefix", "") for row, text in zip(rows, texts)]


def generate(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy completions, left-padded in one batch, each cut at its first end-of-turn token."""
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    eos_ids.discard(None)
    if not eos_ids:
        raise CheckFailed("has no end-of-turn token (eos_token_id) in its generation config or tokenizer")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
    # Every decoding setting spelled out, and the model's saved generation_config replaced by it: generate()
    # fills unset settings from the saved one, which would make this check depend on that file.
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                              repetition_penalty=1.0, no_repeat_ngram_size=0, num_return_sequences=1,
                              eos_token_id=sorted(eos_ids), pad_token_id=pad)
    model.generation_config = config
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    # The template already wrote any BOS: the tokenizer must add nothing.
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, generation_config=config)
    completions = []
    for seq in out[:, enc["input_ids"].shape[1]:].tolist():
        end = next((i for i, t in enumerate(seq) if t in eos_ids), len(seq))
        # Special tokens kept: a tag the tokenizer marks special would vanish with skip_special_tokens, and the
        # format is checked on what the model wrote.
        completions.append(tokenizer.decode(seq[:end], skip_special_tokens=False))
    return completions


def check(label: str, model_dir: Path, rows: list[dict] | None, questions_from: str, max_new_tokens: int) -> dict:
    classifier = is_classifier(model_dir)
    model, tokenizer = load(model_dir, "AutoModelForSequenceClassification" if classifier else "AutoModelForCausalLM")
    result = {"stage": label, "model_dir": str(model_dir), "kind": "sequence_classifier" if classifier else "causal_lm",
              "parameters": sum(p.numel() for p in model.parameters())}
    if classifier:  # a reward model scores text; it does not answer questions
        return result
    if not rows:
        raise CheckFailed("no questions: the run has no eval_samples.jsonl; pass --questions FILE")
    completions = [row.get("response_prefix", "") + c  # judged whole, as r1pipe judges a reply
                   for row, c in zip(rows, generate(model, tokenizer, prompts(model_dir, tokenizer, rows), max_new_tokens))]
    samples = [{**row, "completion": c, "strict_format": is_strict(c), "correct": is_correct(c, row["answer"])}
               for row, c in zip(rows, completions)]
    n = len(samples)
    return result | {"questions_from": questions_from, "n": n,
                     "strict_format": sum(s["strict_format"] for s in samples) / n,
                     "accuracy": sum(s["correct"] for s in samples) / n, "samples": samples}


# -------------------------------------------------------------------------------------------------- output


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def print_table(results: list[dict]) -> None:
    head = ["stage", "parameters", "questions", "strict format", "accuracy", "example answer"]
    body = []
    for r in results:
        if r["kind"] == "sequence_classifier":
            body.append([r["stage"], human(r["parameters"]), "-", "-", "-", "(sequence classifier: loads)"])
            continue
        strict, right = sum(s["strict_format"] for s in r["samples"]), sum(s["correct"] for s in r["samples"])
        example = repr(r["samples"][0]["completion"])
        body.append([r["stage"], human(r["parameters"]), r["questions_from"],
                     f"{strict}/{r['n']} {100 * r['strict_format']:.1f}%",
                     f"{right}/{r['n']} {100 * r['accuracy']:.1f}%",
                     example if len(example) <= 72 else example[:71] + "…"])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
    for row in [head, *body]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a run directory (runs/<preset>)")
    ap.add_argument("--n", type=int, default=8, help="questions per model (default 8)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="greedy decoding budget (default 128)")
    ap.add_argument("--questions", type=Path, help="JSONL with prompt, optional system, answer (default: the run's)")
    ap.add_argument("--json", type=Path, help="write the numbers and every answer here")
    args = ap.parse_args(argv)

    import transformers

    transformers.logging.set_verbosity_error()  # stderr is for the one line that says what failed
    transformers.utils.logging.disable_progress_bar()
    label = "?"
    try:
        models = models_of(args.run_dir)
        if not models:
            raise CheckFailed(f"no stage in {args.run_dir} names a model in its manifest.json (is it a run directory?)")
        stage_dirs = [args.run_dir / label.split("/")[0] for label, _ in models]
        fallback = next(((d.name, d / "eval_samples.jsonl") for d in stage_dirs if (d / "eval_samples.jsonl").exists()),
                        None)  # the first stage that evaluated: the run's held-out set is the same for every stage
        results = []
        for label, model_dir in models:
            stage_dir = args.run_dir / label.split("/")[0]
            if args.questions:
                source, path = args.questions.name, args.questions
            elif (stage_dir / "eval_samples.jsonl").exists():
                source, path = "own", stage_dir / "eval_samples.jsonl"
            elif fallback:
                source, path = fallback
            else:
                source, path = "", None
            rows = read_questions(path, args.n) if path else None
            results.append(check(label, model_dir, rows, source, args.max_new_tokens))
    except CheckFailed as e:
        print(f"check_models: {label}: {e}" if label != "?" else f"check_models: {e}", file=sys.stderr)
        return 1
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "n": args.n,
                                         "max_new_tokens": args.max_new_tokens, "stages": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
