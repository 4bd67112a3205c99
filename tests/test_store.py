"""The stage store: results keyed by fingerprint, never destroyed by a change of config; shared between runs;
one writer per entry; `gc` the only thing that deletes."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import overrides_for
from test_cli import _cli, _probe
from test_pipeline import _held_after_save, _kill_when

from r1pipe import config, runner, state, store
from r1pipe.errors import R1Error

LR = "cold_sft.trainer.learning_rate=5e-4"


def _run_all(run_dir, *extra, **kw):
    ov = overrides_for(run_dir, *extra)
    return runner.run_all(config.load(ov), ov, **kw)


def _actions(steps):
    return {s.stage: s.action for s in steps}


def _entry(run_dir, stage):
    return (run_dir / stage).resolve()


def test_a_change_keeps_the_old_entry_and_changing_it_back_trains_nothing(run_copy):
    old = _entry(run_copy, "cold_sft")
    old_manifest = (old / "manifest.json").read_bytes()
    assert (run_copy / "cold_sft").is_symlink() and old.parent == run_copy.resolve() / "store" / "cold_sft"

    steps = _run_all(run_copy, LR, stop="reasoning_rl")
    assert _actions(steps) == {"base": "skip", "cold_sft": "run", "reasoning_rl": "run"}
    new = _entry(run_copy, "cold_sft")
    assert new != old and new.name == json.loads((new / "manifest.json").read_text())["fingerprint"]
    assert (old / "manifest.json").read_bytes() == old_manifest  # the previous result is untouched

    steps = _run_all(run_copy, stop="reasoning_rl")  # changed back
    assert _actions(steps) == {"base": "skip", "cold_sft": "skip", "reasoning_rl": "skip"}
    assert [s.reason for s in steps][1] == "complete in the store (run-all links it)"
    assert _entry(run_copy, "cold_sft") == old and (old / "manifest.json").read_bytes() == old_manifest


def test_a_stage_killed_under_one_config_resumes_after_another_config_ran(run_copy, tmp_path):
    """kill -9 mid-training, change a fingerprinted key, run that to completion, change it back: the killed
    attempt's checkpoint is still in its entry and the run resumes from it."""
    extra = ("cold_sft.trainer.max_steps=40", "cold_sft.trainer.save_steps=10", "eval.after_stage=false")
    ov = overrides_for(run_copy, *extra)
    held = tmp_path / "held"
    assert _kill_when(_held_after_save(10, held, "run", "--stage", "cold_sft", *ov), held), "no checkpoint"
    killed = _entry(run_copy, "cold_sft")
    assert (killed / "trainer" / "checkpoint-10").is_dir() and not (killed / "manifest.json").exists()

    steps = _run_all(run_copy, *extra, LR, stop="cold_sft")
    assert _actions(steps)["cold_sft"] == "run" and _entry(run_copy, "cold_sft") != killed
    assert (killed / "trainer" / "checkpoint-10").is_dir()  # the other config's attempt left it alone

    steps = _run_all(run_copy, *extra, stop="cold_sft")
    assert _actions(steps)["cold_sft"] == "resume" and _entry(run_copy, "cold_sft") == killed
    m = json.loads((killed / "manifest.json").read_text())
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] == 10 and m["metrics"]["global_step"] == 40


def test_two_runs_sharing_a_store_started_together_train_each_stage_once(smoke_run, tmp_path):
    shared = tmp_path / "shared-store"
    procs, logs = [], []
    for name in ("a", "b"):
        log = open(tmp_path / f"{name}.log", "w")
        cmd = [sys.executable, "-m", "r1pipe.cli", "run-all", *overrides_for(tmp_path / name), f"store.dir={shared}",
               "--to", "reasoning_rl"]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        logs.append(tmp_path / f"{name}.log")
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.read_text()[-2000:] for p in logs]
    text = "".join(p.read_text() for p in logs)
    for stage in ("base", "cold_sft", "reasoning_rl"):
        assert text.count(f"{stage}: running") == 1, text  # trained by one run, skipped by the other
        assert _entry(tmp_path / "a", stage) == _entry(tmp_path / "b", stage)
        assert _entry(tmp_path / "a", stage).is_relative_to(shared)
    assert "waiting for process" in text or text.count("complete, skipped") >= 3


def test_gc_deletes_only_what_no_run_uses_and_keeps_the_newest_on_request(run_copy):
    _run_all(run_copy, "cold_sft.trainer.learning_rate=4e-4", stop="cold_sft")
    _run_all(run_copy, LR, stop="cold_sft")
    used = {s: _entry(run_copy, s) for s in ("base", "cold_sft", "reasoning_rl")}
    ov = overrides_for(run_copy, LR)
    r = _cli("gc", "--dry-run", *ov)
    assert r.returncode == 0 and "delete" in r.stdout and "would free" in r.stdout, r.stderr
    # two cold_sft entries unused (the smoke one and 4e-4's); reasoning_rl's old entry is still linked (stale)
    found = store.entries(store.root(config.load(ov)))
    unused = {e.path for e in store.unused(found)}
    assert used["cold_sft"] not in unused and used["base"] not in unused
    assert sum(e.stage == "cold_sft" for e in found) == 3 and sum(p.parent.name == "cold_sft" for p in unused) == 2
    assert all(p.exists() for p in unused)  # --dry-run deleted nothing

    r = _cli("gc", "--keep-last", "1", *ov)
    assert r.returncode == 0, r.stderr
    left = {e.path for e in store.entries(store.root(config.load(ov))) if e.stage == "cold_sft"}
    assert used["cold_sft"] in left and len(left) == 2  # the newest unused one kept
    r = _cli("gc", *ov)
    left = {e.path for e in store.entries(store.root(config.load(ov))) if e.stage == "cold_sft"}
    assert left == {used["cold_sft"]} and all(p.exists() for p in used.values())
    assert [s.action for s in _run_all(run_copy, LR, stop="cold_sft")] == ["skip", "skip"]


def test_gc_leaves_an_entry_a_run_is_writing(run_copy):
    cfg = config.load(overrides_for(run_copy))
    _run_all(run_copy, LR, stop="cold_sft")
    _run_all(run_copy, stop="cold_sft")  # back: the 5e-4 entry is unused
    (doomed,) = store.unused(store.entries(store.root(cfg)))
    with store.lock(store.root(cfg), doomed.stage, doomed.fingerprint):
        code = "import sys; from r1pipe import store; sys.exit(store.delete(store.Entry(*sys.argv[1:3], __import__('pathlib').Path(sys.argv[3]), 0, 'complete', 0.0)))"
        r = subprocess.run([sys.executable, "-c", code, doomed.stage, doomed.fingerprint, str(doomed.path)])
    assert r.returncode == 0 and doomed.path.exists()  # busy: kept (delete returned False)
    assert store.delete(doomed) and not doomed.path.exists()


def test_status_shows_the_store_without_importing_torch(run_copy):
    _run_all(run_copy, LR, stop="cold_sft")
    stdout, stderr = _probe("status", *overrides_for(run_copy))
    assert "HEAVY= CODE=0" in stdout and "not used by any run: 1" in " ".join(stdout.split()), stdout + stderr
    stdout, stderr = _probe("gc", "--dry-run", *overrides_for(run_copy))
    assert "HEAVY= CODE=0" in stdout and "would free" in stdout, stdout + stderr


def test_a_run_made_before_the_store_is_adopted_without_retraining(smoke_run, tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for child in smoke_run.iterdir():  # the old layout: a real directory per stage, no store
        if child.is_symlink():
            shutil.copytree(child.resolve(), legacy / child.name)
    before = {p.parent.name: p.read_bytes() for p in legacy.glob("*/manifest.json")}
    steps = _run_all(legacy)
    assert all(s.action == "skip" for s in steps)
    after = {p.parent.name: p.read_bytes() for p in legacy.glob("*/manifest.json")}
    assert after == before and all((legacy / s).is_symlink() for s in before)


def test_a_forced_rerun_replaces_its_own_entry_only(run_copy):
    other = _entry(run_copy, "reasoning_rl")
    t0 = os.stat(other / "manifest.json").st_mtime_ns
    entry = _entry(run_copy, "cold_sft")
    was = json.loads((entry / "manifest.json").read_text())["finished_at"]
    time.sleep(1.1)
    steps = runner.run_all(config.load(overrides_for(run_copy)), overrides_for(run_copy), start="cold_sft",
                           stop="cold_sft", force=True)
    assert _actions(steps) == {"cold_sft": "rerun"}
    assert _entry(run_copy, "cold_sft") == entry and json.loads((entry / "manifest.json").read_text())["finished_at"] != was
    assert os.stat(other / "manifest.json").st_mtime_ns == t0


def test_a_store_path_that_is_a_file_is_one_line(run_copy, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(R1Error, match="store.dir .*file is not a directory"):
        _run_all(run_copy, f"store.dir={tmp_path / 'file'}", stop="base")
    assert state.states(config.load(overrides_for(run_copy)))["cold_sft"].complete


def test_gc_sees_the_links_of_a_moved_run_and_of_a_store_reached_through_a_link(tmp_path):
    real = tmp_path / "disk" / "store"
    real.mkdir(parents=True)
    (tmp_path / "store-link").symlink_to(real)  # e.g. /scratch -> /mnt/big: the store's path goes through a link
    ov = ["--to", "cold_sft", f"store.dir={tmp_path / 'store-link'}", "eval.after_stage=false"]
    assert _cli("run-all", *overrides_for(tmp_path / "a"), *ov).returncode == 0
    (tmp_path / "a").rename(tmp_path / "b")  # moved: its registration names the old path
    r = _cli("gc", *overrides_for(tmp_path / "b"), f"store.dir={tmp_path / 'store-link'}")
    assert r.returncode == 0 and "freed 0.0 MB in 0 entries" in r.stdout, r.stdout
    assert all((tmp_path / "b" / s / "manifest.json").is_file() for s in ("base", "cold_sft"))


def test_gc_keeps_what_an_interrupted_force_rebuild_set_aside(run_copy):
    """A --force rebuild moves the finished entry to .replaced/ and is killed: that copy is the only finished
    one until the rebuild completes, so gc keeps it; once the entry is complete again it is a leftover."""
    cfg = config.load(overrides_for(run_copy))
    entry = _entry(run_copy, "cold_sft")
    aside = entry.parent / ".replaced" / entry.name
    aside.parent.mkdir()
    entry.rename(aside)  # as execute._set_aside leaves it when the rebuild is killed before finishing
    entry.mkdir()
    assert not any(e.path == aside for e in store.unused(store.entries(store.root(cfg))))
    shutil.rmtree(entry)
    shutil.copytree(aside, entry)  # the rebuild finished (its bytes do not matter here)
    assert any(e.path == aside for e in store.unused(store.entries(store.root(cfg))))
