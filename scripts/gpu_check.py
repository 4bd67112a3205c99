"""r1pipe on one GPU, measured in one short script: what `make gpu-check` runs (scripts/gpu_check.sh sets it up).

    python scripts/gpu_check.py --device cuda --out DIR [--budget 450]
    python scripts/gpu_check.py --device cpu  --out DIR          # the same code at toy sizes: how CI tests it

A GPU is lent for minutes at a time, on a machine with no network, so everything here is prepared beforehand
and time-boxed: each section gets a share of --budget seconds, and DIR/gpu_check.json is rewritten after each
one, so a run cut short still reports what it measured. DIR/gpu_check.log has every subprocess's output.

Sections, in order:
  env         versions, the device, its memory
  matmul      the device's bf16 matmul rate (the CPU's fp32 and bf16 on --device cpu): the peak shares divide by it
  model       a randomly initialized model of a real size, built from config on the device: Qwen2.5-0.5B's
              architecture with SmolLM2's 49,152-token tokenizer (files, no weights; --tokenizer), taken
              through r1pipe's base stage as a user's own model would be
  sft         cold_sft through `r1pipe run --stage` vs TRL's SFTTrainer called directly (bench/direct_trl.py),
              same rows and settings: tokens/s, share of the matmul peak, peak GPU memory, the overhead ratio
  grpo        the same for reasoning_rl vs TRL's GRPOTrainer; random weights never stop early, so every
              completion runs to max_completion_length
  generation  r1pipe's engine vs one `generate` per prompt, sampled (k samples per prompt)
  decode      ms per token step of a GRPO rollout: r1pipe's loop and transformers' generate, each in bf16
              autocast over float32 weights and on bf16 weights
  tiny_chain  `r1pipe run-all conf=tiny_gpu` (the tiny preset in bf16 on the GPU) with what is left of the
              budget: seconds per stage from the manifests; it resumes, so a second call finishes it
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Qwen2.5-0.5B's architecture (its config.json), with the carried tokenizer's vocabulary: ids from SmolLM2's
# tokenizer all fit, and every sampled id decodes. 0.36B parameters instead of 0.49B (a smaller embedding).
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, hidden_act="silu")
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           max_position_embeddings=1024, tie_word_embeddings=True, hidden_act="silu")

SIZES = {  # per device: the GPU's are realistic lengths cut to fit a lease's minutes; the CPU's only check the code
    "cuda": dict(arch=QWEN25_05B, matmul_n=8192, sft_steps=10, sft_batch=8, sft_length=2048, grpo_steps=2,
                 grpo_prompts=8, num_generations=8, completion_length=384, gen_prompts=64, gen_k=4,
                 gen_max_new_tokens=128, loop_prompts=4, chain_conf="tiny_gpu", chain_to=None, budget=460),
    "cpu": dict(arch=TOY, matmul_n=256, sft_steps=2, sft_batch=2, sft_length=128, grpo_steps=1, grpo_prompts=2,
                num_generations=2, completion_length=8, gen_prompts=4, gen_k=2, gen_max_new_tokens=8, loop_prompts=2,
                chain_conf="smoke", chain_to="cold_sft", budget=0),
}
# A section starts another round of its contenders only inside its share of the budget; one round always runs
# (bounded by the whole budget). The tiny chain takes what is left.
SHARES = {"sft": 0.14, "grpo": 0.2}


class Check:
    """The results so far (written after every section) and the time left."""

    def __init__(self, out: Path, device: str, budget: float):
        self.out, self.device, self.t0, self.budget = out, device, time.time(), budget
        self.results: dict = {"device": device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "budget_s": budget, "sections": {}}
        self.log = open(out / "gpu_check.log", "a", buffering=1)

    def left(self) -> float:
        return self.budget - (time.time() - self.t0) if self.budget else float("inf")

    def say(self, text: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def section(self, name: str, fn, *args):
        self.say(f"== {name}")
        t0 = time.time()
        try:
            result = fn(self, *args)
            status = "ok"
        except Exception as e:  # one failed section must not cost the others' figures
            result, status = {"error": f"{type(e).__name__}: {e}"[:2000]}, "failed"
            self.log.write(traceback.format_exc())
            self.say(f"{name} failed: {result['error'][:300]}")
        result = {"status": status, "seconds": round(time.time() - t0, 1), **(result or {})}
        self.results["sections"][name] = result
        self.write()
        return result

    def write(self) -> None:
        from r1pipe.manifest import write_json_atomic

        write_json_atomic(self.out / "gpu_check.json", self.results)

    def run(self, cmd: list[str], timeout: float | None) -> tuple[float, str]:
        """A subprocess in its own process group (a timeout stops all of it), output logged; its wall time and
        stdout. Raises on failure or timeout with the output's tail."""
        self.say("$ " + " ".join(str(c) for c in cmd))
        t0 = time.time()
        p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            self.log.write(out)
            raise TimeoutError(f"stopped after {timeout:.0f}s: {' '.join(map(str, cmd[2:6]))} ...") from None
        self.log.write(out)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {out[-1500:]}")
        return time.time() - t0, out

    def share(self, name: str) -> float | None:
        return SHARES[name] * self.budget if self.budget else None

    def timeout(self, reserve: float = 20.0) -> float | None:
        """For one subprocess: what is left of the budget but `reserve` seconds (for what comes after)."""
        return max(10.0, self.left() - reserve) if self.budget else None


R1PIPE = [sys.executable, "-m", "r1pipe.cli"]


def env_section(c: Check) -> dict:
    from importlib import metadata

    import torch

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "huggingface_hub",
                "pyarrow", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if c.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda)
    else:
        out.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return out


def matmul_section(c: Check, n: int) -> dict:
    """Mean rate of ten n x n x n products after three warm-ups, on random data (zeros run faster on GPUs)."""
    import torch

    dtypes = [torch.bfloat16] if c.device == "cuda" else [torch.float32, torch.bfloat16]
    out = {"n": n}
    for dtype in dtypes:
        a = torch.randn(n, n, dtype=dtype, device=c.device)
        b = torch.randn(n, n, dtype=dtype, device=c.device)
        for _ in range(3):
            a @ b
        sync = torch.cuda.synchronize if c.device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync()
        rate = 10 * 2 * n**3 / (time.perf_counter() - t0)
        out[f"{str(dtype).split('.')[-1]}_tflops"] = round(rate / 1e12, 2)
    out["peak_tflops"] = out["bfloat16_tflops"]  # training runs its matmuls in bf16 (autocast on the GPU)
    return out


def _conf(c: Check, sizes: dict, work: Path) -> list[str]:
    """Overrides that point the tiny preset's stages at the random real-size model and long rows: the way a user
    points r1pipe at their own model and files. No evaluation: random weights score nothing."""
    bf16 = "true" if c.device == "cuda" else "false"
    use_cpu = "false" if c.device == "cuda" else "true"
    ov = ["conf=tiny", f"run.dir={work / 'run'}", f"base.model={work / 'random_model'}", "base.eval=false",
          "eval.after_stage=false", "base.tags=text", f"cold_sft.data={{path: {work / 'sft.jsonl'}}}",
          f"reasoning_rl.data={{path: {work / 'grpo.jsonl'}}}", "reasoning_rl.difficulty_filter.enabled=false",
          "reasoning_rl.log_samples=0"]
    for stage in ("cold_sft", "reasoning_rl"):
        ov += [f"{stage}.trainer.bf16={bf16}", f"{stage}.trainer.use_cpu={use_cpu}", f"{stage}.trainer.save_steps=100000",
               f"{stage}.trainer.logging_steps=1"]
    ov += [f"cold_sft.trainer.max_steps={sizes['sft_steps']}",
           f"cold_sft.trainer.per_device_train_batch_size={sizes['sft_batch']}",
           f"cold_sft.trainer.max_length={sizes['sft_length']}", "cold_sft.trainer.learning_rate=1e-5",
           "cold_sft.trainer.warmup_steps=0",
           f"reasoning_rl.trainer.max_steps={sizes['grpo_steps']}",
           f"reasoning_rl.trainer.num_generations={sizes['num_generations']}",
           f"reasoning_rl.trainer.per_device_train_batch_size={sizes['grpo_prompts'] * sizes['num_generations']}",
           f"reasoning_rl.trainer.max_completion_length={sizes['completion_length']}",
           "reasoning_rl.trainer.learning_rate=1e-6"]
    return ov


def model_section(c: Check, sizes: dict, work: Path, tokenizer_dir: Path) -> dict:
    """The random real-size model on disk, the long training rows, and r1pipe's base stage over them."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from r1pipe.tasks import arithmetic

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = -(-len(tok) // 64) * 64
    config = Qwen2Config(vocab_size=vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         **sizes["arch"])
    torch.manual_seed(0)
    with torch.device(c.device):
        model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(work / "random_model")
    tok.save_pretrained(work / "random_model")
    del model
    # SFT rows long enough to fill max_length (a long chain of worked sums); GRPO prompts as the task asks them
    pairs = arithmetic.problems(400, seed=5)
    text = " ".join(r["solution"] for r in arithmetic.records(pairs, with_solution=True))
    chars = 4 * sizes["sft_length"]  # SmolLM2's tokenizer: ~2-3 characters a token on this text
    sft = [{"prompt": f"Add these up, one after another (#{i}).", "solution": text[(i * 97) % 2000:][:chars],
            "answer": "0"} for i in range(sizes["sft_steps"] * sizes["sft_batch"])]
    grpo = [{"prompt": arithmetic.prompt(a, b), "answer": str(a + b)}
            for a, b in arithmetic.problems(sizes["grpo_steps"] * sizes["grpo_prompts"], seed=6)]
    for name, rows in (("sft.jsonl", sft), ("grpo.jsonl", grpo)):
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    wall, _ = c.run([*R1PIPE, "run", "--stage", "base", *_conf(c, sizes, work)], timeout=c.timeout())
    return {"architecture": "Qwen2.5-0.5B (random init)" if sizes["arch"] is QWEN25_05B else "toy Qwen2",
            "vocab_size": vocab, "parameters": params, "base_stage_wall_s": round(wall, 1)}


def _train_figures(kind: str, metrics_path: Path, train_s: float, params: int, per_step: int, beta: float) -> dict:
    """Tokens/s from TRL's own token counts, and model FLOP/s: 6N per trained token (forward and backward), 2N
    per generated token, 2N per token for GRPO's reference forward when beta > 0. Attention's own FLOPs are not
    counted, so the share of peak is a lower bound (at 2,048 tokens they add ~20% to the 6N)."""
    logs = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    tokens = max((r["num_tokens"] for r in logs if "num_tokens" in r), default=0)
    gen = sum(r["completions/mean_length"] for r in logs if "completions/mean_length" in r) * per_step
    per_token = 6 + (2 if kind == "grpo" and beta > 0 else 0)
    flops = per_token * params * tokens + 2 * params * gen
    return {"tokens": int(tokens), "generated_tokens": int(gen), "tokens_per_s": round(tokens / train_s),
            "model_tflops": round(flops / train_s / 1e12, 2)}


def train_section(c: Check, kind: str, sizes: dict, work: Path, params: int, peak_tflops: float) -> dict:
    """One stage through r1pipe and the same trainer called directly, taking turns (the direct one first, so
    r1pipe's warm file cache favours neither), repeated while the section's share of the budget allows."""
    from bench.bench import direct_spec
    from r1pipe import config

    stage = "cold_sft" if kind == "sft" else "reasoning_rl"
    parent = "base"
    ov = _conf(c, sizes, work)
    if kind == "grpo":
        ov.append("reasoning_rl.init=base")  # from the random model itself: no cold_sft needed
    stage_cfg = config.stage_config(config.load(ov), stage)
    direct_dir = work / "direct" / kind
    spec_path, trainer = direct_spec(kind, stage, stage_cfg, work / "run" / parent / "model", direct_dir)
    per_step = trainer["per_device_train_batch_size"] * trainer.get("gradient_accumulation_steps", 1)
    share = c.share(kind)
    deadline = time.time() + share if share else None
    rounds: list[dict] = []
    while True:
        rnd = {}
        wall, out = c.run([sys.executable, ROOT / "bench" / "direct_trl.py", kind, spec_path], timeout=c.timeout())
        d = json.loads(out.split("DIRECT ")[-1].splitlines()[0])
        rnd["direct"] = {"wall_s": round(wall, 1), "train_s": round(d["train_runtime_s"], 2),
                         "train_loss": d["train_loss"], "peak_gpu_mb": d.get("peak_gpu_mb")}
        wall, _ = c.run([*R1PIPE, "run", "--stage", stage, "--force", *ov], timeout=c.timeout())
        m = json.loads((work / "run" / stage / "manifest.json").read_text())
        train_s = m["metrics"]["train_runtime_s"]
        rnd["r1pipe"] = {"wall_s": round(wall, 1), "train_s": round(train_s, 2), "train_loss": m["metrics"]["train_loss"],
                         "peak_gpu_mb": m["resources"].get("peak_gpu_mb"), "steps": m["metrics"]["global_step"],
                         **_train_figures(kind, work / "run" / stage / "metrics.jsonl", train_s, params, per_step,
                                          float(trainer.get("beta", 0.0)))}
        rounds.append(rnd)
        c.say(f"{kind}: r1pipe {rnd['r1pipe']['wall_s']}s (train {rnd['r1pipe']['train_s']}s), "
              f"direct {rnd['direct']['wall_s']}s (train {rnd['direct']['train_s']}s)")
        took = sum(r["wall_s"] for r in rnd.values())
        if not deadline or time.time() + took > deadline or len(rounds) >= 3:
            break
    med = lambda who, key: statistics.median(r[who][key] for r in rounds)  # noqa: E731
    r1 = rounds[-1]["r1pipe"]
    return {
        "stage": stage, "rounds": rounds, "steps": r1["steps"],
        "per_step": (f"{per_step} completions of {trainer['max_completion_length']} tokens at most"
                     if kind == "grpo" else f"{per_step} rows of at most {trainer['max_length']} tokens"),
        "tokens_per_s": r1["tokens_per_s"], "model_tflops": r1["model_tflops"],
        "share_of_peak": round(r1["model_tflops"] / peak_tflops, 3) if peak_tflops else None,
        "peak_gpu_mb": r1["peak_gpu_mb"], "direct_peak_gpu_mb": rounds[-1]["direct"]["peak_gpu_mb"],
        "wall_ratio": round(med("r1pipe", "wall_s") / med("direct", "wall_s"), 3),
        "train_ratio": round(med("r1pipe", "train_s") / med("direct", "train_s"), 3),
    }


def generation_section(c: Check, sizes: dict, work: Path) -> dict:
    """r1pipe's engine (batched across prompts, left-padded) vs one `generate` per prompt with
    num_return_sequences=k, both sampling (T=0.6, top-p 0.95) in bf16 autocast from the same float32 model;
    the loop on the first loop_prompts prompts (its rate is per prompt). Tokens counted by re-tokenizing."""
    import torch

    from bench.bench import _generated_tokens, generate_loop
    from r1pipe import models
    from r1pipe.generation import Sampling, generate
    from r1pipe.tasks import arithmetic

    model_dir = work / "run" / "base" / "model"
    tok = models.load_tokenizer(model_dir)
    model = models.load_causal_lm(model_dir).to(c.device).eval()
    turns = [[{"role": "user", "content": arithmetic.prompt(a, b)}]
             for a, b in arithmetic.problems(sizes["gen_prompts"], seed=7)]
    sampling = Sampling(n=sizes["gen_k"], temperature=0.6, top_p=0.95, max_new_tokens=sizes["gen_max_new_tokens"],
                        batch_size=256, seed=0)
    dtype = torch.bfloat16 if c.device == "cuda" else torch.float32
    out = {"prompts": len(turns), "loop_prompts": sizes["loop_prompts"], "k": sizes["gen_k"],
           "max_new_tokens": sizes["gen_max_new_tokens"]}
    with torch.autocast(c.device, dtype=dtype, enabled=c.device == "cuda"):
        generate(model, tok, turns[:2], Sampling(max_new_tokens=4))  # first-call costs out of the figures
        for name, fn, n_prompts in (("engine", lambda: generate(model, tok, turns, sampling), len(turns)),
                                    ("loop", lambda: generate_loop(model, tok, turns[: sizes["loop_prompts"]], sampling),
                                     sizes["loop_prompts"])):
            if c.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            outputs = fn()
            if c.device == "cuda":
                torch.cuda.synchronize()
            s = time.perf_counter() - t0
            tokens = _generated_tokens(tok, outputs)
            out[name] = {"s": round(s, 2), "samples_per_s": round(n_prompts * sizes["gen_k"] / s, 2),
                         "tokens_per_s": round(tokens / s, 1)}
            c.say(f"generation {name}: {out[name]}")
    out["speedup_tokens_per_s"] = round(out["engine"]["tokens_per_s"] / out["loop"]["tokens_per_s"], 2)
    if c.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def decode_section(c: Check, sizes: dict, tokenizer_dir: Path) -> dict:
    """Milliseconds per decoded token step of GRPO-style rollouts (one sample per prompt, T=1, no top-p, no end
    of turn: random weights), all warmed up first, then two rounds in opposite orders (the faster of each's two
    is reported): r1pipe's decoding loop as GRPO rollouts run it
    (float32 weights inside one bf16 autocast region), the same loop on a bfloat16 copy of the weights, and
    transformers' `generate` both ways. Says where a rollout's time goes when decoding is launch-bound."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from r1pipe.generation import Sampling, chat_prompts, decode
    from r1pipe.tasks import arithmetic

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    config = Qwen2Config(vocab_size=-(-len(tok) // 64) * 64, **sizes["arch"])
    torch.manual_seed(0)
    with torch.device(c.device):
        fp32 = Qwen2ForCausalLM(config).eval()
    bf16 = Qwen2ForCausalLM(config).to(device=c.device, dtype=torch.bfloat16).eval()
    bf16.load_state_dict(fp32.state_dict())
    batch, steps = sizes["grpo_prompts"] * sizes["num_generations"], sizes["gen_max_new_tokens"]
    turns = [[{"role": "user", "content": arithmetic.prompt(a, b)}] for a, b in arithmetic.problems(batch, seed=8)]
    tok.padding_side = "left"
    enc = tok(chat_prompts(tok, turns), return_tensors="pt", padding=True, add_special_tokens=False).to(c.device)
    no_eos = [-1]  # every row decodes all steps: the same work for every contender
    amp = dict(device_type=c.device, dtype=torch.bfloat16, enabled=c.device == "cuda")

    def engine(model, autocast):
        def go(n):
            with torch.no_grad(), torch.autocast(**{**amp, "enabled": amp["enabled"] and autocast}):
                decode(model, enc["input_ids"], enc["attention_mask"], Sampling(temperature=1.0, max_new_tokens=n), no_eos)
        return go

    def hf(model, autocast):
        def go(n):
            with torch.no_grad(), torch.autocast(**{**amp, "enabled": amp["enabled"] and autocast}):
                model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=n,
                               min_new_tokens=n, pad_token_id=tok.pad_token_id)
        return go

    contenders = {"r1pipe loop, fp32 weights, bf16 autocast (GRPO rollouts)": engine(fp32, True),
                  "r1pipe loop, bf16 weights": engine(bf16, False),
                  "transformers generate, fp32 weights, bf16 autocast": hf(fp32, True),
                  "transformers generate, bf16 weights": hf(bf16, False)}
    sync = torch.cuda.synchronize if c.device == "cuda" else (lambda: None)
    out = {"batch": batch, "steps": steps, "rounds": {name: [] for name in contenders}}
    for go in contenders.values():
        go(4)  # warm-up: first-call costs (kernel loading, allocator growth) out of every figure
    names = list(contenders)
    for order in (names, names[::-1]):  # twice, the second time in reverse: no contender always goes first
        for name in order:
            sync()
            t0 = time.perf_counter()
            contenders[name](steps)
            sync()
            out["rounds"][name].append(round((time.perf_counter() - t0) / steps * 1000, 2))
            c.say(f"decode {name}: {out['rounds'][name][-1]} ms/step")
    out["ms_per_step"] = {name: min(ms) for name, ms in out["rounds"].items()}  # the less disturbed of two
    return out


def chain_section(c: Check, sizes: dict, work: Path) -> dict:
    """The tiny chain on the device with the time left; seconds per stage from each finished stage's manifest
    (a stage an earlier call finished is marked: the run skips it)."""
    run_dir = work / "chain"
    cmd = [*R1PIPE, "run-all", f"conf={sizes['chain_conf']}", f"run.dir={run_dir}"]
    if sizes["chain_to"]:
        cmd += ["--to", sizes["chain_to"]]
    timeout = max(10.0, c.left() - 10) if c.budget else None
    finished = True
    try:
        c.run(cmd, timeout=timeout)
    except TimeoutError:
        finished = False
    stages = {}
    for mf in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(mf.read_text())
        ev = {}
        eval_path = mf.parent / "eval.json"
        if eval_path.exists():
            e = json.loads(eval_path.read_text())
            ev = {k: e[k] for k in ("greedy_accuracy", "pass@1", "seconds") if k in e}
        stages[m["stage"]] = {"duration_s": m["duration_s"], "peak_gpu_mb": m["resources"].get("peak_gpu_mb"),
                              "train_runtime_s": (m.get("metrics") or {}).get("train_runtime_s"), **ev,
                              # finished by an earlier call in this work directory: skipped now, not timed now
                              "earlier_call": mf.stat().st_mtime < c.t0}
    return {"conf": sizes["chain_conf"], "finished": finished, "stages": stages,
            "stages_s": round(sum(s["duration_s"] for s in stages.values()), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "runs" / "gpu-check"))
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check (0: no limit)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer files (default: .gpu-check/tokenizer, "
                    "else the fetched SmolLM2's)")
    ap.add_argument("--sections", default="env,matmul,model,sft,grpo,generation,decode,tiny_chain")
    args = ap.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    sizes = SIZES[device]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_CHECK_WORK") or args.out.parent / (args.out.name + "-work"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer or ROOT / ".gpu-check" / "tokenizer"
    if not (tokenizer / "tokenizer.json").exists():
        from r1pipe import fetch

        tokenizer = fetch.model_dir("smollm2")
    c = Check(args.out, device, sizes["budget"] if args.budget is None else args.budget)
    c.results["sizes"] = dict(sizes)
    c.results["work"] = str(work)
    wanted = args.sections.split(",")
    if "env" in wanted:
        c.section("env", env_section)
    mm = c.section("matmul", matmul_section, sizes["matmul_n"]) if "matmul" in wanted else {}
    model = c.section("model", model_section, sizes, work, tokenizer) if "model" in wanted else {}
    if model.get("status") == "ok":
        for kind in ("sft", "grpo"):
            if kind in wanted:
                c.section(kind, train_section, kind, sizes, work, model["parameters"], mm.get("peak_tflops"))
        if "generation" in wanted:
            c.section("generation", generation_section, sizes, work)
    if "decode" in wanted:
        c.section("decode", decode_section, sizes, tokenizer)
    if "tiny_chain" in wanted:
        c.section("tiny_chain", chain_section, sizes, work)
    c.results["total_s"] = round(time.time() - c.t0, 1)
    c.write()
    failed = [n for n, s in c.results["sections"].items() if s["status"] != "ok"]
    c.say(f"gpu_check: {len(c.results['sections']) - len(failed)} sections ok"
          + (f", failed: {', '.join(failed)}" if failed else "") + f"; {args.out / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
