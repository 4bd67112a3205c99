"""base: resolve the model every other stage starts from.

    r1pipe run --stage base conf=tiny

Either a real model (a hub id or a local path: copied into `model/` with its id and revision recorded, so the
run's lineage pins exact weights) or, when `model` is null as in the tiny preset, a byte-level BPE tokenizer
trained on the task's text and a small Qwen2-style model built from config, both saved with save_pretrained.
`trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

from typing import Any

NAME = "base"
VERSION = 2  # bump when a change alters what this stage computes (it is part of the fingerprint)
PARENTS: tuple[str, ...] = ()
OUTPUTS = ("model",)


def run(ctx) -> dict[str, Any]:
    from r1pipe import data, models
    from r1pipe.training import model_card, save_model

    cfg = ctx.config
    out = ctx.output("model")
    if cfg.get("model"):
        remote, rev = cfg["trust_remote_code"], cfg.get("revision")
        tok = models.load_tokenizer(cfg["model"], trust_remote_code=remote, revision=rev, check=False)
        model = models.load_causal_lm(cfg["model"], dtype=cfg["dtype"], trust_remote_code=remote, revision=rev)
        changes = models.prepare_for_r1(tok, model, tags=cfg.get("tags", "tokens"))
        summary = f"Base model `{cfg['model']}` (revision {cfg.get('revision') or 'default'}), copied by r1pipe."
        built = False
    else:
        rows = data.load_rows(cfg["tokenizer"]["corpus"], need=("prompt", "solution"), where="base.tokenizer.corpus")
        corpus = [_chat_text(r) for r in rows]
        tok = models.build_tokenizer(corpus, vocab_size=cfg["tokenizer"]["vocab_size"])
        model = models.build_model(tok, cfg["arch"], seed=ctx.seed)
        summary = "A small Qwen2-style model built from scratch by r1pipe's tiny preset (random weights)."
        built, changes = True, []
    save_model(model, tok, out, model_card(NAME, {}, cfg, summary))
    return {
        "source": cfg.get("model") or "built",
        "revision": cfg.get("revision"),
        "built_from_scratch": built,
        "tokenizer_changes": changes,
        "parameters": models.count_parameters(model),
        "vocab_size": len(tok),
    }


def _chat_text(row: dict[str, str]) -> str:
    # Train the tokenizer on text shaped like what it will see: the chat template around each example.
    return f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n{row['solution']}<|im_end|>\n"
