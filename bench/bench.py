"""r1pipe benchmarks: medians over repeated runs, ratios measured side by side in one run.

    make bench            # writes bench/results.json and prints a markdown table for the README

Benchmarks, not tests: nothing here asserts a speed. These machines are noisy (2-5x slow-downs for tens of
seconds), so each comparison interleaves its contenders and reports the median of several repeats.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
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

    trained = ROOT / "runs" / "tiny" / "cold_sft" / "model"
    if (trained / "model.safetensors").exists():
        return models.load_tokenizer(trained), models.load_causal_lm(trained), "tiny cold_sft (trained)"
    rows = list(arithmetic.records(arithmetic.problems(500, seed=1)))
    tok = models.build_tokenizer([r["prompt"] + " " + r["solution"] for r in rows], vocab_size=300)
    arch = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True)
    return tok, models.build_model(tok, arch, seed=0), "tiny base (random weights)"


def bench_generation(repeats: int) -> dict:
    """The generation engine vs a plain loop calling generate once per prompt with num_return_sequences=k."""
    import torch

    from r1pipe.generation import Sampling, chat_prompts, generate
    from r1pipe.tasks import arithmetic

    tok, model, which = model_for_bench(Path("/tmp"))
    model.eval()
    prompts = [arithmetic.prompt(a, b) for a, b in arithmetic.problems(64, seed=11)]
    k, max_new = 4, 48
    sampling = Sampling(n=k, temperature=0.6, top_p=0.95, max_new_tokens=max_new, batch_size=256, seed=0)

    def engine():
        generate(model, tok, prompts, sampling)

    def plain_loop():
        tok.padding_side = "left"
        texts = chat_prompts(tok, prompts)
        with torch.inference_mode():
            for t in texts:
                enc = tok(t, return_tensors="pt", add_special_tokens=False)
                out = model.generate(**enc, do_sample=True, temperature=0.6, top_p=0.95, top_k=0,
                                     num_return_sequences=k, max_new_tokens=max_new,
                                     pad_token_id=tok.pad_token_id, eos_token_id=model.generation_config.eos_token_id)
                tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

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


def bench_cli(repeats: int) -> dict:
    """`r1pipe status` wall time, and whether it imported torch."""
    probe = ("import sys, time; t=time.perf_counter(); sys.argv=['r1pipe','status','conf=tiny'];"
             "from r1pipe.cli import main\ntry: main()\nexcept SystemExit: pass\n"
             "print('BENCH', time.perf_counter()-t, 'torch' in sys.modules)")
    walls, torch_imported = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout
        walls.append(time.perf_counter() - t0)
        torch_imported = "True" in out.split("BENCH")[-1]
    return {"status_wall_s": round(statistics.median(walls), 3), "status_imports_torch": torch_imported}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    results = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "generation": bench_generation(repeats),
        "cli": bench_cli(repeats),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    g, c = results["generation"], results["cli"]
    print(f"\n| benchmark ({results['date']}, {results['machine']}) | result |\n|---|---|")
    print(f"| generation engine, {g['prompts']} prompts x k={g['k']}, {g['max_new_tokens']} new tokens ({g['model']}) "
          f"| {g['engine_samples_per_s']} samples/s |")
    print(f"| plain loop, one `generate(num_return_sequences=k)` per prompt | {g['loop_samples_per_s']} samples/s |")
    print(f"| engine / loop (median of {g['repeats']}, interleaved) | **{g['speedup']}x** |")
    for key, val in g["engine_samples_per_s_by_setting"].items():
        print(f"| engine, {key} | {val} samples/s |")
    print(f"| `r1pipe status conf=tiny` | {c['status_wall_s']} s, torch imported: {c['status_imports_torch']} |")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
