"""Reward models as reward functions (DeepSeek-R1 §2.3.4: general data is judged by reward models).

A reward model is a transformers AutoModelForSequenceClassification with one output, scoring a user turn and an
assistant reply rendered with the chat template, exactly as TRL's RewardTrainer trained it. R1 splits the
judgement: helpfulness looks at the summary only (the text after `</think>`), so a model is not rewarded for
what its reasoning says; harmlessness looks at the whole response, reasoning included, so harm cannot hide there.

`preference_reward` wraps one in TRL's reward signature. It returns None on rows with a verifiable answer (the
rule rewards judge those), and None before `start_step` (R1 turns preference rewards on only for the last
steps, "more steps with model-based rewards lead to reward hacking").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1pipe.errors import R1Error
from r1pipe.rewards import completion_text, split_think

SCOPES = ("summary", "response")


class RewardModel:
    """Scores (user turn, reply) pairs in batches; safetensors only, trust_remote_code only when asked."""

    def __init__(self, path: str | Path, dtype: str = "float32", trust_remote_code: bool = False, batch_size: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification

        from r1pipe.hub import expand
        from r1pipe.models import first_line, load_tokenizer, refuse_pickled_weights

        path = expand(path)
        refuse_pickled_weights(path)
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, check=False)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                str(path), dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as e:
            raise R1Error(f"cannot load reward model {path}: {first_line(e)}",
                          hint="a reward model is a sequence-classification checkpoint (the reward_model stage writes one)") from e
        if self.model.config.num_labels != 1:
            raise R1Error(f"reward model {path} has {self.model.config.num_labels} outputs, not 1",
                          hint="train one with the reward_model stage (TRL RewardTrainer)")
        self.model.eval()
        if torch.cuda.is_available():
            self.model.to("cuda")
        self.batch_size = batch_size
        self.path = str(path)

    def score(self, prompts: list[str], replies: list[str]) -> list[float]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, replies)
        ]
        out: list[float] = []
        self.tokenizer.padding_side = "right"
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.model.device)
                out.extend(self.model(**enc).logits[:, 0].float().tolist())
        return out


def judged_text(text: str, scope: str) -> str:
    """What a preference reward sees: the summary after </think> (helpfulness) or everything (harmlessness)."""
    if scope == "summary":
        return split_think(text)[1].strip()
    if scope == "response":
        return text
    raise R1Error(f"preference scope {scope!r}", hint=f"scopes: {', '.join(SCOPES)}")


def preference_reward(name: str, model: RewardModel, scope: str, start_step: int = 0):
    """A TRL reward function: the reward model's score of the `scope` part on general prompts, else None."""
    judged_text("", scope)  # an unknown scope fails when the reward is built, not at the first step

    def reward(completions, prompts=None, answer=None, trainer_state=None, **_) -> list[float | None]:
        n = len(completions)
        if trainer_state is not None and trainer_state.global_step < start_step:
            return [None] * n
        answers = answer if answer is not None else [""] * n
        general = [i for i in range(n) if not (answers[i] or "").strip()]
        out: list[float | None] = [None] * n
        if general:
            users = [_user_turn(prompts[i]) if prompts is not None else "" for i in general]
            texts = [judged_text(completion_text(completions[i]), scope) for i in general]
            for i, s in zip(general, model.score(users, texts)):
                out[i] = s
        return out

    reward.__name__ = name
    return reward


def _user_turn(prompt: Any) -> str:
    if isinstance(prompt, list):  # conversational: the last user message
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return str(prompt)
