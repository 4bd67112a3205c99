"""The CLI as a user meets it: quick commands stay light, errors are one line with a non-zero exit."""

import json
import subprocess
import sys

import pytest

from conftest import overrides_for

HEAVY = ("torch", "transformers", "trl")
PROBE = """
import sys
from r1pipe.cli import main
sys.argv = ["r1pipe", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), "CODE=" + str(code))
"""


def _probe(*args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True)
    return out.stdout, out.stderr


@pytest.mark.parametrize(
    "args",
    [("--help",), ("status",), ("config",), ("stages",), ("show", "cold_sft"), ("run-all", "--help")],
)
def test_quick_commands_never_import_torch(smoke_run, args):
    stdout, stderr = _probe(*args, *(overrides_for(smoke_run) if "--help" not in args and args != ("stages",) else ()))
    assert "HEAVY= CODE=0" in stdout, stdout + stderr


def test_status_shows_every_stage_and_state(smoke_run):
    stdout, _ = _probe("status", *overrides_for(smoke_run))
    from r1pipe.stages import ORDER

    assert all(s in stdout for s in ORDER)
    assert stdout.count("complete") == len(ORDER) == 8


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "r1pipe.cli", *args], capture_output=True, text=True)


def test_missing_parent_is_a_one_line_error(tmp_path):
    r = _cli("run", "--stage", "cold_sft", *overrides_for(tmp_path / "empty"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "r1pipe run --stage base" in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_override_and_unknown_stage_fail_cleanly(tmp_path):
    for args, text in [
        (("status", "conf=smoke", "cold_sft.trainer.learnin_rate=1"), "Could not override"),
        (("run", "--stage", "cold_stf", "conf=smoke", f"run.dir={tmp_path}"), "unknown stage 'cold_stf'"),
        (("run-all", "--dry-run", "conf=smoke", "cold_sft.trainer.max_steps=ten", f"run.dir={tmp_path}"),
         "max_steps='ten' has the wrong type"),
    ]:
        r = _cli(*args)
        assert r.returncode == 1 and text in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    r = _cli("--debug", "run", "--stage", "cold_stf", "conf=smoke", f"run.dir={tmp_path}")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_dry_run_plans_without_running(smoke_run, tmp_path):
    r = _cli("run-all", "--dry-run", *overrides_for(tmp_path / "new"))
    assert r.returncode == 0 and r.stdout.count("never completed") == 1 and r.stdout.count("will run") == 7
    assert not (tmp_path / "new" / "base").exists()
    r = _cli("run-all", "--dry-run", *overrides_for(smoke_run, "cold_sft.trainer.learning_rate=1e-4"))
    assert r.returncode == 0 and r.stdout.count("skip") == 2 and r.stdout.count("rerun") == 6  # base and reward_model skip


def test_show_prints_the_manifest(smoke_run):
    r = _cli("show", "cold_sft", *overrides_for(smoke_run))
    assert r.returncode == 0 and json.loads(r.stdout)["stage"] == "cold_sft"


def test_corrupt_manifest_is_reported_not_trusted_and_force_reruns_it(run_copy):
    (run_copy / "second_sft" / "manifest.json").write_text("{oops")
    r = _cli("status", *overrides_for(run_copy))
    assert r.returncode == 0 and "corrupt" in r.stdout
    before = (run_copy / "reasoning_rl" / "manifest.json").read_text()
    r = _cli("run-all", *overrides_for(run_copy))
    assert r.returncode == 1 and "corrupt manifest" in r.stderr and "second_sft" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (run_copy / "reasoning_rl" / "manifest.json").read_text() == before  # nothing else touched
    r = _cli("run", "--stage", "second_sft", "--force", *overrides_for(run_copy, "eval.after_stage=false"))
    assert r.returncode == 0, r.stderr
    assert json.loads((run_copy / "second_sft" / "manifest.json").read_text())["status"] == "complete"


def test_eval_command_rewrites_eval_json_and_the_manifest(run_copy):
    (run_copy / "cold_sft" / "eval.json").unlink()
    r = _cli("eval", "--stage", "cold_sft", *overrides_for(run_copy, "eval.k=3"))
    assert r.returncode == 0, r.stderr
    saved = json.loads((run_copy / "cold_sft" / "eval.json").read_text())
    assert saved["k"] == 3 and "cons@3" in saved
    assert json.loads((run_copy / "cold_sft" / "manifest.json").read_text())["eval"] == saved
    # evaluation settings are not fingerprinted: the stage is still complete, nothing retrains
    stdout, _ = _probe("status", *overrides_for(run_copy, "eval.k=3"))
    assert stdout.count("complete") == 8
