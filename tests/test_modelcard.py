"""Model cards: each model/ carries a README.md built from its manifest's lineage, with its evaluation."""

import json
import shutil

from conftest import overrides_for


def _manifest(run, stage):
    return json.loads((run / stage / "manifest.json").read_text())


def test_every_model_has_a_card_with_its_whole_lineage(smoke_run):
    card = (smoke_run / "distill" / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    lineage = card.split("## Lineage")[1].split("## Evaluation")[0]
    # every ancestor, in graph order, with its fingerprint
    names = ["base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl", "distill"]
    positions = [lineage.index(f"**{n}**") for n in names]
    assert positions == sorted(positions)
    for n in names:
        assert _manifest(smoke_run, n)["fingerprint"][:12] in lineage
    assert "<!-- r1pipe:summary -->" in card  # the stage's own words are kept
    base_card = (smoke_run / "base" / "model" / "README.md").read_text()
    assert "built from scratch" in base_card and "Not evaluated" not in (smoke_run / "cold_sft" / "model" / "README.md").read_text()


def test_each_card_shows_its_own_models_numbers_and_the_paired_delta(run_copy, monkeypatch):
    """Distill's student and its baseline, made to score differently (the smoke models score 0.0 alike): each
    card must carry its own model's numbers, worked out here from how the stand-in models answer."""
    from statistics import mean, stdev

    from test_evaluation import right, skilled_engine

    from r1pipe import config, execute, generation
    from r1pipe.evaluation import read_samples
    from r1pipe.tasks.arithmetic import parse_prompt

    shutil.rmtree(run_copy / "eval_cache")  # evaluated afresh, by the stand-ins
    monkeypatch.setattr(generation, "make_engine", skilled_engine({"distill": 3, "baseline": 1}))
    execute.evaluate_after(config.load(overrides_for(run_copy)), "distill", _manifest(run_copy, "distill"))

    problems = [parse_prompt(s["prompt"]) for s in read_samples(run_copy / "distill")]
    student = [float(right(3, a, b, 0)) for a, b in problems]
    baseline = [float(right(1, a, b, 0)) for a, b in problems]
    student_pass1 = [(right(3, a, b, 0) + right(3, a, b, 1)) / 2 for a, b in problems]
    assert 0 < mean(baseline) < mean(student) < 1  # the held-out sums spread over the stand-ins' rule

    def row(label, xs):
        return f"| {label} | {100 * mean(xs):.1f}% ± {100 * stdev(xs) / len(xs) ** 0.5:.1f} |"

    card = (run_copy / "distill" / "model" / "README.md").read_text().split("## Evaluation")[1]
    assert row("greedy accuracy", student) in card
    assert row("pass@1 (k samples, T=0.6, top-p 0.95)", student_pass1) in card
    gain = [s - b for s, b in zip(student, baseline)]  # the student's gain over the baseline, problem by problem
    assert (f"| greedy Δ vs baseline (paired) | {100 * mean(gain):+.1f} ± {100 * stdev(gain) / len(gain) ** 0.5:.1f}"
            " points |") in card
    assert mean(gain) > 0 and row("greedy accuracy", baseline) not in card
    baseline_card = (run_copy / "distill" / "baseline" / "model" / "README.md").read_text().split("## Evaluation")[1]
    assert row("greedy accuracy", baseline) in baseline_card
    assert row("greedy accuracy", student) not in baseline_card and "Δ" not in baseline_card


def test_a_card_is_not_part_of_the_model_hash(run_copy):
    from r1pipe import config, state

    card = run_copy / "cold_sft" / "model" / "README.md"
    card.write_text(card.read_text() + "\nedited by hand\n")
    states = state.states(config.load(overrides_for(run_copy)), full=True)
    assert states["cold_sft"].state == "complete"
    # but the weights are: a changed byte is noticed
    weights = run_copy / "cold_sft" / "model" / "config.json"
    weights.write_text(weights.read_text().replace("{", "{ ", 1))
    states = state.states(config.load(overrides_for(run_copy)), full=True)
    assert states["cold_sft"].state == "corrupt" and "cold_sft/model/config.json changed size" in states["cold_sft"].reason


def test_the_cards_use_snippet_runs_as_written(smoke_run, tmp_path):
    """The card's Python, pasted with PATH filled in, runs under plain transformers (transformers 5's
    apply_chat_template returns a BatchEncoding: a snippet that read `.shape` off it once failed)."""
    import subprocess
    import sys

    model_dir = smoke_run / "cold_sft" / "model"
    code = (model_dir / "README.md").read_text().split("```python\n")[1].split("```")[0]
    script = tmp_path / "use.py"
    script.write_text(code.replace("PATH", str(model_dir)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
