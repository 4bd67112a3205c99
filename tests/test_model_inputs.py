"""A local model directory a stage reads (base.model, distill.student.model, a reward model by path) enters its
fingerprint by content, through the outputs' fast path: size+mtime stamps, re-hashing only a file that moved."""

import os
from pathlib import Path

import pytest
from conftest import save_tiny_model

from r1pipe import config, runner, stages, state
from r1pipe import manifest as mf


@pytest.fixture
def base_from_dir(tmp_path):
    model_dir = save_tiny_model(tmp_path / "my-model")
    ov = ["conf=smoke", f"run.dir={tmp_path / 'run'}", f"base.model={model_dir}", "run.stages=[base]"]
    runner.run_stage(config.load(ov), "base", ov)
    return model_dir, config.load(ov)


@pytest.fixture
def hash_calls(monkeypatch):
    """The files hashed (their bytes read) since the test began."""
    calls = []
    real = mf.sha256_file

    def counting(path):
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(mf, "sha256_file", counting)
    return calls


def _rewrite_byte(path):
    """Flip the last byte in place: same size, new bytes."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_editing_the_base_model_directory_makes_base_stale_naming_it(base_from_dir, hash_calls):
    model_dir, cfg = base_from_dir
    manifest = mf.read_manifest(Path(cfg.run.dir) / "base")
    assert manifest["inputs"]["model"]["path"] == str(model_dir.resolve())
    assert "model.safetensors" in manifest["inputs"]["model"]["index"]

    assert state.states(cfg)["base"].state == "complete"
    assert hash_calls == []  # untouched: no byte of the model directory read again

    weights = model_dir / "model.safetensors"
    _rewrite_byte(weights)
    st = state.states(cfg)["base"]
    assert st.state == "stale" and str(model_dir.resolve()) in st.reason and "model.safetensors differs" in st.reason
    assert hash_calls == ["model.safetensors"]  # only the file whose stamp moved
    plan = state.plan(cfg, ["base"])
    assert plan[0].action == "run" and "model directory" in plan[0].reason


def test_a_file_added_to_the_model_directory_makes_base_stale(base_from_dir):
    model_dir, cfg = base_from_dir
    (model_dir / "added_tokens_extra.json").write_text("{}")
    st = state.states(cfg)["base"]
    assert st.state == "stale" and "added_tokens_extra.json differs" in st.reason


def test_a_touched_but_unchanged_file_is_hashed_once_then_trusted(base_from_dir, hash_calls):
    model_dir, cfg = base_from_dir
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert state.states(cfg)["base"].state == "complete"  # same bytes: the same fingerprint
    assert hash_calls == ["model.safetensors"]
    hash_calls.clear()
    assert state.states(cfg)["base"].state == "complete"
    assert hash_calls == []  # remembered in .verified.json: the next status is fast again


def test_the_fast_path_trusts_stamps_as_the_outputs_check_does(base_from_dir, hash_calls):
    # the mtime trick: new bytes under the old size and mtime are not seen, which shows nothing was re-read
    model_dir, cfg = base_from_dir
    weights = model_dir / "model.safetensors"
    stamp = weights.stat()
    _rewrite_byte(weights)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert state.states(cfg)["base"].state == "complete" and hash_calls == []


def test_which_config_keys_name_a_local_model_directory(tmp_path):
    local = tmp_path / "student"
    local.mkdir()
    assert stages.get("base").local_models({"model": str(local)}) == {"model": local}
    assert stages.get("base").local_models({"model": "Qwen/Qwen2.5-0.5B"}) == {}  # a hub id: its id and revision count
    assert stages.get("base").local_models({"model": None}) == {}
    assert stages.get("distill").local_models({"student": {"model": str(local)}}) == {"student.model": local}
    prefs = {"helpfulness": {"model": "reward_model"}, "harmlessness": {"model": str(local)},
             "other": {"model": "org/rm"}, "off": None}
    assert stages.get("alignment_rl").local_models({"preference_rewards": prefs}) == \
        {"preference_rewards.harmlessness.model": local}


def test_the_model_directory_digest_enters_the_fingerprint():
    cfg = {"model": "/m", "seed": 1}
    assert mf.fingerprint("base", cfg, [], "v1") == mf.fingerprint("base", cfg, [], "v1", model_dirs={})
    assert mf.fingerprint("base", cfg, [], "v1", model_dirs={"model": "a"}) != \
        mf.fingerprint("base", cfg, [], "v1", model_dirs={"model": "b"})
