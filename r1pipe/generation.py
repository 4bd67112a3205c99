"""The generation engine: batched, left-padded, n samples per prompt in one call, stops at end of turn.

One module serves evaluation, rejection sampling and distillation data. Prompts are chat user turns; they
are sorted by length so each batch pads little, and the results come back in the caller's order.

Decoding follows r1pipe's `Sampling` and nothing else. The engine's own loop (`decode`: greedy or temperature
+ top-p, a KV cache, finished rows leaving the batch) reads no generation_config at all; budget forcing's
`model.generate` calls get a complete GenerationConfig built from it (`generation_settings`), with the model's
own generation_config reduced to its token ids meanwhile, since transformers fills any setting left unset from
it. vLLM gets the same settings, told to load no generation_config of the model.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any

from r1pipe.errors import R1Error
from r1pipe.manifest import read_jsonl, write_jsonl_atomic
from r1pipe.rewards import response_prefix


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 256  # sequences per forward pass (prompts x n)
    seed: int = 0
    # s1's budget forcing (arXiv 2501.19393), off when None: see generate_budget_forced.
    max_think_tokens: int | None = None
    min_think_tokens: int | None = None
    max_waits: int = 0

    @property
    def budget_forced(self) -> bool:
        return bool(self.max_think_tokens) or (bool(self.min_think_tokens) and self.max_waits > 0)


THINK_END, WAIT = "</think>", "Wait"


def generation_settings(sampling: Sampling) -> dict[str, Any]:
    """Every decoding setting a generate() call gets for `sampling`, from it alone (eval.json records these).
    Neutral values are spelled out: no top-k cut, no repetition penalty, no n-gram ban, no minimum length."""
    greedy = sampling.temperature <= 0
    out: dict[str, Any] = dict(do_sample=not greedy, num_beams=1, max_new_tokens=sampling.max_new_tokens,
                               min_new_tokens=0, num_return_sequences=sampling.n, repetition_penalty=1.0,
                               no_repeat_ngram_size=0)
    if not greedy:  # the warpers act only when sampling (transformers warns when greedy decoding names them)
        out.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    return out


def vllm_settings(sampling: Sampling, eos: int) -> dict[str, Any]:
    """generation_settings as vLLM's SamplingParams: the same decoding, vLLM's neutral values spelled out."""
    s = generation_settings(sampling)
    return dict(n=s["num_return_sequences"], temperature=s.get("temperature", 0.0), top_p=s.get("top_p", 1.0),
                top_k=s.get("top_k", 0), min_p=0.0, repetition_penalty=s["repetition_penalty"], presence_penalty=0.0,
                frequency_penalty=0.0, min_tokens=s["min_new_tokens"], max_tokens=s["max_new_tokens"],
                seed=sampling.seed, stop_token_ids=[eos], skip_special_tokens=True)


def _config(sampling: Sampling, eos, pad, **extra):
    from transformers import GenerationConfig

    return GenerationConfig(**generation_settings(sampling), eos_token_id=eos, pad_token_id=pad, **extra)


@contextlib.contextmanager
def _own_settings_only(model):
    """The model's generation_config holds only its token ids while r1pipe generates (see the module doc)."""
    from r1pipe.models import clean_generation_config

    saved = model.generation_config
    clean_generation_config(model)
    try:
        yield
    finally:
        model.generation_config = saved


def chat_prompts(tokenizer, user_turns: list) -> list[str]:
    """The prompt text for each question: a user turn (str), or the turns that ask it (`data.ask(row)`: a
    system prompt, the user turn, and the task's `response_prefix` as the start of the assistant's turn, which
    the model then continues, as TRL renders a prompt that ends with an assistant message)."""
    out = []
    for u in user_turns:
        turns = [{"role": "user", "content": u}] if isinstance(u, str) else u
        prefilled = turns[-1]["role"] == "assistant"
        out.append(tokenizer.apply_chat_template(turns, add_generation_prompt=not prefilled,
                                                 continue_final_message=prefilled, tokenize=False))
    return out


def generate(model, tokenizer, user_turns: list[str], sampling: Sampling, desc: str = "generating") -> list[list[str]]:
    """`sampling.n` completions for each user turn, decoded without special tokens (tags stay: they are
    ordinary tokens)."""
    if sampling.budget_forced:
        return generate_budget_forced(model, tokenizer, user_turns, sampling, desc)
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    texts = chat_prompts(tokenizer, user_turns)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_batch = max(1, sampling.batch_size // sampling.n)
    out: list[list[str]] = [[] for _ in texts]
    tokenizer.padding_side = "left"
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()
    columns = [TextColumn(desc), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress, torch.inference_mode(), _own_settings_only(model):
        task = progress.add_task(desc, total=len(texts) * sampling.n, rate="")
        done, t0 = 0, time.time()
        for start in range(0, len(order), per_batch):
            idx = order[start : start + per_batch]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            decoded = tokenizer.batch_decode(decode(model, enc["input_ids"], enc["attention_mask"], sampling, eos_ids),
                                             skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = [response_prefix(user_turns[i]) + d for d in decoded[j * sampling.n : (j + 1) * sampling.n]]
            done += len(idx) * sampling.n
            progress.update(task, completed=done, rate=f"{done / max(time.time() - t0, 1e-9):.0f} samples/s")
    model.train(was_training)
    return out


NUCLEUS_CANDIDATES = 64  # top-p looks at the most likely tokens first; the full vocabulary only if they fall short


def decode(model, input_ids, attention_mask, sampling: Sampling, eos_ids: list[int]) -> list[list[int]]:
    """`sampling.n` continuations of each left-padded prompt row (rows i*n .. i*n+n-1 belong to prompt i), each
    up to and including its end of turn: greedy, or temperature + nucleus (top-p) sampling, nothing else.

    What `model.generate` would compute with r1pipe's settings, at a fraction of its cost on a CPU, where a
    batch of 256 spends more time around the model than in it:
    - the prompt is encoded once, then its KV cache copied n times (generate encodes it n times);
    - a row that ends its turn leaves the batch with its cache rows, so the rest decode a smaller batch;
    - top-p takes the most likely NUCLEUS_CANDIDATES tokens by partial selection and samples among them when
      they hold top_p of the mass (always, at R1's T=0.6, p=0.95 on a trained model), instead of sorting and
      sampling the whole 49k-token vocabulary of every row at every step; rows where they do not fall back to
      the full sort. The nucleus is the same set either way, so the distribution is exactly top-p's.
    """
    import torch
    from transformers import DynamicCache

    n, steps = sampling.n, sampling.max_new_tokens
    eos = torch.tensor(eos_ids, device=input_ids.device)
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1].float()
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, attention_mask = logits.repeat_interleave(n, 0), attention_mask.repeat_interleave(n, 0)
        positions = positions.repeat_interleave(n, 0)
    rows = logits.shape[0]
    alive = torch.arange(rows, device=logits.device)  # which output row each batch row is
    new = torch.full((rows, steps), -1, dtype=torch.long, device=logits.device)
    nxt_pos = positions[:, -1:] + 1
    for step in range(steps):
        token = _pick(logits, sampling)
        new[alive, step] = token
        running = ~torch.isin(token, eos)
        if step == steps - 1 or not running.any():
            break
        if not running.all():  # finished rows leave the batch, cache included
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, token, attention_mask, nxt_pos = alive[keep], token[keep], attention_mask[keep], nxt_pos[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(alive), 1)], dim=1)
        logits = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=nxt_pos,
                       cache=cache, use_cache=True).logits[:, -1].float()
        nxt_pos = nxt_pos + 1
    out = []
    for row in new.tolist():
        row = [t for t in row if t >= 0]
        out.append(row)
    return out


def _pick(logits, sampling: Sampling):
    """The next token of each row: argmax, or a sample from the temperature-scaled top-p nucleus."""
    import torch

    if sampling.temperature <= 0:
        return logits.argmax(-1)
    scaled = logits / sampling.temperature
    if sampling.top_p >= 1.0:
        return torch.multinomial(torch.softmax(scaled, -1), 1).squeeze(1)
    lse = torch.logsumexp(scaled, -1, keepdim=True)
    k = min(NUCLEUS_CANDIDATES, scaled.shape[-1])
    top, idx = scaled.topk(k, dim=-1)  # sorted, most likely first
    probs = (top - lse).exp()
    short = probs.sum(-1) < sampling.top_p  # the candidates hold too little mass: sort the whole vocabulary
    if short.any():
        full, full_idx = scaled[short].sort(dim=-1, descending=True)
        token = torch.empty(scaled.shape[0], dtype=torch.long, device=scaled.device)
        token[short] = _nucleus((full - lse[short]).exp(), full_idx, sampling.top_p)
        if (~short).any():
            token[~short] = _nucleus(probs[~short], idx[~short], sampling.top_p)
        return token
    return _nucleus(probs, idx, sampling.top_p)


def _nucleus(probs, idx, top_p: float):
    """Sample from the smallest most-likely prefix of `probs` (sorted, descending) holding top_p of the mass:
    a token is kept when the mass before it is under top_p (as transformers' TopPLogitsWarper)."""
    import torch

    before = probs.cumsum(-1) - probs
    kept = torch.where(before < top_p, probs, torch.zeros_like(probs))
    return idx.gather(1, torch.multinomial(kept, 1)).squeeze(1)


def budget_step(piece: str, n_tokens: int, ended: bool, used: int, waits: int,
                sampling: Sampling) -> tuple[str, int, int, str]:
    """One thinking phase's outcome for one sequence: (text to append, tokens used, waits used, next phase).

    `piece` is what the model just generated in `n_tokens` tokens (generation stops right after `</think>`),
    `ended` whether it ended its turn. Next phase: "think" (a Wait was appended), "answer" (the think part is
    closed) or "done"."""
    used += n_tokens
    if THINK_END in piece:
        head = piece.split(THINK_END, 1)[0]
        if sampling.min_think_tokens and used < sampling.min_think_tokens and waits < sampling.max_waits:
            return head + WAIT, used, waits + 1, "think"  # suppress the end of thinking: keep going
        return head + THINK_END, used, waits, "answer"
    if ended or used >= sampling.max_new_tokens:
        return piece, used, waits, "done"  # no think block at all, or out of tokens altogether
    return piece + THINK_END, used + 1, waits, "answer"  # the thinking cap: close it and make it answer


def generate_budget_forced(model, tokenizer, user_turns: list[str], sampling: Sampling,
                           desc: str = "generating (budget forcing)") -> list[list[str]]:
    """s1's budget forcing, in phases of ordinary `generate` calls on the growing text:

    - think: generate until `</think>`, the end of turn, or the thinking cap (`max_think_tokens`). An end of
      thinking before `min_think_tokens` is cut and replaced by "Wait" (at most `max_waits` times), so the
      model goes on thinking. At the cap, `</think>` is appended: the model must answer now.
    - answer: after `</think>`, generate to the end of turn with the tokens left of `max_new_tokens` (at
      least 16, so a forced answer always has room).
    Each sample is its own sequence here (n copies of a prompt diverge after the first phase)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    prompts = chat_prompts(tokenizer, user_turns)
    jobs = [i for i in range(len(prompts)) for _ in range(sampling.n)]
    text = [""] * len(jobs)
    used = [0] * len(jobs)  # tokens generated so far (thinking included)
    waits = [0] * len(jobs)
    phase = ["think"] * len(jobs)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    tokenizer.padding_side = "left"
    torch.manual_seed(sampling.seed)
    was_training = model.training
    model.eval()

    def run(idx: list[int], limits: list[int], stop: bool) -> list[tuple[str, int, bool]]:
        """Continue jobs `idx`; returns (new text, its token count, ended with end of turn) for each."""
        order = sorted(range(len(idx)), key=lambda j: len(prompts[jobs[idx[j]]]) + len(text[idx[j]]))
        results: dict[int, tuple[str, int, bool]] = {}
        for start in range(0, len(order), max(1, sampling.batch_size)):
            part = order[start : start + sampling.batch_size]
            enc = tokenizer([prompts[jobs[idx[j]]] + text[idx[j]] for j in part], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            config = _config(replace(sampling, n=1, max_new_tokens=max(limits[j] for j in part)), eos,
                             tokenizer.pad_token_id, stop_strings=[THINK_END] if stop else None)
            seqs = model.generate(**enc, generation_config=config, **(dict(tokenizer=tokenizer) if stop else {}))
            new = seqs[:, enc["input_ids"].shape[1] :]
            for row, j in enumerate(part):
                ids = new[row].tolist()[: limits[j]]  # the batch ran to its longest limit; each job keeps its own
                stops = [k for k, t in enumerate(ids) if t in eos_ids or t == tokenizer.pad_token_id]
                n = stops[0] if stops else len(ids)  # padding follows a sequence that stopped early
                ended = bool(stops) and ids[n] in eos_ids
                results[j] = (tokenizer.decode(ids[:n], skip_special_tokens=True), n, ended)
        out = [results[j] for j in range(len(idx))]
        return out

    with Progress(TextColumn(desc), BarColumn(), MofNCompleteColumn(), transient=True) as progress, \
            torch.inference_mode(), _own_settings_only(model):
        task = progress.add_task(desc, total=len(jobs))
        while any(p == "think" for p in phase):
            idx = [j for j, p in enumerate(phase) if p == "think"]
            cap = sampling.max_think_tokens or sampling.max_new_tokens
            limits = [max(1, min(cap, sampling.max_new_tokens) - used[j]) for j in idx]
            for j, (piece, n, ended) in zip(idx, run(idx, limits, stop=True)):
                add, used[j], waits[j], phase[j] = budget_step(piece, n, ended, used[j], waits[j], sampling)
                text[j] += add
                if phase[j] == "done":
                    progress.advance(task)
        idx = [j for j, p in enumerate(phase) if p == "answer"]
        if idx:
            limits = [max(16, sampling.max_new_tokens - used[j]) for j in idx]
            for j, (piece, _, _) in zip(idx, run(idx, limits, stop=False)):
                text[j] += piece
                phase[j] = "done"
            progress.advance(task, len(idx))
    model.train(was_training)
    out: list[list[str]] = [[] for _ in prompts]
    for j, i in enumerate(jobs):
        out[i].append(response_prefix(user_turns[i]) + text[j])
    return out


# ----------------------------------------------------------------------------------------------------------
# Engines and resumable, sharded generation (rejection sampling, distillation traces).


def on_accelerator(model):
    """The model on this process's GPU when there is one, else as it is. Generation outside a trainer (the
    difficulty filter, the held-out general answers, sampling) runs where training runs: a model left on the CPU
    of a GPU machine samples at CPU speed, which is how the difficulty filter first ran on a GPU."""
    import os

    import torch

    if torch.cuda.is_available() and model.device.type == "cpu":
        return model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")  # a launched rank's own GPU
    return model


def make_engine(model_dir, backend: str = "transformers", dtype: str = "float32", trust_remote_code: bool = False):
    """A callable (user_turns, sampling) -> completions for the chosen backend: "transformers" (CPU or GPU) or
    "vllm" (GPU, optional extra)."""
    if backend == "transformers":
        from r1pipe.models import load_causal_lm, load_tokenizer

        loaded: list = []  # on first use: a rerun whose shards are all on disk never loads the model

        def run_hf(turns, sampling):
            if not loaded:
                model = load_causal_lm(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
                loaded.extend([on_accelerator(model), load_tokenizer(model_dir, trust_remote_code=trust_remote_code)])
            return generate(loaded[0], loaded[1], turns, sampling)

        return run_hf
    if backend == "vllm":
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise R1Error(
                "generation backend vllm was asked for, but vLLM is not installed",
                hint="pip install 'r1pipe[vllm]' on a GPU machine, or set backend: transformers",
            ) from e
        from r1pipe.models import load_tokenizer

        tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
        eos = tok.convert_tokens_to_ids(tok.eos_token)
        engines: list = []  # on first use, as above

        def run(turns, sampling):
            if sampling.budget_forced:
                raise R1Error("budget forcing is implemented for the transformers backend only",
                              hint="set eval.backend=transformers, or turn eval.budget off")
            if not engines:  # generation_config="vllm": vLLM's defaults, not the model's generation_config.json
                engines.append(LLM(model=str(model_dir), dtype=dtype, trust_remote_code=trust_remote_code,
                                   load_format="safetensors", generation_config="vllm"))
            llm = engines[0]
            params = SamplingParams(**vllm_settings(sampling, eos))
            outs = llm.generate(chat_prompts(tok, turns), params, use_tqdm=True)
            return [[response_prefix(t) + o.text for o in out.outputs] for t, out in zip(turns, outs)]

        return run
    raise R1Error(f"unknown generation backend {backend!r}", hint="use transformers or vllm")


def generate_sharded(engine, user_turns: list[str], sampling: Sampling, shard_dir, shard_size: int, log=None):
    """Generate in shards of `shard_size` prompts, each saved as it finishes (write, then rename). A rerun
    loads the shards on disk and generates only the rest; shard i is seeded with seed + i, so an interrupted
    run produces exactly what an uninterrupted one would."""
    from pathlib import Path

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(user_turns) // shard_size))
    on_disk = sum((shard_dir / f"shard-{i:05d}.jsonl").exists() for i in range(n_shards))
    if log and on_disk:
        log.info("generation: %d of %d shards already on disk, generating the rest", on_disk, n_shards)
    out: list[list[str]] = []
    t0, generated = time.time(), 0
    for i in range(n_shards):
        path = shard_dir / f"shard-{i:05d}.jsonl"
        chunk = user_turns[i * shard_size : (i + 1) * shard_size]
        if path.exists():
            rows = read_jsonl(path)
            if [r["prompt"] for r in rows] != chunk:
                from r1pipe.errors import R1Error

                raise R1Error(f"{path} holds other prompts than this run's", hint=f"delete {shard_dir} and rerun")
            out.extend(r["completions"] for r in rows)
            continue
        completions = engine(chunk, replace(sampling, seed=sampling.seed + i))
        write_jsonl_atomic(path, [{"prompt": p, "completions": c} for p, c in zip(chunk, completions)])
        out.extend(completions)
        generated += len(chunk) * sampling.n
        if log:
            rate = generated / max(time.time() - t0, 1e-9)
            log.info("generation: shard %d/%d done (%.0f samples/s)", i + 1, n_shards, rate)
    return out, generated / max(time.time() - t0, 1e-9) if generated else None


# ----------------------------------------------------------------------------------------------------------
# GRPO's rollouts through the engine's loop (TRL's rollout_func), where TRL would call model.generate.


def grpo_rollout(args):
    """A TRL `rollout_func` that samples each prompt's completion with `decode` (temperature + top-p, as
    GRPOConfig asks) from the policy being trained, under the trainer's autocast: on a CPU, TRL's `model.generate` spent
    62% of a SmolLM2 GRPO step sampling, mostly around the model. None where the config asks for what the
    loop does not do (vLLM, top-k, min-p, a repetition penalty, extra generation kwargs): TRL's own path then.

    Rows arrive as TRL's sampler orders them (each prompt num_generations times); each gets one completion,
    returned up to and including its end of turn, as TRL's own path returns it."""
    unsupported = (args.use_vllm or (args.top_k or 0) > 0 or args.min_p is not None or args.repetition_penalty != 1.0
                   or args.generation_kwargs)
    if unsupported:
        return None
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental; r1pipe tests it
    sampling = Sampling(n=1, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_completion_length)

    def rollout(prompts, trainer):
        import torch

        zero = getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", 0)
        if getattr(trainer, "is_fsdp_enabled", False) or zero == 3:
            from r1pipe.errors import R1Error

            raise R1Error("rollouts: engine samples from the whole model, which ZeRO-3 and FSDP shard across ranks",
                          hint="set rollouts=trl for this stage under a sharding launcher (or use_vllm)")
        tokenizer = trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in chat_prompts(tokenizer, prompts)]
        width = max(len(ids) for ids in prompt_ids)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids], device=model.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=model.device)
        was_training = model.training
        model.eval()
        try:
            # Under the trainer's mixed precision, as its forward passes run: and as ONE autocast region, so
            # each weight is cast to bf16 once per rollout, not once per decoded token (a region's cast cache
            # lives until its outermost exit; the trainer wraps every forward in a region of its own)
            with torch.no_grad(), trainer.accelerator.autocast():
                completions = decode(model, input_ids, mask, sampling, list(trainer.eos_token_ids))
        finally:
            model.train(was_training)
        return {"prompt_ids": prompt_ids, "completion_ids": completions, "logprobs": None}

    return rollout
