"""A stage's history: every attempt's whole output in a log beside its manifest, who ran it and where, the last
failure in `status`; and experiment trackers through the trainer block's own report_to."""

import json
import os
import subprocess
import sys

import pytest
from conftest import overrides_for, remove_stage
from test_cli import _cli

from r1pipe import config, runner
from r1pipe.errors import R1Error


def _run_all(run_dir, *extra, **kw):
    ov = overrides_for(run_dir, *extra)
    return runner.run_all(config.load(ov), ov, **kw)


def test_each_attempt_logs_its_whole_output_beside_the_manifest(tmp_path):
    # an empty TQDM_DISABLE keeps the libraries' progress bars, which r1pipe turns off when output is not a terminal
    r = _cli("run-all", "--to", "cold_sft", *overrides_for(tmp_path / "run", "eval.after_stage=false"),
             env={"TQDM_DISABLE": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    entry = tmp_path / "run" / "cold_sft"
    (log,) = sorted((entry / "log").glob("attempt-*.log"))
    text = log.read_text()
    assert "cold_sft: running (fingerprint" in text and "cold_sft: complete in" in text  # r1pipe's log
    assert "'loss'" in text and "Tokenizing train dataset" in text  # the Trainer's and TRL's own output
    assert "\r" not in text and "\x1b[" not in text  # progress bars collapsed, no terminal codes
    assert "'loss'" in r.stdout + r.stderr  # and the terminal still had it all
    m = json.loads((entry / "manifest.json").read_text())
    assert m["invocation"]["host"] and m["invocation"]["pid"] > 0 and m["invocation"]["argv"][:2] == ["r1pipe", "run-all"]


def test_a_failed_attempt_leaves_its_traceback_in_the_log_and_its_error_in_status(run_copy):
    remove_stage(run_copy, "reasoning_rl")
    bad = ("+reasoning_rl.rewards.boom={function: 'conftest:raising_reward', weight: 1.0}",)
    with pytest.raises(R1Error):
        _run_all(run_copy, *bad, start="reasoning_rl", stop="reasoning_rl")
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "status", *overrides_for(run_copy, *bad)],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    flat = " ".join(r.stdout.split())
    assert "last attempt failed: reasoning_rl" in flat and "could not parse the answer" in flat, r.stdout
    (log,) = (run_copy / "store" / "reasoning_rl").glob("*/log/attempt-01.log")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "ValueError: could not parse the answer" in text


def test_tensorboard_logs_a_stage_through_report_to(run_copy):
    pytest.importorskip("tensorboard")
    _run_all(run_copy, "cold_sft.trainer.report_to=tensorboard", "cold_sft.trainer.max_steps=3",
             "eval.after_stage=false", stop="cold_sft")
    events = list((run_copy / "cold_sft" / "trainer" / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_a_tracker_that_is_not_installed_is_one_line_before_a_model_loads(run_copy):
    with pytest.raises(R1Error, match=r"report_to names swanlab, but its package \(swanlab\) is not installed"):
        _run_all(run_copy, "cold_sft.trainer.report_to=swanlab", "cold_sft.trainer.max_steps=3", stop="cold_sft")
    with pytest.raises(R1Error, match="unknown tracker 'tensorbord'"):
        _run_all(run_copy, "cold_sft.trainer.report_to=[tensorbord]", "cold_sft.trainer.max_steps=3", stop="cold_sft")
    ov = overrides_for(run_copy, "cold_sft.trainer.report_to=swanlab", "cold_sft.trainer.max_steps=3")
    r = _cli("run-all", "--dry-run", *ov)  # the tracker is a need of the machine that runs it: counted
    assert r.returncode == 1 and "1 could not be checked from here: 1 need of the machine" in " ".join(r.stderr.split())
    assert "swanlab (pip install swanlab) for cold_sft.trainer.report_to" in " ".join(r.stdout.split())
    assert _cli("run-all", "--dry-run", "--allow-unchecked", *ov).returncode == 0
