"""Models and tokenizers: build the tiny ones from scratch, load real ones safely.

Everything a stage saves is a plain Hugging Face directory (safetensors weights, tokenizer, chat template,
generation config) so `AutoModelForCausalLM.from_pretrained` reads it with no r1pipe code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1pipe import hub
from r1pipe.errors import R1Error
from r1pipe.hub import missing_local_dir, refuse_pickled_weights

log = logging.getLogger(__name__)

PAD, BOS_TURN, EOS_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Ordinary (not special) added tokens: GRPO decodes with skip_special_tokens=True, and the format reward must
# still see the tags.
R1_TAGS = ["<think>", "</think>", "<answer>", "</answer>"]

# ChatML with {% generation %} markers around the assistant turn, end-of-turn token inside, so SFT with
# assistant_only_loss learns to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# What a saved model directory carries: the same text without the markers, which are a transformers extension
# to Jinja2 (plain Jinja2, as llama.cpp and other serving stacks render templates, rejects the unknown tag).
# r1pipe's own loader puts the markers back for training (`load_tokenizer`).
SERVING_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def save_tokenizer(tokenizer, path) -> None:
    """save_pretrained with the serving template in place of the training one; the tokenizer is unchanged."""
    training = tokenizer.chat_template
    if training == CHAT_TEMPLATE:
        tokenizer.chat_template = SERVING_TEMPLATE
    try:
        tokenizer.save_pretrained(str(path))
    finally:
        tokenizer.chat_template = training


def build_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `corpus`, with single-digit tokens.

    Digits are split one per token before BPE: a merged "34" would make column arithmetic unlearnable for a
    small model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS_TURN, EOS_TURN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS_TURN, bos_token=None, unk_token=None
    )
    fast.add_tokens(R1_TAGS, special_tokens=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"  # batched generation needs left padding; SFT collators pad on their own
    return fast


def build_model(tokenizer, arch: dict[str, Any], seed: int):
    """A small Qwen2-style causal LM from config, eos = end of turn, pad != eos."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TURN)
    pad_id = tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **arch,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)
    return model


def prepare_for_r1(tokenizer, model, tags: str = "tokens") -> tuple[list[str], dict[str, Any]]:
    """Make a hub model's tokenizer fit the recipe; returns what was changed and how the R1 tags are written
    (both recorded in the manifest).

    - a chat template without {% generation %} markers is replaced by r1pipe's ChatML one (assistant-only
      loss needs the markers), with <|im_start|>/<|im_end|> added if missing and eos set to end of turn;
    - pad must differ from eos (else SFT masks the eos out as padding and the model never stops);
    - `tags`: "tokens" makes each R1 tag one ordinary (not special) token: GRPO decodes without special
      tokens and the format reward needs them. New tokens take spare embedding rows when the matrix has them
      (Qwen's does) and otherwise grow it, new rows drawn around the mean embedding. "text" adds nothing: the
      tags stay the several ordinary tokens the model already reads and writes (`<`, `think`, `>`), so a
      pretrained model starts with what it knows instead of untrained rows.
    """
    changes = []
    if "{% generation %}" not in (tokenizer.chat_template or ""):
        missing = [t for t in (BOS_TURN, EOS_TURN) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.eos_token = EOS_TURN
        changes.append("chat template: r1pipe's ChatML with generation markers, eos = <|im_end|>")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD if tokenizer.convert_tokens_to_ids(PAD) != tokenizer.eos_token_id else "<|r1pipe_pad|>"})
        changes.append(f"pad token: {tokenizer.pad_token}")
    split = {t: tokenizer.convert_ids_to_tokens(tokenizer.encode(t, add_special_tokens=False)) for t in R1_TAGS}
    new_tags = [t for t, pieces in split.items() if len(pieces) != 1]
    info: dict[str, Any] = {"mode": tags, "tokens": split, "embedding_rows": "existing"}
    if new_tags and tags == "tokens":
        tokenizer.add_tokens(new_tags, special_tokens=False)
        changes.append(f"added tokens: {' '.join(new_tags)}")
        info["tokens"] = {t: tokenizer.convert_ids_to_tokens(tokenizer.encode(t, add_special_tokens=False)) for t in R1_TAGS}
    elif new_tags:
        changes.append("tags as text: " + ", ".join(f"{t} = {' '.join(split[t])}" for t in new_tags))
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer))  # new rows around the mean embedding (mean_resizing)
        changes.append(f"embeddings resized to {len(tokenizer)} (new rows mean-initialized)")
        info["embedding_rows"] = "new, mean-initialized" if new_tags and tags == "tokens" else "existing"
    elif new_tags and tags == "tokens":
        changes.append(f"new tokens use spare embedding rows (the matrix has {rows}, the tokenizer {len(tokenizer)})")
        info["embedding_rows"] = "spare (untrained rows the checkpoint already had)"
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    model.config.eos_token_id = model.generation_config.eos_token_id = eos
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    return changes, info


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_saved_parameters(model_dir: str | Path) -> int:
    """Parameters of a saved model, read from its safetensors headers: no weights are loaded (a teacher may
    be far larger than the memory a count deserves). Tied weights are saved once, as count_parameters counts them."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                n = 1
                for dim in f.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, revision: str | None = None, check: bool = True):
    from transformers import AutoTokenizer

    path = hub.expand(path)
    missing_local_dir(path)
    hub.require(path, revision=revision)  # offline and not cached: one line now, not a minute of retries
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as e:
        raise R1Error(f"cannot load a tokenizer from {path}: {first_line(e)}", hint="check the path or hub id") from e
    if tok.chat_template == SERVING_TEMPLATE:
        tok.chat_template = CHAT_TEMPLATE  # the same text, with the assistant-turn markers SFT's loss mask needs
    if check and (tok.pad_token is None or tok.pad_token_id == tok.eos_token_id):
        # pad == eos teaches SFT models never to stop (their eos is masked out as padding).
        raise R1Error(
            f"tokenizer at {path} has pad_token == eos_token ({tok.eos_token!r})",
            hint="set a distinct pad token in the base stage's tokenizer",
        )
    return tok


def load_causal_lm(
    path: str | Path, dtype: str = "float32", trust_remote_code: bool = False, revision: str | None = None,
    clean_generation: bool = True,
):
    """A causal LM whose generation_config holds only its token ids (clean_generation_config), so no trainer
    or generate() call inherits the sampling settings it shipped with. The base stage passes
    clean_generation=False to record what it drops."""
    import torch
    from transformers import AutoModelForCausalLM

    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise R1Error(f"dtype {dtype!r} is not a torch dtype", hint="use float32, bfloat16 or float16")
    path = hub.expand(path)
    missing_local_dir(path)
    hub.require(path, revision=revision)
    refuse_pickled_weights(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            revision=revision,
            use_safetensors=True,  # never unpickle weights
        )
    except (OSError, ValueError) as e:
        raise R1Error(f"cannot load a model from {path}: {first_line(e)}", hint="check the path or hub id") from e
    if clean_generation:
        dropped = clean_generation_config(model)
        if dropped:
            log.info("%s: its generation_config's %s are ignored (r1pipe passes its own settings)", path, dropped)
    return model


# What a model's generation_config keeps: the ids it stops and pads with. Anything else there (Qwen2.5-Instruct
# ships repetition_penalty, top_k 20, top_p 0.8, temperature 0.7) fills every setting a generate() call or a
# TRL trainer's rollout leaves unset (transformers merges it into an explicit GenerationConfig field by field),
# so it would change rejection sampling, distillation traces and every evaluated number without a word.
GENERATION_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def clean_generation_config(model) -> dict[str, Any]:
    """Reduce `model.generation_config` to its token ids; returns the settings it held besides them."""
    from transformers import GenerationConfig

    old = model.generation_config
    dropped = {k: v for k, v in old.to_diff_dict().items() if k not in GENERATION_IDS and k != "transformers_version"}
    model.generation_config = GenerationConfig(
        **{k: getattr(old, k) for k in GENERATION_IDS if getattr(old, k, None) is not None})
    return dropped


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
