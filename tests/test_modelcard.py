"""Model cards: each model/ carries a README.md built from its manifest's lineage, with its evaluation."""

import json

from conftest import overrides_for


def _manifest(run, stage):
    return json.loads((run / stage / "manifest.json").read_text())


def test_every_model_has_a_card_with_its_whole_lineage_and_eval(smoke_run):
    card = (smoke_run / "distill" / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    lineage = card.split("## Lineage")[1].split("## Evaluation")[0]
    # every ancestor, in graph order, with its fingerprint
    names = ["base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl", "distill"]
    positions = [lineage.index(f"**{n}**") for n in names]
    assert positions == sorted(positions)
    for n in names:
        assert _manifest(smoke_run, n)["fingerprint"][:12] in lineage
    ev = _manifest(smoke_run, "distill")["eval"]
    assert f"{100 * ev['greedy_accuracy']:.1f}%" in card
    assert "<!-- r1pipe:summary -->" in card  # the stage's own words are kept
    # the baseline student's card carries its own numbers, not the distilled student's
    baseline_card = (smoke_run / "distill" / "baseline" / "model" / "README.md").read_text()
    assert f"{100 * ev['baseline']['greedy_accuracy']:.1f}%" in baseline_card.split("## Evaluation")[1]
    assert f"| {100 * ev['greedy_accuracy']:.1f}%" not in baseline_card or ev["baseline"]["greedy_accuracy"] == ev["greedy_accuracy"]
    base_card = (smoke_run / "base" / "model" / "README.md").read_text()
    assert "built from scratch" in base_card and "Not evaluated" not in (smoke_run / "cold_sft" / "model" / "README.md").read_text()


def test_a_card_is_not_part_of_the_model_hash(run_copy):
    from r1pipe import config, runner

    card = run_copy / "cold_sft" / "model" / "README.md"
    card.write_text(card.read_text() + "\nedited by hand\n")
    states = runner.states(config.load(overrides_for(run_copy)), full=True)
    assert states["cold_sft"].state == "complete"
    # but the weights are: a changed byte is noticed
    weights = run_copy / "cold_sft" / "model" / "config.json"
    weights.write_text(weights.read_text().replace("{", "{ ", 1))
    states = runner.states(config.load(overrides_for(run_copy)), full=True)
    assert states["cold_sft"].state == "corrupt" and "cold_sft/model/config.json changed size" in states["cold_sft"].reason
