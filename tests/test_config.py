import pytest

from r1pipe import config
from r1pipe.errors import R1Error


def test_presets_resolve_and_set_run_dir():
    cfg = config.load(["conf=tiny"])
    assert cfg.preset == "tiny" and str(config.run_dir(cfg)) == "runs/tiny"
    sc = config.stage_config(cfg, "cold_sft")
    assert sc["data"]["builtin"] == "arithmetic"  # interpolations are resolved into the stage's own config
    assert sc["trainer"]["use_cpu"] is True and sc["trainer"]["bf16"] is False


def test_every_preset_file_starts_with_its_command():
    for f in sorted((config.conf_dir() / "presets").glob("*.yaml")):
        lines = [l for l in f.read_text().splitlines() if l.startswith("#") and "@package" not in l]
        assert lines and f"conf={f.stem}" in lines[0], f"{f} must start with the command that uses it"


def test_overrides_reach_the_stage():
    cfg = config.load(["conf=tiny", "cold_sft.trainer.learning_rate=3e-4", "run.dir=/tmp/x"])
    assert config.stage_config(cfg, "cold_sft")["trainer"]["learning_rate"] == 3e-4
    assert str(config.run_dir(cfg)) == "/tmp/x"


@pytest.mark.parametrize(
    "override,message",
    [
        ("cold_sft.trainer.learnin_rate=1", r"Could not override 'cold_sft.trainer.learnin_rate'.*did you mean cold_sft.trainer.learning_rate\?"),
        ("cold_sfft.trainer.max_steps=3", r"did you mean cold_sft.trainer.max_steps\?"),
        ("eval.max_new_token=3", r"did you mean eval.max_new_tokens\?"),
        ("conf=nope", "Could not find 'presets/nope'"),
        ("nokey", "not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(R1Error, match=message) as e:
        config.load([override] if override.startswith("conf=") else ["conf=tiny", override])
    assert "\n" not in str(e.value)


def test_trainer_block_is_checked_against_trl():
    from trl import GRPOConfig, SFTConfig

    config.check_trainer_block("cold_sft", {"learning_rate": 1e-3, "max_steps": 5, "report_to": "none"}, SFTConfig)
    with pytest.raises(R1Error, match="did you mean learning_rate"):
        config.check_trainer_block("cold_sft", {"learnin_rate": 1e-3}, SFTConfig)
    with pytest.raises(R1Error, match="max_steps='ten' has the wrong type"):
        config.check_trainer_block("cold_sft", {"max_steps": "ten"}, SFTConfig)
    with pytest.raises(R1Error, match="output_dir is set by r1pipe"):
        config.check_trainer_block("cold_sft", {"output_dir": "/tmp"}, SFTConfig)
    with pytest.raises(R1Error, match="not a field of trl.GRPOConfig"):
        config.check_trainer_block("reasoning_rl", {"packing": True}, GRPOConfig)


def test_a_stage_cannot_start_from_a_later_or_unknown_stage():
    from r1pipe import graph

    with pytest.raises(R1Error, match="reasoning_rl cannot read second_sft: it comes later"):
        graph.chain(config.load(["conf=smoke", "reasoning_rl.init=second_sft"]))
    with pytest.raises(R1Error, match="unknown stage 'cold'"):
        graph.chain(config.load(["conf=smoke", "reasoning_rl.init=cold"]))
    with pytest.raises(R1Error, match="reads cold_sft, which run.stages leaves out"):
        graph.chain(config.load(["conf=smoke", "run.stages=[base,reasoning_rl]"]))


@pytest.mark.parametrize("override, hint", [
    # a TRL field the preset leaves unset is not a typo of one it sets (warmup_steps): say how to add it
    ("cold_sft.trainer.warmup_ratio=0.1", "a TRL field the preset leaves unset needs a +: "
                                          "+cold_sft.trainer.warmup_ratio=0.1"),
    ("cold_sft.trainer.lerning_rate=0.1", "did you mean cold_sft.trainer.learning_rate? A TRL field the preset "
                                          "leaves unset needs a +"),
    ("cold_sft.trainer.neftune_noise_alpha=5", "a TRL field the preset leaves unset needs a +: "
                                               "+cold_sft.trainer.neftune_noise_alpha=5"),
    # pointing a stage at a file: how to replace the source, not a "did you mean" its mapping
    ("cold_sft.data.path=/data/mine.jsonl", "cold_sft.data is a data source; to read your file instead: "
                                            "'~cold_sft.data' '+cold_sft.data={path: /data/mine.jsonl}'"),
])
def test_an_unknown_key_gets_the_hint_that_fits(override, hint):
    with pytest.raises(R1Error) as e:
        config.load(["conf=tiny", override])
    assert hint in e.value.hint
    assert "lerning" in override or "did you mean" not in e.value.hint


def test_the_data_source_hint_works_as_given(tmp_path):
    rows = tmp_path / "mine.jsonl"
    rows.write_text('{"prompt": "1+1", "solution": "<think>1+1=2</think><answer>2</answer>"}\n')
    cfg = config.load(["conf=tiny", "~cold_sft.data", f"+cold_sft.data={{path: {rows}}}"])
    assert config.stage_config(cfg, "cold_sft")["data"] == {"path": str(rows)}
