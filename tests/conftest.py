import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

FIXTURES = Path(__file__).parent / "fixtures"


def overrides_for(run_dir: Path, *extra: str) -> list[str]:
    return ["conf=smoke", f"run.dir={run_dir}", *extra]


def save_tiny_model(path: Path, seed: int = 3) -> Path:
    """A small Qwen2-style model and its tokenizer, saved as a local model directory (what base.model may name)."""
    from r1pipe import models
    from r1pipe.tasks import arithmetic

    corpus = [f"<|im_start|>user\n{r['prompt']}<|im_end|>\n<|im_start|>assistant\n{r['solution']}<|im_end|>\n"
              for r in arithmetic.records(arithmetic.problems(200, 1), with_solution=True)]
    tok = models.build_tokenizer(corpus, vocab_size=290)
    model = models.build_model(tok, {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "num_key_value_heads": 2}, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Every stage of the smoke preset, run once for the session; tests that change it take a copy."""
    from r1pipe import config, runner

    run_dir = tmp_path_factory.mktemp("session") / "smoke"
    ov = overrides_for(run_dir)
    runner.run_all(config.load(ov), ov)
    return run_dir


@pytest.fixture
def run_copy(smoke_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(smoke_run, dst, symlinks=True)  # its stage links are relative: into the copy's own store
    return dst


def remove_stage(run_dir: Path, stage: str) -> None:
    """Delete a stage's results: its store entry and the run's link to it (rmtree of the link alone fails)."""
    link = run_dir / stage
    shutil.rmtree(link.resolve())
    link.unlink()


def char_length_reward(completions, **_):
    """A test reward that always differs between random completions, so GRPO has a signal to follow."""
    from r1pipe.rewards import completion_text

    return [float(len(completion_text(c))) for c in completions]


def raising_reward(completions, **_):
    """A reward with a bug in it: the stage must fail in one line naming it, and keep everything finished."""
    raise ValueError("could not parse the answer")


def snapshot(run_dir: Path) -> dict[str, tuple[str, str]]:
    """Each complete stage's manifest bytes and the sha256 of its outputs as they are on disk now: what
    'nothing finished was lost or changed' compares."""
    import json

    from r1pipe.manifest import hash_path

    out = {}
    for m in sorted(run_dir.glob("*/manifest.json")):
        text = m.read_text()
        outputs = json.loads(text)["outputs"]
        on_disk = {k: hash_path(m.parent / rel)["sha256"] if (m.parent / rel).exists() else None for k, rel in outputs.items()}
        out[m.parent.name] = (text, json.dumps(on_disk, sort_keys=True))
    return out
