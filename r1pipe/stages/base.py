"""base: resolve the model every other stage starts from.

    r1pipe run --stage base conf=tiny

Either a real model (a hub id or a local path: copied into `model/` with its id and revision recorded, so the
run's lineage pins exact weights) or, when `model` is null as in the tiny preset, a byte-level BPE tokenizer
trained on the task's text and a small Qwen2-style model built from config, both saved with save_pretrained.
`trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

from typing import Any

from r1pipe import data, models
from r1pipe.errors import R1Error
from r1pipe.stages import Source

NAME = "base"
VERSION = 2  # bump when a change alters what this stage computes (it is part of the fingerprint)
PARENTS: tuple[str, ...] = ()
OUTPUTS = ("model",)
# the tokenizer's corpus, read only when building the tiny model (not training data: never decontaminated)
SOURCES = (Source("tokenizer.corpus", ("prompt", "solution"), task=False, when=lambda cfg: not cfg.get("model")),)


def models_named(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"model": cfg.get("model")}


def validate(cfg: dict[str, Any], world_size: int = 1) -> None:
    """A local model directory that is not there fails before any stage runs (with the fetch command when it
    is one r1pipe can fetch)."""
    if cfg.get("model"):
        models.missing_local_dir(cfg["model"])
    if cfg.get("tags", "tokens") not in ("tokens", "text"):
        raise R1Error(f"base.tags must be tokens or text, got {cfg['tags']!r}")


def run(ctx) -> dict[str, Any]:
    from r1pipe.training import model_card, save_model

    cfg = ctx.config
    out = ctx.output("model")
    if cfg.get("model"):
        remote, rev = cfg["trust_remote_code"], cfg.get("revision")
        tok = models.load_tokenizer(cfg["model"], trust_remote_code=remote, revision=rev, check=False)
        model = models.load_causal_lm(cfg["model"], dtype=cfg["dtype"], trust_remote_code=remote, revision=rev,
                                      clean_generation=False)
        # The saved model's generation_config keeps only its token ids. The source's sampling recipe (Qwen2.5-
        # Instruct: repetition_penalty, top_k 20, top_p 0.8, temperature 0.7) is not what r1pipe trains or
        # evaluates with, so a plain `model.generate()` of any r1pipe model decodes greedily, as eval.json's
        # greedy numbers were measured, instead of silently applying a recipe nobody measured. Recorded below.
        ignored = models.clean_generation_config(model)
        changes, tags = models.prepare_for_r1(tok, model, tags=cfg.get("tags", "tokens"))
        summary = f"Base model `{cfg['model']}` (revision {cfg.get('revision') or 'default'}), copied by r1pipe."
        built = False
    else:
        rows = data.load_rows(cfg["tokenizer"]["corpus"], need=("prompt", "solution"), where="base.tokenizer.corpus")
        corpus = [_chat_text(r) for r in rows]
        tok = models.build_tokenizer(corpus, vocab_size=cfg["tokenizer"]["vocab_size"])
        model = models.build_model(tok, cfg["arch"], seed=ctx.seed)
        summary = "A small Qwen2-style model built from scratch by r1pipe's tiny preset (random weights)."
        built, changes, ignored = True, [], {}
        tags = {"mode": "tokens", "embedding_rows": "trained from scratch"}
    save_model(model, tok, out, model_card(NAME, {}, cfg, summary))
    return {
        "source": cfg.get("model") or "built",
        "revision": cfg.get("revision"),
        "built_from_scratch": built,
        "tokenizer_changes": changes,
        "tags": tags,  # how <think>/<answer> are written: one token each (new or spare rows) or text
        "generation_config_ignored": ignored,  # the source model's generation settings r1pipe never applies
        "parameters": models.count_parameters(model),
        "vocab_size": len(tok),
    }


def _chat_text(row: dict[str, str]) -> str:
    # Train the tokenizer on text shaped like what it will see: the chat template around each example.
    return f"<|im_start|>user\n{row['prompt']}<|im_end|>\n<|im_start|>assistant\n{row['solution']}<|im_end|>\n"
