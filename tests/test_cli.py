"""The CLI as a user meets it: quick commands stay light, errors are one line with a non-zero exit."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
    [("--help",), ("status",), ("config",), ("stages",), ("show", "--stage", "cold_sft"), ("run-all", "--help"),
     ("presets",), ("--version",)],
)
def test_quick_commands_never_import_torch(smoke_run, args):
    bare = "--help" in args or args in (("stages",), ("presets",), ("--version",))  # they take no run
    stdout, stderr = _probe(*args, *(() if bare else overrides_for(smoke_run)))
    assert "HEAVY= CODE=0" in stdout, stdout + stderr


def test_status_shows_every_stage_and_state(smoke_run):
    stdout, _ = _probe("status", *overrides_for(smoke_run))
    from r1pipe.stages import BUILTIN as ORDER

    assert all(s in stdout for s in ORDER)
    assert stdout.count("complete") == len(ORDER) == 8


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "r1pipe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)


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
    # base and reward_model skip; the rest run into new store entries
    assert r.returncode == 0 and r.stdout.count("skip") == 2 and len(re.findall(r"│ run +│", r.stdout)) == 6


def test_show_prints_the_manifest(smoke_run):
    r = _cli("show", "--stage", "cold_sft", *overrides_for(smoke_run))
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


def test_seeds_summary_counts_each_seeds_gain_beyond_its_standard_error():
    """Hand-made numbers: the mean, spread and range over seeds, and the per-seed paired differences counted
    against their own standard errors (an axis or sign mixed up gives other cells)."""
    from r1pipe import report

    def ev(greedy, p1, diff=None):
        e = {"greedy_accuracy": greedy, "pass@1": p1}
        if diff:
            e["vs_cold_sft"] = {"pass@1_diff": diff[0], "pass@1_diff_se": diff[1],
                                "greedy_accuracy_diff": diff[2], "greedy_accuracy_diff_se": diff[3]}
        return e

    evals = {1: {"cold_sft": ev(0.40, 0.30), "reasoning_rl": ev(0.44, 0.36, (0.06, 0.01, 0.04, 0.02))},
             2: {"cold_sft": ev(0.50, 0.40), "reasoning_rl": ev(0.50, 0.41, (0.01, 0.02, 0.00, 0.02))},
             3: {"cold_sft": ev(0.60, 0.50), "reasoning_rl": ev(0.57, 0.52, (0.02, 0.01, -0.03, 0.02))},
             4: {"cold_sft": {}, "base": ev(0.0, 0.0)}}  # seed 4 stopped before cold_sft was evaluated
    head, body = report.across_seeds(evals)
    rows = {(r[0], r[4]): dict(zip(head, r)) for r in body}
    cold = rows[("cold_sft", "")]
    assert cold["seeds"] == "1, 2, 3" and cold["greedy: mean ± sd (range)"] == "50.0 ± 10.0 (40.0–60.0)"
    assert cold["pass@1: mean ± sd (range)"] == "40.0 ± 10.0 (30.0–50.0)"
    rl = rows[("reasoning_rl", "cold_sft")]
    assert rl["Δ pass@1 per seed (± SE)"] == "+6.0 ± 1.0, +1.0 ± 2.0, +2.0 ± 1.0"
    assert rl["seeds Δ pass@1 > +1 SE / < −1 SE"] == "2 / 0 of 3"
    assert rl["seeds Δ greedy > +1 SE / < −1 SE"] == "1 / 1 of 3"
    assert rows[("base", "")]["seeds"] == "4"


def test_seeds_runs_each_seed_in_its_own_directory_and_summarizes_without_torch(tmp_path):
    root = tmp_path / "run"
    out = _cli("seeds", "--seeds", "5,6", "--to", "base", *overrides_for(root))
    assert out.returncode == 0, out.stderr
    for seed in (5, 6):
        m = json.loads((tmp_path / f"run-seed{seed}" / "base" / "manifest.json").read_text())
        assert m["config"]["seed"] == seed
    assert not root.exists()  # the seeds' runs sit beside it
    # summarizing again reads the runs' manifests only
    stdout, stderr = _probe("seeds", "--seeds", "5,6", "--summary-only", *overrides_for(root))
    assert "HEAVY= CODE=0" in stdout, stdout + stderr
    assert (tmp_path / "run-seeds.md").read_text().startswith("# run: seeds 5, 6")


def test_seeds_summary_with_no_runs_is_a_one_line_error(tmp_path):
    out = _cli("seeds", "--seeds", "1,2", "--summary-only", *overrides_for(tmp_path / "run"))
    assert out.returncode == 1 and "no run of seeds 1, 2 under" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run-seeds.md").exists()


def test_seeds_summary_has_a_table_per_benchmark(monkeypatch):
    from r1pipe import report

    def ev(greedy, p1, second, diff=None):
        e = {"benchmark": "heldout", "greedy_accuracy": greedy, "pass@1": p1,
             "benchmarks": {"three_digit": {"benchmark": "three_digit", "greedy_accuracy": second, "pass@1": second}}}
        if diff is not None:
            e["benchmarks"]["three_digit"]["vs_cold_sft"] = {"pass@1_diff": diff, "pass@1_diff_se": 0.01,
                                                             "greedy_accuracy_diff": diff, "greedy_accuracy_diff_se": 0.01}
        return e

    evals = {1: {"cold_sft": ev(0.9, 0.8, 0.7), "reasoning_rl": ev(0.95, 0.9, 0.8, 0.1)},
             2: {"cold_sft": ev(0.8, 0.7, 0.5), "reasoning_rl": ev(0.85, 0.8, 0.45, -0.05)}}
    monkeypatch.setattr(report, "read_seed_evals", lambda cfg, seeds: evals)
    text = report.seeds_markdown(None, [1, 2])
    headline, second = text.split("### three_digit")
    assert headline.startswith("### heldout") and "85.0 ± 7.1 (80.0–90.0)" in headline  # cold_sft's greedy
    assert "60.0 ± 14.1 (50.0–70.0)" in second and "+10.0 ± 1.0, -5.0 ± 1.0" in second
    assert "1 / 1 of 2" in second


def test_seeds_with_a_bad_list_is_a_one_line_error(tmp_path):
    out = _cli("seeds", "--seeds", "1,two", *overrides_for(tmp_path / "run"))
    assert out.returncode == 1 and "--seeds '1,two' is not a comma-separated list of integers" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    ((), "Usage: r1pipe"),                                      # bare: the help, as a usage error
    (("run", "cold_sft"), "Missing option '--stage' / '-s'"),
    (("run", "--stage"), "Option '--stage' requires an argument"),
    (("nosuch",), "No such command 'nosuch'"),
])
def test_usage_errors_exit_2_without_class_names(args, message):
    r = _cli(*args)
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and message in text, text[-500:]
    assert "NoArgsIsHelpError" not in text and "UsageError" not in text  # the class names typer's copy leaked


def test_version_short_help_and_debug_are_there():
    from r1pipe import __version__

    assert _cli("--version").stdout.strip() == f"r1pipe {__version__}"
    short, long = _cli("-h"), _cli("--help")
    assert short.returncode == 0 and short.stdout == long.stdout
    assert "--debug" in long.stdout and "--version" in long.stdout and "--install-completion" in long.stdout
    assert _cli("run", "-h").returncode == 0


def test_presets_lists_every_preset_with_what_it_is_for():
    r = _cli("presets")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0
    for name in ("tiny", "smoke", "smollm2", "qwen2.5-0.5b", "r1_distill_1.5b"):
        assert f" {name} " in text, name
    assert "A seconds-long check that every stage is wired" in text


def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    r = _cli("run-all", "conf=smoke", f"run.dir={tmp_path}/file/run")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot write to {tmp_path}/file/run: Not a directory" in " ".join(r.stderr.split())


def test_hints_repeat_the_users_overrides(tmp_path):
    # pasting a hint without conf= and run.dir= would act on the default preset's run
    where = ("conf=smoke", f"run.dir={tmp_path}/run")
    for args, hint in ((("show", "--stage", "cold_sft"), "r1pipe run --stage cold_sft"),
                       (("eval", "--stage", "reward_model"), "r1pipe show --stage reward_model"),
                       (("report",), "r1pipe run-all"),  # before eval's lock creates the run directory
                       (("eval", "--stage", "cold_sft"), "r1pipe run --stage cold_sft")):
        r = _cli(*args, *where)
        assert r.returncode == 1 and f"{hint} {' '.join(where)}" in " ".join(r.stderr.split()), r.stderr


def test_the_default_preset_is_said_when_no_conf_is_given(tmp_path):
    bare = _cli("status", f"run.dir={tmp_path}/run")
    assert bare.returncode == 0 and "preset: tiny (default; conf=NAME picks another" in bare.stderr
    assert "preset:" not in _cli("status", "conf=smoke", f"run.dir={tmp_path}/run").stderr


@pytest.mark.parametrize("args, hint", [
    (("run", "cold_sft"), "name a stage with --stage cold_sft"),
    (("show", "cold_sft"), "name a stage with --stage cold_sft"),
    (("run-all", "cold_sft"), "run-all takes --from cold_sft --to cold_sft; for that stage alone: r1pipe run --stage"),
    (("status", "cold_sft"), "r1pipe status takes no stage"),
    (("run", "--stage", "cold_sft", "cold_sft"), "the stage is given with --stage already; drop the extra cold_sft"),
])
def test_a_stage_named_without_stage_gets_told_how_this_command_takes_one(tmp_path, args, hint):
    r = _cli(*args, "conf=smoke", f"run.dir={tmp_path}/run")
    assert r.returncode == 2 and hint in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "run").exists()


def test_a_preset_printed_is_the_file_as_it_is(tmp_path):
    r = _cli("presets", "qwen2.5-1.5b", env={"COLUMNS": "40"})  # a narrow terminal must not rewrap a file
    file = Path(__file__).parent.parent / "conf/presets/qwen2.5-1.5b.yaml"
    assert r.returncode == 0 and r.stdout == file.read_text()


def test_a_preset_copied_out_runs_from_the_config_search_path(tmp_path):
    """`presets NAME --copy` writes an editable copy named after its file; R1PIPE_CONFIG_PATH finds it and a task
    file beside it, from outside the repository; a name that r1pipe's own conf/ has is refused, not ignored."""
    mine = tmp_path / "my_conf"
    r = _cli("presets", "smoke", "--copy", str(mine / "presets" / "mine.yaml"))
    assert r.returncode == 0 and f"R1PIPE_CONFIG_PATH={mine} r1pipe run-all conf=mine" in " ".join(r.stdout.split())
    text = (mine / "presets" / "mine.yaml").read_text()
    assert "\npreset: mine\n" in text and "preset: smoke" not in text
    (mine / "task").mkdir()
    (mine / "task" / "mytask.yaml").write_text((Path(__file__).parent.parent / "conf/task/arithmetic.yaml")
                                                .read_text().replace("name: arithmetic", "name: mytask"))
    env = {"R1PIPE_CONFIG_PATH": str(mine)}
    r = _cli("config", "conf=mine", "task=mytask", f"run.dir={tmp_path}/run", env=env)
    assert r.returncode == 0 and "preset: mine" in r.stdout and "name: mytask" in r.stdout, r.stderr
    listed = _cli("presets", env=env)
    assert "mine" in listed.stdout and str(mine / "presets") in " ".join(listed.stdout.split())

    again = _cli("presets", "smoke", "--copy", str(mine / "presets" / "mine.yaml"), env=env)
    assert again.returncode == 1 and "exists; r1pipe does not overwrite it" in again.stderr
    (mine / "presets" / "tiny.yaml").write_text("preset: tiny\n")
    r = _cli("config", "conf=mine", env=env)
    assert r.returncode == 1 and "has the name of r1pipe's own presets/tiny.yaml" in " ".join(r.stderr.split())
    r = _cli("status", "conf=mine", env={"R1PIPE_CONFIG_PATH": str(tmp_path / "nowhere")})
    assert r.returncode == 1 and "R1PIPE_CONFIG_PATH names" in r.stderr and "not a directory" in r.stderr


def test_evaluating_a_stage_the_preset_does_not_evaluate_says_so(tmp_path):
    """tiny's base is random weights (base.eval=false): `eval --stage base` once spent 9 minutes scoring 0."""
    r = _cli("eval", "--stage", "base", "conf=tiny", f"run.dir={tmp_path}/run")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = " ".join(r.stderr.split())
    assert "tiny does not evaluate base (base.eval=false)" in line
    assert f"r1pipe eval --stage base conf=tiny run.dir={tmp_path}/run base.eval=true" in line
    r = _cli("eval", "--stage", "base", "conf=tiny", f"run.dir={tmp_path}/run", "base.eval=true")
    assert r.returncode == 1 and "base is " in r.stderr  # asked for: it goes on (to say base has not run)


def test_no_progress_bars_in_a_log_without_a_terminal(tmp_path):
    """Run from a pipe (CI, nohup, a log file), the tqdm bars of datasets, transformers and the Trainer would fill the
    output and the stage's log with carriage-return redraws; they are off, and the Trainer's log lines stay."""
    r = _cli("run-all", "--to", "cold_sft", *overrides_for(tmp_path / "run", "eval.after_stage=false"))
    assert r.returncode == 0, r.stderr[-2000:]
    logs = "".join(p.read_text() for p in (tmp_path / "run").rglob("log/*") if p.is_file())
    for text in (r.stdout + r.stderr, logs):
        assert "%|" not in text and "it/s]" not in text
    assert "'loss':" in logs or "'loss':" in r.stdout + r.stderr


def test_help_names_the_stages_and_the_presets():
    r = _cli("run", "-h", env={"COLUMNS": "300"})
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "base, cold_sft, reasoning_rl, rejection_sampling" in text
    assert "conf=PRESET (" in text and "tiny" in text and "qwen2.5-1.5b" in text and "default tiny" in text


def test_run_dry_run_says_what_a_real_run_would_refuse(tmp_path):
    """`run --stage --dry-run` checks the parents as `run` does; `run-all --dry-run` refuses several nodes as
    `run-all` does: a dry run that says ok must not hide what the real command refuses."""
    r = _cli("run", "--stage", "reasoning_rl", "--dry-run", *overrides_for(tmp_path / "run"))
    assert r.returncode == 1 and "stage reasoning_rl needs cold_sft, which is missing" in r.stderr
    assert "r1pipe run --stage cold_sft conf=smoke" in " ".join(r.stderr.split())
    r = _cli("run-all", "--dry-run", *overrides_for(tmp_path / "run", "launcher=torchrun", "launcher.nnodes=2",
                                                   "launcher.rdzv_endpoint=h:1"))
    assert r.returncode == 1 and "run-all runs on one node" in r.stderr
    r = _cli("run", "--stage", "base", "--dry-run", *overrides_for(tmp_path / "run"))
    assert r.returncode == 0 and "everything checked: ok" in r.stdout
    assert not (tmp_path / "run").exists()


def test_eval_and_show_of_a_stage_outside_the_recipe_or_without_a_model(tmp_path):
    where = (f"run.dir={tmp_path}/run",)
    r = _cli("eval", "--stage", "distill", "conf=qwen2.5-0.5b", *where)  # its run.stages stop before distill
    assert r.returncode == 1 and "stage distill is not in this recipe" in r.stderr and "KeyError" not in r.stderr
    r = _cli("show", "--stage", "distill", "conf=qwen2.5-0.5b", *where)
    assert r.returncode == 1 and "stage distill is not in this recipe" in r.stderr
    r = _cli("eval", "--stage", "rejection_sampling", "conf=smoke", *where)
    assert r.returncode == 1 and "rejection_sampling writes no model to evaluate" in r.stderr


def test_a_preset_must_name_itself_and_odd_directory_names_work(tmp_path):
    """A preset built on another without its own `preset:` line would run in the other's run directory under its
    name: refused. A config directory whose name has a comma is one directory to Hydra, not two."""
    mine = tmp_path / "a,b"
    (mine / "presets").mkdir(parents=True)
    (mine / "presets" / "nopre.yaml").write_text("# @package _global_\ndefaults: [tiny, _self_]\n")
    env = {"R1PIPE_CONFIG_PATH": str(mine)}
    r = _cli("config", "conf=nopre", env=env)
    assert r.returncode == 1 and "has no `preset: nopre` line (it gets preset: tiny)" in " ".join(r.stderr.split())
    (mine / "presets" / "nopre.yaml").write_text("defaults: [tiny, _self_]\npreset: nopre\n")
    r = _cli("config", "conf=nopre", env=env)  # without Hydra's header its keys would all be ignored
    assert r.returncode == 1 and "does not start with the line `# @package _global_`" in " ".join(r.stderr.split())
    (mine / "presets" / "nopre.yaml").write_text("# @package _global_\ndefaults: [tiny, _self_]\npreset: nopre\n")
    r = _cli("config", "conf=nopre", env=env)
    assert r.returncode == 0 and "preset: nopre" in r.stdout and "dir: runs/nopre" in r.stdout, r.stderr


def test_a_real_run_warns_of_the_world_size_for_the_stages_it_trains(run_copy):
    """smoke is complete here: with run.world_size=2 and one process, a run-all that skips everything says
    nothing; one that retrains cold_sft says its batch sizes were meant for 2 processes."""
    r = _cli("run-all", *overrides_for(run_copy, "run.world_size=2"))
    assert r.returncode == 0 and "warning:" not in r.stderr, r.stderr[-2000:]
    r = _cli("run-all", "--to", "cold_sft", *overrides_for(run_copy, "run.world_size=2",
                                                          "cold_sft.trainer.learning_rate=1e-4"))
    text = " ".join(r.stderr.split())
    assert r.returncode == 0 and "smoke's batch sizes are set for 2 training processes" in text, text[-2000:]
