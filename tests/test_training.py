"""Training helpers: a non-finite loss stops the stage; resume picks the last checkpoint that finished."""

import json
from types import SimpleNamespace

import pytest

from r1pipe import training
from r1pipe.errors import R1Error


def test_nan_or_inf_loss_stops_training(tmp_path):
    cb = training._metrics_callback(tmp_path / "metrics.jsonl")
    state = SimpleNamespace(global_step=7, is_world_process_zero=True)
    cb.on_log(None, state, None, logs={"loss": 0.5})
    for bad in (float("nan"), float("inf")):
        with pytest.raises(R1Error, match="loss is (nan|inf) at step 7"):
            cb.on_log(None, state, None, logs={"loss": bad})
    assert [json.loads(l)["loss"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0.5]


def test_last_checkpoint_skips_one_that_did_not_finish_saving(tmp_path):
    for step, done in ((10, True), (20, True), (30, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if done:
            (d / "trainer_state.json").write_text("{}")
    assert training.last_checkpoint(tmp_path).name == "checkpoint-20"
    assert training.last_checkpoint(tmp_path / "none") is None


def test_torn_jsonl_lines_are_skipped_and_truncation_keeps_earlier_steps(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')
    assert [r["step"] for r in training.read_jsonl(p)] == [1, 2, 3]
    training._truncate_metrics(p, 2)
    assert [r["step"] for r in training.read_jsonl(p)] == [1, 2]


def test_non_finite_weights_fail_the_stage_even_when_no_step_was_logged(tmp_path):
    """A resume from a checkpoint saved at max_steps trains no step and logs no loss: the weights decide."""
    import torch

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.bias[1] = float("nan")
    trainer = SimpleNamespace(
        args=SimpleNamespace(output_dir=str(tmp_path / "trainer")), model=model,
        state=SimpleNamespace(global_step=40), add_callback=lambda cb: None,
        train=lambda resume_from_checkpoint=None: SimpleNamespace(training_loss=0.0),
    )
    with pytest.raises(R1Error, match=r"non-finite weights \(bias\) at step 40"):
        training.train(trainer, tmp_path / "metrics.jsonl")
