"""`r1pipe run-all -m`: Hydra's sweep syntax expanded into members, each in its own directory of the sweep."""

import subprocess
import sys

import pytest
import yaml
from conftest import overrides_for

from r1pipe import cli, store, sweep
from r1pipe.errors import R1Error


def test_expand_is_the_product_in_hydra_order():
    members = sweep.expand(["conf=smoke", "seed=1,2", "cold_sft.trainer.max_steps=range(1,4)", "eval.k=2"])
    assert members == [["conf=smoke", f"seed={s}", f"cold_sft.trainer.max_steps={n}", "eval.k=2"]
                       for s in (1, 2) for n in (1, 2, 3)]  # the last axis varies fastest


def test_expand_keeps_what_is_not_a_sweep():
    assert sweep.expand(["conf=smoke", "a.b=[1,2]", "~c", "+d.e=3"]) == [["conf=smoke", "a.b=[1,2]", "~c", "+d.e=3"]]
    assert sweep.expand(["x=choice(a,b)", "+y=1e-4,3e-4"]) == [["x=a", "+y=0.0001"], ["x=a", "+y=0.0003"],
                                                              ["x=b", "+y=0.0001"], ["x=b", "+y=0.0003"]]


@pytest.mark.parametrize("override, message", [
    ("run.dir=a,b", "run.dir cannot be swept"),
    ("store.dir=choice(a,b)", "store.dir cannot be swept"),
    ("+run.dir=range(1,3)", "run.dir cannot be swept"),
    ("x=interval(0,1)", "a interval_sweep has no list of values"),
    ("conf=glob(*)", "a glob_choice_sweep has no list of values"),
    ("seed=shuffle(1,2)", "shuffle() would give member directories a new order"),
    ("seed=range(3,3)", "sweeps over no value"),
    ("seed=range(", "cannot read override 'seed=range('"),
])
def test_refusals_are_one_line(override, message):
    with pytest.raises(R1Error) as e:
        sweep.expand(["conf=smoke", override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_members_get_their_own_directory_and_share_a_store(tmp_path):
    expanded = sweep.expand(["conf=smoke", "run.dir=runs/x", "seed=1,2"])
    ms = sweep.members(expanded, tmp_path / "x-sweep", own_store=True)
    assert [m.dir for m in ms] == ["0", "1"] and [m.swept for m in ms] == [["seed=1"], ["seed=2"]]
    assert ms[1].overrides == ["conf=smoke", "seed=2", f"run.dir={tmp_path}/x-sweep/1", f"store.dir={tmp_path}/x-sweep/store"]
    assert "store.dir" not in " ".join(sweep.members(expanded, tmp_path / "s", own_store=False)[0].overrides)
    # a path Hydra would read as a sweep (comma) or reject (space) is quoted: each member stays one run
    [odd] = sweep.members([["seed=1"]], tmp_path / "a,b c", own_store=True)
    assert len(sweep.expand(odd.overrides)) == 1
    assert odd.overrides[1] == f"run.dir='{tmp_path}/a,b c/0'"


def test_plan_puts_the_sweep_beside_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(store.ENV, raising=False)
    s = sweep.plan(overrides_for(tmp_path / "x", "seed=1,2,3"))
    assert s.dir == tmp_path / "x-sweep" and len(s.members) == 3
    assert s.members[2].overrides[-2:] == [f"run.dir={tmp_path}/x-sweep/2", f"store.dir={tmp_path}/x-sweep/store"]
    assert sweep.plan(["conf=smoke", "seed=1,2"]).dir.as_posix() == "runs/smoke-sweep"  # run.dir's default
    # a store the user chose (store.dir, or the environment's) is every member's
    def stores(*overrides):
        return [o for o in sweep.plan(overrides_for(tmp_path / "x", "seed=1,2", *overrides)).members[0].overrides
                if o.startswith("store.dir=")]

    assert stores("store.dir=/s") == ["store.dir=/s"]
    monkeypatch.setenv(store.ENV, str(tmp_path / "shared"))
    assert stores() == []


def test_sweep_yaml_round_trip_and_missing(tmp_path):
    s = sweep.Sweep(tmp_path, [sweep.Member("0", ["seed=1", "run.dir=x/0"], ["seed=1"])])
    sweep.write(s)
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text()) == {
        "members": [{"dir": "0", "overrides": ["seed=1", "run.dir=x/0"], "swept": ["seed=1"]}]}
    assert sweep.read(tmp_path) == s and sweep.is_sweep(tmp_path)
    with pytest.raises(R1Error, match="sweep.yaml is missing"):
        sweep.read(tmp_path / "nothing")


def test_a_failed_member_does_not_stop_the_others(tmp_path, monkeypatch):
    ran = []

    def fake_run_all(cfg, overrides, start=None, stop=None, force=False):
        assert (tmp_path / "x-sweep" / "sweep.yaml").exists()  # written before the first member runs
        ran.append((cfg.seed, start, stop, force))
        if cfg.seed == 2:
            raise R1Error("cold_sft failed")

    monkeypatch.setattr(sweep.runner, "run_all", fake_run_all)
    s = sweep.plan(overrides_for(tmp_path / "x", "seed=1,2,3"))
    failed = sweep.run(s, stop="base", force=True)
    assert ran == [(1, None, "base", True), (2, None, "base", True), (3, None, "base", True)]
    assert [m.dir for m in failed] == ["1"]
    with pytest.raises(R1Error, match=r"sweep members failed: 1 \(seed=2\)"):  # the CLI exits non-zero
        cli._multirun(overrides_for(tmp_path / "x", "seed=1,2,3"), None, "base", False, False)


def test_a_member_that_does_not_compose_fails_before_any_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.runner, "run_all", lambda *a, **k: pytest.fail("no member may run"))
    s = sweep.plan([f"run.dir={tmp_path}/x", "conf=smoke,no_such_preset"])
    with pytest.raises(R1Error, match="sweep member 1 \\(conf=no_such_preset\\): "):
        sweep.run(s)
    assert not (tmp_path / "x-sweep" / "sweep.yaml").exists()


def test_run_all_multirun_runs_each_member_once(tmp_path):
    """The real thing, base only: two seeds, then the same command again skips both."""
    args = [sys.executable, "-m", "r1pipe.cli", "run-all", "-m", "--to", "base", *overrides_for(tmp_path / "x", "seed=1,2")]
    dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert f"member 1: r1pipe run-all conf=smoke seed=2 run.dir={tmp_path}/x-sweep/1" in dry.stdout
    assert dry.stdout.count("never completed") == 2 and not (tmp_path / "x-sweep").exists()

    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    members = yaml.safe_load((tmp_path / "x-sweep" / "sweep.yaml").read_text())["members"]
    assert [m["swept"] for m in members] == [["seed=1"], ["seed=2"]]
    fps = {yaml.safe_load((tmp_path / "x-sweep" / d / "base" / "manifest.json").read_text())["fingerprint"]
           for d in ("0", "1")}
    assert len(fps) == 2 and "2 of 2 members complete" in first.stdout
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr.count("base: complete, skipped") == 2, again.stderr
