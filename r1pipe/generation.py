"""The generation engine: batched, left-padded, n samples per prompt in one call, stops at end of turn.

One module serves evaluation, rejection sampling and distillation data. Prompts are chat user turns; they
are sorted by length so each batch pads little, and the results come back in the caller's order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 256  # sequences per forward pass (prompts x n)
    seed: int = 0


def chat_prompts(tokenizer, user_turns: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": u}], add_generation_prompt=True, tokenize=False)
        for u in user_turns
    ]


def generate(model, tokenizer, user_turns: list[str], sampling: Sampling, desc: str = "generating") -> list[list[str]]:
    """`sampling.n` completions for each user turn, decoded without special tokens (tags stay: they are
    ordinary tokens)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    texts = chat_prompts(tokenizer, user_turns)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_batch = max(1, sampling.batch_size // sampling.n)
    out: list[list[str]] = [[] for _ in texts]
    tokenizer.padding_side = "left"
    greedy = sampling.temperature <= 0
    gen_kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        num_return_sequences=sampling.n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
    )
    if not greedy:
        gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    columns = [TextColumn(desc), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress, torch.inference_mode():
        task = progress.add_task(desc, total=len(texts) * sampling.n, rate="")
        done = 0
        import time

        t0 = time.time()
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            seqs = model.generate(**enc, **gen_kwargs)
            decoded = tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = decoded[j * sampling.n : (j + 1) * sampling.n]
            done += len(idx) * sampling.n
            progress.update(task, completed=done, rate=f"{done / max(time.time() - t0, 1e-9):.0f} samples/s")
    model.train(was_training)
    return out
