"""Model cards: every `model/` a stage writes gets a README.md built from its manifest's lineage.

The card is what a user of the Hub expects beside a checkpoint: YAML metadata (library, base model, tags),
then the chain of stages that made the model (each with its data and key settings), its evaluation and how to
load it with plain transformers. It is derived from the manifests, so it is rewritten when evaluation adds
numbers, and `manifest.hash_path` leaves it out of the model's content hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1pipe import data, stages
from r1pipe import manifest as mf
from r1pipe.errors import R1Error

CARD = "README.md"
SUMMARY_START, SUMMARY_END = "<!-- r1pipe:summary -->", "<!-- /r1pipe:summary -->"
TRAINER_KEYS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "num_generations", "beta", "epsilon", "loss_type", "temperature",
                "max_completion_length", "max_length")


def lineage(run_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """This stage's manifest and all its ancestors', ancestors first (each once)."""
    seen: dict[str, dict[str, Any]] = {}

    def visit(m: dict[str, Any]) -> None:
        for p in m.get("parents", []):
            if p["stage"] not in seen:
                parent = mf.read_manifest(run_dir / p["stage"]) if (run_dir / p["stage"]).is_dir() else None
                if isinstance(parent, dict):
                    visit(parent)
                    seen.setdefault(p["stage"], parent)
        seen.setdefault(m["stage"], m)

    visit(manifest)
    return list(seen.values())


def base_model(chain: list[dict[str, Any]]) -> str | None:
    for m in chain:
        if m["stage"] == "base":
            return (m.get("config") or {}).get("model")
    return None


def _kind(source: Any) -> str | None:
    """data.source_kind, for a manifest's recorded config: None where it names no single kind (a run of an
    r1pipe that did not check), so a card never claims one."""
    try:
        return data.source_kind(source) if isinstance(source, dict) else None
    except R1Error:
        return None


def trained_on(m: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(config key, source) for the task data a manifest's stage read, as its module declares it (SOURCES); none
    for a stage this r1pipe does not know (a run of another version)."""
    if m.get("stage") not in stages.names():
        return []
    cfg = m.get("config") or {}
    return [(s.key, stages.at(cfg, s.key)) for s in stages.get(m["stage"]).reads(cfg) if s.task]


def describe_source(source: Any) -> str:
    kind = _kind(source)
    if kind == "builtin":
        extra = ", held-out phrasings" if source.get("heldout") else ""
        return f"builtin {source['builtin']} ({source.get('size')} rows, seed {source.get('seed')}{extra})"
    if kind == "hub":
        split = f" split {source['split']}" if source.get("split") else ""
        return f"hub dataset `{source['hub']}`{split}"
    if kind == "path":
        return f"file `{source['path']}`"
    return json.dumps(source, default=str) if isinstance(source, dict) else str(source)


def _settings(config: dict[str, Any]) -> str:
    trainer = config.get("trainer") or {}
    parts = [f"{k}={trainer[k]}" for k in TRAINER_KEYS if trainer.get(k) not in (None, -1)]
    if isinstance(config.get("peft"), dict):  # LoRA, its adapter merged into the saved weights
        parts.append("LoRA (" + ", ".join(f"{k}={v}" for k, v in config["peft"].items()) + ") merged")
    return ", ".join(parts)


def _eval_lines(ev: dict[str, Any]) -> list[str]:
    if "n_problems" not in ev:
        return ["Not evaluated yet: `r1pipe eval --stage <stage>` fills this in."]
    k = ev.get("k")
    rows = [("greedy accuracy", "greedy_accuracy"), ("pass@1 (k samples, T=0.6, top-p 0.95)", "pass@1"),
            (f"cons@{k} (majority vote)", f"cons@{k}"), ("strict-format rate", "strict_format")]
    lines = [f"On {ev['n_problems']} held-out problems the training data never contained (R1's protocol):", "",
             "| metric | value |", "|---|---|"]
    for label, key in rows:
        if key in ev:
            se = ev.get(f"{key}_se")
            lines.append(f"| {label} | {100 * ev[key]:.1f}%" + (f" ± {100 * se:.1f}" if se is not None else "") + " |")
    for key, diff in ev.items():
        if key.startswith("vs_") and isinstance(diff, dict) and "greedy_accuracy_diff" in diff:
            lines.append(f"| greedy Δ vs {key[3:]} (paired) | {100 * diff['greedy_accuracy_diff']:+.1f}"
                         f" ± {100 * diff['greedy_accuracy_diff_se']:.1f} points |")
    for name, bench in (ev.get("benchmarks") or {}).items():
        if isinstance(bench, dict) and "n_problems" in bench:
            parts = [f"{lbl} {100 * bench[key]:.1f}%" for lbl, key in (("greedy", "greedy_accuracy"), ("pass@1", "pass@1"))
                     if key in bench]
            lines.append(f"| {name} ({bench['n_problems']} problems) | {', '.join(parts)} |")
    return lines


def stage_summary(card_text: str) -> str | None:
    """The stage's own words from the card it saved (training.model_card), if there is one."""
    if SUMMARY_START in card_text and SUMMARY_END in card_text:
        return card_text.split(SUMMARY_START, 1)[1].split(SUMMARY_END, 1)[0].strip()
    return None


def render(run_dir: Path, manifest: dict[str, Any], model_rel: str = "model", summary: str | None = None,
           evaluation: dict[str, Any] | None = None) -> str:
    """The card for `model_rel` (a stage's `model`, or another model among its outputs, with its own
    `evaluation`; default: the stage's)."""
    chain = lineage(run_dir, manifest)
    stage = manifest["stage"]
    base = base_model(chain)
    meta = ["---", "library_name: transformers", "pipeline_tag: text-generation",
            "tags:", "- r1pipe", "- deepseek-r1-recipe", f"- {stage}"]
    if base:
        meta += [f"base_model: {base}"]
    hub_data = sorted({source["hub"] for m in chain for _, source in trained_on(m) if _kind(source) == "hub"})
    if hub_data:
        meta += ["datasets:"] + [f"- {d}" for d in hub_data]
    meta.append("---")

    lines = [*meta, "", f"# {stage} ({model_rel}/)", "",
             f"Made by the `{stage}` stage of an r1pipe run of the DeepSeek-R1 post-training "
             "recipe (arXiv 2501.12948). Fingerprint `" + manifest.get("fingerprint", "")[:16] + "`; finished "
             f"{manifest.get('finished_at', '?')} in {manifest.get('duration_s', '?')} s.", "",
             *([SUMMARY_START, summary, SUMMARY_END, ""] if summary else []),
             "## Lineage", "", "Each stage read the outputs of the ones above it:", ""]
    for m in chain:
        cfg = m.get("config") or {}
        what = []
        if m["stage"] == "base":
            what.append(f"model `{cfg['model']}`" if cfg.get("model") else
                        f"built from scratch ({(m.get('metrics') or {}).get('parameters', '?')} parameters)")
        for key, source in trained_on(m):
            what.append(f"{key}: {describe_source(source)}")
        if _settings(cfg):
            what.append(_settings(cfg))
        reads = ", ".join(p["stage"] for p in m.get("parents", [])) or "config"
        lines.append(f"1. **{m['stage']}** (reads {reads}; fingerprint `{m.get('fingerprint', '')[:12]}`): "
                     + "; ".join(what))
    ev = evaluation if evaluation is not None else manifest.get("eval") or {}
    lines += ["", "## Evaluation", "", *_eval_lines(ev), "",
              "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "", 'tok = AutoTokenizer.from_pretrained("PATH")', 'model = AutoModelForCausalLM.from_pretrained("PATH")',
              'chat = tok.apply_chat_template([{"role": "user", "content": "123+45"}], add_generation_prompt=True,',
              '                               return_dict=True, return_tensors="pt")',
              'out = model.generate(**chat, max_new_tokens=64)[0][chat["input_ids"].shape[1]:]',
              "print(tok.decode(out, skip_special_tokens=True))",
              "```", "", "Answers come as `<think>…</think>` reasoning, then the answer. The full configuration of every "
              "stage is in its `manifest.json` and `config.yaml` in the run directory.", ""]
    return "\n".join(lines)


def write_cards(run_dir: Path, stage_dir: Path, manifest: dict[str, Any]) -> list[Path]:
    """A card in every output of the stage that holds a model (config.json at its top, or in `model/` below it)."""
    written = []
    for key, rel in (manifest.get("outputs") or {}).items():
        for model_dir in (stage_dir / rel, stage_dir / rel / "model"):
            if (model_dir / "config.json").is_file():
                old = model_dir / CARD
                summary = stage_summary(old.read_text(errors="replace")) if old.is_file() else None
                # another model among the outputs (distill's baseline) has its own numbers, or none yet
                own = None if key == "model" else (manifest.get("eval") or {}).get(key) or {}
                card = render(run_dir, manifest, model_dir.relative_to(stage_dir).as_posix(), summary, own)
                # the temporary file lives beside the stage, not in the model: a crash between write and
                # rename must not add a file to a hashed directory
                mf.write_text_atomic(model_dir / CARD, card, tmp_dir=stage_dir)
                written.append(model_dir / CARD)
    return written
