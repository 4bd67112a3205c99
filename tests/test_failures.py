"""Bad input and failures as a user meets them: one line naming what, where and what to do, a non-zero exit,
no traceback without --debug, and every finished stage exactly as it was."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import overrides_for, remove_stage, snapshot

from r1pipe import config, runner, state
from r1pipe.errors import R1Error

TESTS = Path(__file__).parent


def _cli(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run([sys.executable, "-m", "r1pipe.cli", *args], capture_output=True, text=True, env=env)


def _one_line_error(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _drop(run_dir, *stages):
    for s in stages:
        remove_stage(run_dir, s)


def test_a_reward_function_that_raises_names_itself_and_the_stage(run_copy):
    _drop(run_copy, "reasoning_rl", "rejection_sampling", "second_sft", "alignment_rl", "distill")
    before = snapshot(run_copy)
    r = _cli("run", "--stage", "reasoning_rl",
             *overrides_for(run_copy, "+reasoning_rl.rewards.boom={function: 'conftest:raising_reward', weight: 1.0}"))
    line = _one_line_error(r, "reasoning_rl: reward boom (conftest:raising_reward) raised ValueError: could not parse the answer")
    assert "fix the function" in line
    assert not (run_copy / "reasoning_rl" / "manifest.json").exists()
    assert snapshot(run_copy) == before


def test_a_reward_returning_the_wrong_shape_is_refused():
    from r1pipe import rewards

    (fn,), _ = rewards.build({"short": {"function": "conftest:char_length_reward"}})
    assert fn(["ab", "abc"]) == [2.0, 3.0]
    (bad,), _ = rewards.build({"bad": {"function": "builtins:len"}})
    with pytest.raises(R1Error, match=r"reward bad \(builtins:len\) returned int for 2 completions"):
        bad(["ab", "abc"])


def test_nan_loss_fails_the_stage_and_it_is_never_complete(run_copy):
    _drop(run_copy, "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "alignment_rl", "distill")
    before = snapshot(run_copy)
    r = _cli("run", "--stage", "cold_sft", *overrides_for(run_copy, "cold_sft.trainer.learning_rate=1e30",
                                                           "cold_sft.trainer.logging_steps=1"))
    _one_line_error(r, "cold_sft: ", " is nan at step", "lower the learning rate")
    assert not (run_copy / "cold_sft" / "manifest.json").exists()
    assert snapshot(run_copy) == before
    st = state.states(config.load(overrides_for(run_copy)))
    assert st["cold_sft"].state in ("missing", "partial") and st["base"].complete


def test_a_newer_manifest_schema_is_refused_and_left_as_it_is(run_copy):
    path = run_copy / "second_sft" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "schema": 7}))
    before = snapshot(run_copy)
    for args in (("run-all",), ("run-all", "--force"), ("run", "--stage", "second_sft", "--force"),
                 ("run", "--stage", "alignment_rl")):
        r = _cli(*args, *overrides_for(run_copy))
        line = _one_line_error(r, f"{path} has manifest schema 7", "upgrade r1pipe")
        assert "--force" not in line  # a newer r1pipe's finished work is not ours to rebuild
    assert snapshot(run_copy) == before
    path.write_text(json.dumps({**m, "schema": "2"}))
    _one_line_error(_cli("run-all", *overrides_for(run_copy)), "corrupt manifest", "schema is '2'")


def test_a_tampered_parent_is_refused_naming_the_file_and_the_stage_to_rebuild(run_copy):
    weights = run_copy / "cold_sft" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: same size, so only the hash can see it
    mtime = weights.stat().st_mtime_ns
    weights.write_bytes(bytes(data))
    _drop(run_copy, "reasoning_rl")
    before = snapshot(run_copy)
    r = _cli("run", "--stage", "reasoning_rl", *overrides_for(run_copy))
    _one_line_error(r, f"file {weights} was modified", "r1pipe run --stage cold_sft --force")
    assert snapshot(run_copy) == before and not (run_copy / "reasoning_rl").exists()

    weights.write_bytes(bytes(data[:-10]))  # truncated: even `status` and run-all's plan see it
    os.utime(weights, ns=(mtime, mtime))
    r = _cli("run-all", *overrides_for(run_copy))
    _one_line_error(r, f"cold_sft: file {weights} changed size", "r1pipe run --stage cold_sft --force")
    r = _cli("status", *overrides_for(run_copy))
    assert r.returncode == 0 and "corrupt" in r.stdout


def test_an_unreadable_base_model_path_is_one_line(tmp_path):
    for model, needle in ((tmp_path / "nowhere", "nowhere does not exist"), (tmp_path / "garbage", "garbage")):
        if model.name == "garbage":
            model.mkdir()
            (model / "config.json").write_text("{not json")
        r = _cli("run", "--stage", "base", *overrides_for(tmp_path / "run", f"base.model={model}"))
        _one_line_error(r, needle)
        assert not (tmp_path / "run" / "base" / "manifest.json").exists()


@pytest.mark.parametrize("override,needle", [
    ("eval.k=two", "eval.k must be a whole number >= 0, got 'two'"),
    ("reasoning_rl.trainer.num_generations=3", "1 process x per_device_train_batch_size 4 x 1 steps per generation = 4 completions, not a multiple of num_generations 3"),
    ("cold_sfft.trainer.max_steps=3", "did you mean cold_sft.trainer.max_steps?"),
    ("rejection_sampling.sampling.k=-1", "rejection_sampling.sampling.k=-1 must be a positive integer"),
])
def test_bad_values_fail_before_any_model_loads(tmp_path, override, needle):
    r = _cli("run-all", "--dry-run", *overrides_for(tmp_path / "run", override))
    _one_line_error(r, needle)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("*/manifest.json"))


def test_a_disk_that_fills_while_saving_is_one_line_and_resumes(run_copy, monkeypatch, caplog):
    """In-process: the weights writer fails with ENOSPC at the second checkpoint. The real thing, on a small
    tmpfs, is the next test."""
    import errno

    import transformers.modeling_utils as mu

    _drop(run_copy, "second_sft", "alignment_rl", "distill")
    before = snapshot(run_copy)
    real = mu.safe_save_file
    calls = {"n": 0}

    def full(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint saves; the disk fills at the second
            raise OSError(errno.ENOSPC, "No space left on device", str(a[1]) if len(a) > 1 else None)
        return real(*a, **kw)

    monkeypatch.setattr(mu, "safe_save_file", full)
    ov = overrides_for(run_copy, "eval.after_stage=false")
    with pytest.raises(R1Error) as e:
        runner.run_stage(config.load(ov), "second_sft", ov)
    assert str(e.value).startswith("second_sft: no space left on the device holding")
    assert "run again without --force" in str(e.value)
    assert snapshot(run_copy) == before and not (run_copy / "second_sft" / "manifest.json").exists()
    monkeypatch.setattr(mu, "safe_save_file", real)
    steps = runner.run_all(config.load(ov), ov, stop="second_sft")
    assert ("second_sft", "resume") in [(s.stage, s.action) for s in steps]
    assert json.loads((run_copy / "second_sft" / "manifest.json").read_text())["metrics"]["resumed_from_step"] == 2


def test_a_forced_rerun_that_fails_midway_puts_the_finished_stage_back(run_copy, monkeypatch):
    """--force sets the complete stage aside; the rerun checkpoints once, then the disk fills: the finished
    stage comes back byte for byte, still complete, and its children stay complete too."""
    import errno

    import transformers.modeling_utils as mu

    before = snapshot(run_copy)
    real, calls = mu.safe_save_file, {"n": 0}

    def full(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(mu, "safe_save_file", full)
    ov = overrides_for(run_copy, "eval.after_stage=false")
    with pytest.raises(R1Error, match="second_sft: no space left"):
        runner.run_stage(config.load(ov), "second_sft", ov, force=True)
    assert calls["n"] >= 2  # it did checkpoint before failing: there was progress to weigh against
    assert snapshot(run_copy) == before and not any((run_copy / "store" / "second_sft" / ".replaced").glob("*"))
    st = state.states(config.load(overrides_for(run_copy)), full=True)
    assert all(s.complete for s in st.values())


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || "
                        "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return r.returncode == 0


ENOSPC_SCRIPT = r"""
set -u
mount -t tmpfs -o size=256m tmpfs "$MNT"  # bigger than LOW_DISK: only the filler makes it full
cp -a "$SRC" "$MNT/run"
# leave 150 KB free: enough to start second_sft, not to finish saving its checkpoints
avail=$(df -k --output=avail "$MNT" | tail -1)
fallocate -l $(( (avail - 150) * 1024 )) "$MNT/filler" || dd if=/dev/zero of="$MNT/filler" bs=1k count=$((avail - 150)) 2>/dev/null
python -m r1pipe.cli run --stage second_sft conf=smoke run.dir="$MNT/run" eval.after_stage=false 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
ls "$MNT/run/second_sft" > "$OUT/after_full.ls" 2>&1
python -c "import json,sys,glob; print(json.dumps({p.split('/')[-2]: open(p).read() for p in glob.glob(sys.argv[1] + '/*/manifest.json')}))" "$MNT/run" > "$OUT/manifests_full.json"
rm "$MNT/filler"
python -m r1pipe.cli run --stage second_sft conf=smoke run.dir="$MNT/run" eval.after_stage=false 2> "$OUT/again.err"
echo $? > "$OUT/again.rc"
cp "$MNT/run/second_sft/manifest.json" "$OUT/second_sft.json" 2>/dev/null
"""


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs")
def test_a_real_full_disk_while_saving(run_copy, tmp_path):
    _drop(run_copy, "second_sft", "alignment_rl", "distill")
    before = snapshot(run_copy)
    out, mnt = tmp_path / "out", tmp_path / "mnt"
    out.mkdir(), mnt.mkdir()
    env = {**os.environ, "SRC": str(run_copy), "MNT": str(mnt), "OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(TESTS)}
    subprocess.run(["unshare", "-rm", "bash", "-c", ENOSPC_SCRIPT], env=env, check=True, timeout=600)
    err = (out / "full.err").read_text()
    assert (out / "full.rc").read_text().strip() == "1", err[-2000:]
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "second_sft: no space left on the device" in lines[0] and "Traceback" not in err, err[-2000:]
    full = json.loads((out / "manifests_full.json").read_text())
    assert "second_sft" not in full  # never marked complete
    assert {k: json.loads(v)["hashes"] for k, v in full.items()} == {k: json.loads(v[0])["hashes"] for k, v in before.items()}
    assert snapshot(run_copy) == before  # the copy the full disk ran on was a copy: this checks the test itself
    assert (out / "again.rc").read_text().strip() == "0", (out / "again.err").read_text()[-2000:]
    assert json.loads((out / "second_sft.json").read_text())["status"] == "complete"


def test_run_all_finishes_an_evaluation_that_was_interrupted(run_copy):
    path = run_copy / "second_sft" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "eval": {}}))  # as a kill between the manifest and its evaluation leaves it
    (run_copy / "second_sft" / "eval.json").unlink()
    ov = overrides_for(run_copy)
    steps = runner.run_all(config.load(ov), ov)
    assert [(s.stage, s.action) for s in steps if s.action != "skip"] == [("second_sft", "evaluate")]
    after = json.loads(path.read_text())
    assert after["eval"]["greedy_accuracy"] == m["eval"]["greedy_accuracy"] and after["fingerprint"] == m["fingerprint"]

    # unevaluated again, and its weights changed in place (same size): they are not evaluated, nor cached
    path.write_text(json.dumps({**m, "eval": {}}))
    weights = run_copy / "second_sft" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(R1Error, match="second_sft: file .*model.safetensors was modified"):
        runner.run_all(config.load(ov), ov)
    assert json.loads(path.read_text())["eval"] == {}


def test_the_same_config_and_seed_give_the_same_run(smoke_run, tmp_path):
    """Determinism on CPU: a second smoke run in another directory trains the same weights and measures the
    same numbers (timings and paths aside)."""
    ov = overrides_for(tmp_path / "again")
    runner.run_all(config.load(ov), ov)
    for stage in ("cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model", "alignment_rl", "distill"):
        a = json.loads((smoke_run / stage / "manifest.json").read_text())
        b = json.loads((tmp_path / "again" / stage / "manifest.json").read_text())
        assert a["fingerprint"] == b["fingerprint"], stage
        assert {k: v["sha256"] for k, v in a["hashes"].items()} == {k: v["sha256"] for k, v in b["hashes"].items()}, stage
        assert _measured(a["metrics"]) == _measured(b["metrics"]), stage
        assert _measured(a["eval"]) == _measured(b["eval"]), stage


def _measured(d):
    """Metrics without timings and cache bookkeeping (wall clock differs run to run; nothing else may)."""
    if isinstance(d, dict):
        return {k: _measured(v) for k, v in d.items() if k not in ("cache", "seconds")
                and not (k.endswith("_s") or "per_s" in k or "per_second" in k or k.endswith("runtime"))}
    return d


@pytest.mark.parametrize("content,needles", [
    (b"", ("has no rows",)),
    (b'{"prompt": "1+1", "solution": "2"}\n{"prompt": "2+2", "solu', ("line 2",)),
    (b'{"prompt": "caf\xe9", "solution": "x"}\n', ("UTF-8",)),
    (b'{"prompt": "1+1"}\n', ("solution",)),
])
def test_bad_training_data_is_one_line_naming_the_file_and_nothing_finished_changes(run_copy, content, needles):
    data = run_copy.parent / "cold.jsonl"
    data.write_bytes(content)
    before = snapshot(run_copy)
    r = _cli("run", "--stage", "cold_sft", "--force", *overrides_for(run_copy, f"cold_sft.data={{path: {data}}}"))
    _one_line_error(r, "cold.jsonl", *needles)
    assert snapshot(run_copy) == before  # cold_sft's finished outputs were not wiped by the failed rerun
    assert not any((run_copy / "store" / "cold_sft" / ".replaced").glob("*"))  # set aside for the attempt, then put back
