"""Evaluation under R1's protocol, on a stage's model and every benchmark in `eval.benchmarks` (the task's
held-out problems first; GSM8K, MATH-500 and AIME 2024 in their public layouts via `r1pipe.benchmarks`).

- greedy accuracy (one deterministic answer per problem),
- pass@1 = mean correctness over k samples at temperature 0.6, top-p 0.95 (R1 avoids greedy for headline
  numbers), and cons@k = majority vote over those k,
- strict-format rate kept apart from lenient answer accuracy,
each with its standard error over problems. Every sample is saved in `eval_samples.jsonl`, so the numbers in
`eval.json` can be recomputed from it independently (`summarize`). Results are cached by (model content
hash, benchmark rows, generation settings) and generated in resumable shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from r1pipe import benchmarks, data, rewards, verifiers
from r1pipe.config import to_plain
from r1pipe.errors import R1Error
from r1pipe.manifest import read_jsonl, write_json_atomic, write_jsonl_atomic

EVAL_JSON, SAMPLES, CACHE_DIR = "eval.json", "eval_samples.jsonl", "eval_cache"
log = logging.getLogger("r1pipe")


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


def verified(samples: list[dict[str, Any]], verifier: str) -> tuple[list[bool] | None, list[list[bool]] | None]:
    """Whether each greedy answer and each sample is right, checked in one batch (code runs in parallel)."""
    golds = [s["answer"] for s in samples]
    greedy = None
    if samples and samples[0].get("greedy") is not None:
        greedy = verifiers.verify_many([s["greedy"] for s in samples], golds, verifier)
    per_sample = None
    if samples and samples[0].get("samples"):
        per_sample = verifiers.verify_groups([s["samples"] for s in samples], golds, verifier)
    return greedy, per_sample


def summarize(samples: list[dict[str, Any]], verifier: str) -> dict[str, Any]:
    """Metrics from saved samples: [{prompt, answer, greedy: str|None, samples: [str, ...]}, ...]."""
    out: dict[str, Any] = {"n_problems": len(samples)}
    greedy_ok, samples_ok = verified(samples, verifier)
    if greedy_ok is not None:
        fmt = [float(rewards.strict_format(s["greedy"])) for s in samples]
        out["greedy_accuracy"], out["greedy_accuracy_se"] = mean_se([float(v) for v in greedy_ok])
        out["greedy_strict_format"], _ = mean_se(fmt)
    if samples_ok is not None:
        k = len(samples[0]["samples"])
        p1, fmt, think_len, ans_len = [], [], [], []
        tops = []
        for s, ok in zip(samples, samples_ok):
            p1.append(sum(ok) / k)
            fmt.append(sum(rewards.strict_format(c) for c in s["samples"]) / k)
            answers = [rewards.predicted_answer(c, verifier) for c in s["samples"]]
            tops.append(rewards.majority_answer(answers, verifier))
            for c in s["samples"]:
                think, summary = rewards.split_think(c)
                think_len.append(len(think))
                ans_len.append(len(summary))
        golds = [s["answer"] for s in samples]
        top_ok = verifiers.verify_many([f"<answer>{t}</answer>" for t in tops], golds, verifier)
        cons = [float(t is not None and ok) for t, ok in zip(tops, top_ok)]
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
    def asked(samples):
        return [(s["prompt"], s.get("system"), s.get("response_prefix")) for s in samples]

    if asked(before) != asked(after):
        return {}
    out: dict[str, Any] = {}
    (greedy_x, samples_x), (greedy_y, samples_y) = verified(before, verifier), verified(after, verifier)
    if greedy_x is not None and greedy_y is not None:
        d = [float(y) - float(x) for x, y in zip(greedy_x, greedy_y)]
        out["greedy_accuracy_diff"], out["greedy_accuracy_diff_se"] = mean_se(d)
    if samples_x is not None and samples_y is not None:
        def p1(ok):
            return sum(ok) / len(ok)

        out["pass@1_diff"], out["pass@1_diff_se"] = mean_se([p1(y) - p1(x) for x, y in zip(samples_x, samples_y)])
    return out


def samples_file(benchmark_index: int, name: str) -> str:
    """The headline benchmark keeps the plain name (what paired comparisons and older runs read)."""
    return SAMPLES if benchmark_index == 0 else f"eval_samples.{name}.jsonl"


def read_samples(stage_dir: Path, name: str = SAMPLES) -> list[dict[str, Any]] | None:
    path = stage_dir / name
    return read_jsonl(path) if path.exists() else None


def benchmark_specs(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """eval.benchmarks as flat specs, in order (the first is the headline). A spec may hold its data source
    under `source:` (how the config points at the task's held-out set) or be the source itself."""
    specs = settings.get("benchmarks") or {}
    if not isinstance(specs, dict) or not specs:
        raise R1Error(f"eval.benchmarks must be a non-empty mapping of name -> data source, got {specs!r}",
                      hint="e.g. eval.benchmarks.heldout={source: ${task.heldout}}")
    out = {}
    for name, spec in specs.items():
        if spec is None:  # null drops a benchmark an inherited preset names (smoke drops tiny's three_digit)
            continue
        if not isinstance(spec, dict):
            raise R1Error(f"eval.benchmarks.{name} must be a mapping, got {spec!r}",
                          hint="e.g. {schema: gsm8k, path: data/gsm8k_test.jsonl}")
        spec = dict(spec)
        source = spec.pop("source", None)
        out[name] = spec = {**source, **spec} if isinstance(source, dict) else spec
        _check_spec(name, spec)
    if not out:
        raise R1Error("eval.benchmarks names no benchmark: every entry is null",
                      hint="e.g. eval.benchmarks.heldout={source: ${task.heldout}}")
    return out


def _check_spec(name: str, spec: dict[str, Any]) -> None:
    """Types checked before anything loads, so a typo is one line, not a traceback after generation."""
    where = f"eval.benchmarks.{name}"
    for key, kind, example in (("schema", str, "gsm8k"), ("prompt_template", str, "'{prompt} Answer in <answer></answer>.'"),
                               ("system_prompt", str, "'Think in <think></think>, answer in <answer></answer>.'"),
                               ("response_prefix", str, "'<think>'"),
                               ("fields", dict, "{prompt: question}"), ("verifier", str, "math")):
        if spec.get(key) is not None and not isinstance(spec[key], kind):
            raise R1Error(f"{where}.{key} must be a {kind.__name__}, got {spec[key]!r}", hint=f"e.g. {key}: {example}")
    if spec.get("schema") is not None and spec["schema"] not in benchmarks.SCHEMAS:
        raise R1Error(f"{where}: unknown benchmark schema {spec['schema']!r}",
                      hint=f"known schemas: {', '.join(sorted(benchmarks.SCHEMAS))}")
    if spec.get("verifier") is not None:
        verifiers.check_name(spec["verifier"], f"{where}.verifier")
    benchmarks.resolve(spec, where)  # one kind of source: a +eval.benchmarks.X.path=... merged into a builtin fails here


def check_settings(settings: dict[str, Any]) -> None:
    """Pre-flight check of the eval block (run before any stage trains, so a bad eval setting never costs a run)."""
    benchmark_specs(settings)
    budget = settings.get("budget")
    if budget is not None and not isinstance(budget, dict):
        raise R1Error(f"eval.budget must be a mapping, got {budget!r}",
                      hint="e.g. eval.budget.max_think_tokens=512 (and min_think_tokens, max_waits)")
    for key in ("max_think_tokens", "min_think_tokens", "max_waits"):
        value = (budget or {}).get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise R1Error(f"eval.budget.{key} must be a whole number >= 0 or null, got {value!r}")
    for key in ("k", "max_new_tokens", "batch_size"):
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise R1Error(f"eval.{key} must be a whole number >= 0, got {value!r}")
    if not settings.get("greedy") and not settings.get("k"):
        raise R1Error("eval has nothing to do: greedy is false and k is 0", hint="set eval.greedy=true or eval.k=4")


# Settings that change what is generated or how it is scored. The cache key covers exactly these, with the
# model's content hash and the benchmark's rows: change any and the numbers are computed again.
GENERATION_KEYS = ("backend", "dtype", "greedy", "k", "temperature", "top_p", "max_new_tokens", "batch_size", "seed",
                   "shard_size", "budget")


def rows_sha256(rows: list[dict[str, str]]) -> str:
    """A benchmark's identity: its rows' content, whatever file or hub id they came from."""
    # a system prompt and a response prefix are part of how the question is asked (absent: the rows hash as
    # they always have)
    return hashlib.sha256(json.dumps([[r.get("id"), r["prompt"], r["answer"], *([r["system"]] if r.get("system") else []),
                                       *([{"response_prefix": r["response_prefix"]}] if r.get("response_prefix") else [])]
                                      for r in rows]).encode()).hexdigest()


def questions_sha256(rows: list[dict[str, str]]) -> str:
    """A benchmark's identity for decontamination: its questions as the dataset has them (no prompt template,
    which is how the model is asked, not what it must not have seen)."""
    return rows_sha256([{**r, "prompt": r.get("question", r["prompt"]), "system": None, "response_prefix": None}
                        for r in rows])


def cache_key(model_sha256: str, rows: list[dict[str, str]], settings: dict[str, Any], verifier: str) -> str:
    rows_sha = rows_sha256(rows)
    gen = {k: settings.get(k) for k in GENERATION_KEYS}
    key = {"model": model_sha256, "rows": rows_sha, "settings": gen, "verifier": verifier, "protocol": PROTOCOL_VERSION}
    if verifiers.runs_code(verifier):  # a program's limits decide whether it passes
        key["sandbox"] = verifiers.settings()
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


PROTOCOL_VERSION = 4  # bump when summarize() or the sampling procedure changes what a cached result means


def evaluate_model(
    model_dir: Path, rows: list[dict[str, str]], settings: dict[str, Any], verifier: str, work_dir: Path,
    trust_remote_code: bool = False,
) -> tuple[dict, list, bool]:
    """Greedy and sampled answers for `rows`, scored. Returns (metrics, samples, cache_hit).

    `work_dir` is this (model, benchmark, settings)'s cache entry: generation goes there in shards, so an
    interrupted evaluation resumes; a finished one is reused without loading the model at all."""
    from r1pipe.generation import generate_sharded, make_engine

    greedy_sampling, sampling = samplings(settings)
    done_metrics, done_samples = work_dir / "metrics.json", work_dir / SAMPLES
    if settings.get("cache", True) and done_metrics.exists() and done_samples.exists():
        cached = json.loads(done_metrics.read_text())
        return {**cached, "generation": generation_record(settings)}, read_samples(work_dir) or [], True
    if not settings.get("cache", True) and work_dir.exists():
        shutil.rmtree(work_dir)  # asked not to reuse anything, shards included
    work_dir.mkdir(parents=True, exist_ok=True)
    engine_box: list = []

    def engine(turns, sampling):  # the model loads on first use: a resumed run may need none of it
        if not engine_box:
            engine_box.append(make_engine(model_dir, backend=settings.get("backend", "transformers"),
                                          dtype=settings.get("dtype", "float32"), trust_remote_code=trust_remote_code))
        return engine_box[0](turns, sampling)

    prompts = [data.ask(r) for r in rows]
    t0 = time.time()
    shard = int(settings.get("shard_size") or len(prompts))
    greedy = sampled = None
    if greedy_sampling is not None:
        greedy, _ = generate_sharded(engine, prompts, greedy_sampling, work_dir / "greedy", shard, log)
    if sampling is not None:
        sampled, _ = generate_sharded(engine, prompts, sampling, work_dir / "sampled", shard, log)
    samples = [
        {
            "id": r.get("id"),
            "prompt": r["prompt"],
            **({"system": r["system"]} if r.get("system") else {}),
            **({"response_prefix": r["response_prefix"]} if r.get("response_prefix") else {}),
            "answer": r["answer"],
            "greedy": greedy[i][0] if greedy else None,
            "samples": sampled[i] if sampled else [],
        }
        for i, r in enumerate(rows)
    ]
    metrics = summarize(samples, verifier)
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["settings"] = {k: settings.get(k) for k in GENERATION_KEYS} | {"verifier": verifier}
    write_samples(done_samples, samples)
    write_json_atomic(done_metrics, metrics)  # last: its presence means the entry is whole
    for part in ("greedy", "sampled"):
        shutil.rmtree(work_dir / part, ignore_errors=True)  # the samples file holds it all now
    return {**metrics, "generation": generation_record(settings)}, samples, False


def samplings(settings: dict[str, Any]):
    """The greedy and the sampled pass of an evaluation (None where the settings leave one out)."""
    from r1pipe.generation import Sampling

    budget = settings.get("budget") or {}
    common = dict(max_new_tokens=settings["max_new_tokens"], batch_size=settings["batch_size"], seed=settings["seed"],
                  max_think_tokens=budget.get("max_think_tokens"), min_think_tokens=budget.get("min_think_tokens"),
                  max_waits=int(budget.get("max_waits") or 0))
    greedy = Sampling(n=1, **common) if settings["greedy"] else None
    sampled = Sampling(n=settings["k"], temperature=settings["temperature"], top_p=settings["top_p"], **common) \
        if settings["k"] > 0 else None
    return greedy, sampled


def generation_record(settings: dict[str, Any]) -> dict[str, Any]:
    """What eval.json says each pass was decoded with: every setting generate() was given (the model's own
    generation_config never takes part), and the backend."""
    from r1pipe.generation import generation_settings

    greedy, sampled = samplings(settings)
    out: dict[str, Any] = {"backend": settings.get("backend", "transformers")}
    for name, sampling in (("greedy", greedy), ("sampled", sampled)):
        if sampling is not None:
            out[name] = generation_settings(sampling) | {"seed": sampling.seed}
    return out


def same_settings(parent_dir: Path, benchmark: str, settings: dict[str, Any]) -> bool:
    """Was the parent evaluated on `benchmark` with these generation settings? A paired difference between
    two models is only meaningful under one protocol."""
    path = parent_dir / EVAL_JSON
    if not path.exists():
        return False
    ev = json.loads(path.read_text())
    theirs = ev if ev.get("benchmark", "heldout") == benchmark else (ev.get("benchmarks") or {}).get(benchmark) or {}
    return theirs.get("settings") == settings


def unchecked_stages(run_dir: Path, manifest: dict[str, Any], benchmark: str, rows_sha: str) -> list[str]:
    """The stages in this model's lineage that trained on data without checking it against this benchmark."""
    from r1pipe.modelcard import lineage

    out = []
    for m in lineage(run_dir, manifest):
        record = m.get("decontamination")
        if record is None:  # read no task data (base; second_sft without its baseline): the runner records None
            continue
        if not record or (record.get("against") or {}).get(benchmark) != rows_sha:
            out.append(m["stage"])
    return out


def evaluate_stage(cfg, stage_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a stage's model on every configured benchmark; writes eval.json and the samples files.

    Results are cached under `<run>/eval_cache/` by (model content hash, benchmark rows, settings): evaluating
    an unchanged model again reads the cache, and an interrupted evaluation resumes from its shards."""
    settings = to_plain(cfg.eval)
    trc = bool(cfg.get("trust_remote_code"))
    check_settings(settings)
    specs = benchmark_specs(settings)
    verifiers.configure(to_plain(cfg.get("sandbox")))  # how a code benchmark's replies run
    cache_root = stage_dir.parent / CACHE_DIR
    metrics: dict[str, Any] = {}
    others: dict[str, Any] = {}
    headline_rows: list[dict[str, str]] = []
    for index, (name, spec) in enumerate(specs.items()):
        rows = benchmarks.load(name, spec)
        verifier = benchmarks.verifier(spec)
        key = cache_key(manifest["hashes"]["model"]["sha256"], rows, settings, verifier)
        m, samples, hit = evaluate_model(stage_dir / manifest["outputs"]["model"], rows, settings, verifier,
                                         cache_root / key, trust_remote_code=trc)
        log.info("%s: %s on %s (%d problems)%s", stage_dir.name, "cache hit" if hit else "evaluated", name, len(rows),
                 f", cache {key}" if hit else "")
        m = {"benchmark": name, **m, "cache": {"key": key, "hit": hit}}
        unchecked = unchecked_stages(stage_dir.parent, manifest, name, questions_sha256(rows))
        m["decontaminated"] = not unchecked
        if unchecked:
            m["not_decontaminated_in"] = unchecked
            log.warning("%s: %s was not among the benchmarks that %s checked training data against; rerun them "
                        "with it in eval.benchmarks (--force) for a clean number", stage_dir.name, name, ", ".join(unchecked))
        fname = samples_file(index, name)
        write_samples(stage_dir / fname, samples)
        # Against each evaluated parent, on the same problems: did this stage move the numbers?
        for parent in manifest.get("parents", []):
            before = read_samples(stage_dir.parent / parent["stage"], fname)
            if before and not same_settings(stage_dir.parent / parent["stage"], name, m["settings"]):
                log.info("%s: not compared with %s on %s: the parent was evaluated with other settings",
                         stage_dir.name, parent["stage"], name)
                continue
            if before:
                diff = paired_difference(before, samples, verifier)
                if diff:
                    m[f"vs_{parent['stage']}"] = diff
        if index == 0:
            metrics, headline_rows, headline_verifier = m, rows, verifier
            headline_samples = samples
        else:
            others[name] = m
    if others:
        metrics["benchmarks"] = others
    # A second model among the outputs (distill's baseline student): evaluated the same way on the headline
    # benchmark, and compared.
    for key, rel in manifest.get("outputs", {}).items():
        if key != "model" and (stage_dir / rel / "model" / "config.json").exists():
            ckey = cache_key(manifest["hashes"][key]["sha256"], headline_rows, settings, headline_verifier)
            extra, extra_samples, _ = evaluate_model(stage_dir / rel / "model", headline_rows, settings,
                                                     headline_verifier, cache_root / ckey, trust_remote_code=trc)
            write_samples(stage_dir / f"eval_{key}_samples.jsonl", extra_samples)
            write_json_atomic(stage_dir / f"eval_{key}.json", extra)
            metrics[key] = {k: v for k, v in extra.items() if k not in ("settings", "generation")}
            metrics[f"vs_{key}"] = paired_difference(extra_samples, headline_samples, headline_verifier)
    write_json_atomic(stage_dir / EVAL_JSON, metrics)
    return metrics


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    write_jsonl_atomic(path, samples)  # a reader sees all the samples or the old file, never half
