"""Evaluation under R1's protocol, on a stage's model and the task's held-out problems.

- greedy accuracy (one deterministic answer per problem),
- pass@1 = mean correctness over k samples at temperature 0.6, top-p 0.95 (R1 avoids greedy for headline
  numbers), and cons@k = majority vote over those k,
- strict-format rate kept apart from lenient answer accuracy,
each with its standard error over problems. Every sample is saved in `eval_samples.jsonl`, so the numbers in
`eval.json` can be recomputed from it independently (`summarize`).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from r1pipe import rewards
from r1pipe.data import load_rows
from r1pipe.manifest import write_json_atomic

EVAL_JSON, SAMPLES = "eval.json", "eval_samples.jsonl"


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n))."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def summarize(samples: list[dict[str, Any]], verifier: str) -> dict[str, Any]:
    """Metrics from saved samples: [{prompt, answer, greedy: str|None, samples: [str, ...]}, ...]."""
    out: dict[str, Any] = {"n_problems": len(samples)}
    if samples and samples[0].get("greedy") is not None:
        acc = [float(rewards.is_correct(s["greedy"], s["answer"], verifier)) for s in samples]
        fmt = [float(rewards.strict_format(s["greedy"])) for s in samples]
        out["greedy_accuracy"], out["greedy_accuracy_se"] = mean_se(acc)
        out["greedy_strict_format"], _ = mean_se(fmt)
    if samples and samples[0].get("samples"):
        k = len(samples[0]["samples"])
        p1, cons, fmt, think_len, ans_len = [], [], [], [], []
        for s in samples:
            ok = [rewards.is_correct(c, s["answer"], verifier) for c in s["samples"]]
            p1.append(sum(ok) / k)
            fmt.append(sum(rewards.strict_format(c) for c in s["samples"]) / k)
            votes = Counter(a for a in (rewards.extract_answer(c) for c in s["samples"]) if a is not None)
            top = votes.most_common(1)[0][0] if votes else None
            cons.append(float(top is not None and rewards.is_correct(f"<answer>{top}</answer>", s["answer"], verifier)))
            for c in s["samples"]:
                think, summary = rewards.split_think(c)
                think_len.append(len(think))
                ans_len.append(len(summary))
        out["k"] = k
        out["pass@1"], out["pass@1_se"] = mean_se(p1)
        out[f"cons@{k}"], out[f"cons@{k}_se"] = mean_se(cons)
        out["strict_format"], _ = mean_se(fmt)
        out["mean_think_chars"] = sum(think_len) / len(think_len)
        out["mean_answer_chars"] = sum(ans_len) / len(ans_len)
    return out


def paired_difference(before: list[dict[str, Any]], after: list[dict[str, Any]], verifier: str) -> dict[str, Any]:
    """after - before on the same problems, with the paired standard error (far tighter than comparing two
    independent standard errors, since both models see the same 500 problems)."""
    if [s["prompt"] for s in before] != [s["prompt"] for s in after]:
        return {}
    out: dict[str, Any] = {}
    if before[0].get("greedy") is not None and after[0].get("greedy") is not None:
        d = [float(rewards.is_correct(y["greedy"], y["answer"], verifier)) - float(rewards.is_correct(x["greedy"], x["answer"], verifier))
             for x, y in zip(before, after)]
        out["greedy_accuracy_diff"], out["greedy_accuracy_diff_se"] = mean_se(d)
    if before[0].get("samples") and after[0].get("samples"):
        def p1(s):
            return sum(rewards.is_correct(c, s["answer"], verifier) for c in s["samples"]) / len(s["samples"])

        out["pass@1_diff"], out["pass@1_diff_se"] = mean_se([p1(y) - p1(x) for x, y in zip(before, after)])
    return out


def read_samples(stage_dir: Path) -> list[dict[str, Any]] | None:
    path = stage_dir / SAMPLES
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_model(
    model_dir: Path, rows: list[dict[str, str]], settings: dict[str, Any], trust_remote_code: bool = False
) -> tuple[dict, list]:
    """Generate greedy and sampled answers for `rows` and score them. Returns (metrics, samples)."""
    from r1pipe.generation import Sampling, make_engine

    engine = make_engine(model_dir, backend=settings.get("backend", "transformers"),
                         dtype=settings.get("dtype", "float32"), trust_remote_code=trust_remote_code)
    prompts = [r["prompt"] for r in rows]
    t0 = time.time()
    common = dict(max_new_tokens=settings["max_new_tokens"], batch_size=settings["batch_size"], seed=settings["seed"])
    greedy = engine(prompts, Sampling(n=1, **common)) if settings["greedy"] else None
    sampled = None
    if settings["k"] > 0:
        sampled = engine(prompts, Sampling(n=settings["k"], temperature=settings["temperature"], top_p=settings["top_p"], **common))
    samples = [
        {
            "prompt": r["prompt"],
            "answer": r["answer"],
            "greedy": greedy[i][0] if greedy else None,
            "samples": sampled[i] if sampled else [],
        }
        for i, r in enumerate(rows)
    ]
    metrics = summarize(samples, settings["verifier"])
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["settings"] = {k: v for k, v in settings.items() if k not in ("heldout", "after_stage")}
    return metrics, samples


def evaluate_stage(cfg, stage_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a stage's model on the task's held-out set; writes eval.json and eval_samples.jsonl."""
    from r1pipe.config import to_plain

    settings = to_plain(cfg.eval)
    rows = load_rows(settings["heldout"], need=("prompt", "answer"))
    metrics, samples = evaluate_model(
        stage_dir / manifest["outputs"]["model"], rows, settings, trust_remote_code=bool(cfg.get("trust_remote_code"))
    )
    write_samples(stage_dir / SAMPLES, samples)
    # Against each evaluated parent, on the same problems: did this stage move the numbers?
    for parent in manifest.get("parents", []):
        before = read_samples(stage_dir.parent / parent["stage"])
        if before:
            diff = paired_difference(before, samples, settings["verifier"])
            if diff:
                metrics[f"vs_{parent['stage']}"] = diff
    # A second model among the outputs (distill's baseline student): evaluated the same way, and compared.
    for key, rel in manifest.get("outputs", {}).items():
        if key != "model" and (stage_dir / rel / "model" / "config.json").exists():
            extra, extra_samples = evaluate_model(stage_dir / rel / "model", rows, settings,
                                                  trust_remote_code=bool(cfg.get("trust_remote_code")))
            write_samples(stage_dir / f"eval_{key}_samples.jsonl", extra_samples)
            write_json_atomic(stage_dir / f"eval_{key}.json", extra)
            metrics[key] = {k: v for k, v in extra.items() if k != "settings"}
            metrics[f"vs_{key}"] = paired_difference(extra_samples, samples, settings["verifier"])
    write_json_atomic(stage_dir / EVAL_JSON, metrics)
    return metrics


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    """JSON lines, written to a temporary file and renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
    tmp.replace(path)  # a reader sees all the samples or the old file, never half
