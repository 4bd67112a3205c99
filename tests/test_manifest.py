import json

import pytest

from r1pipe import manifest as mf
from r1pipe.errors import R1Error

CFG = {"seed": 1, "data": {"size": 10}, "trainer": {"learning_rate": 1e-3, "logging_steps": 10}, "eval": True}


def test_fingerprint_ignores_run_only_keys_but_not_settings():
    base = mf.fingerprint("cold_sft", CFG, [], "v1")
    assert base == mf.fingerprint("cold_sft", {**CFG, "eval": False}, [], "v1")
    logging = {**CFG, "trainer": {**CFG["trainer"], "logging_steps": 1, "save_steps": 3}}
    assert base == mf.fingerprint("cold_sft", logging, [], "v1")
    lr = {**CFG, "trainer": {**CFG["trainer"], "learning_rate": 2e-3}}
    assert base != mf.fingerprint("cold_sft", lr, [], "v1")
    assert base != mf.fingerprint("cold_sft", CFG, [{"stage": "base", "fingerprint": "x"}], "v1")
    assert base != mf.fingerprint("cold_sft", CFG, [], "v2")
    assert base != mf.fingerprint("reasoning_rl", CFG, [], "v1")


def test_hash_path_sees_content_and_names(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "a.bin").write_bytes(b"abc")
    (d / "b.json").write_text("{}")
    h = mf.hash_path(d)
    assert h["files"] == 2 and h["size"] == 5
    (d / "a.bin").write_bytes(b"abd")
    assert mf.hash_path(d)["sha256"] != h["sha256"]
    (d / "a.bin").write_bytes(b"abc")
    assert mf.hash_path(d)["sha256"] == h["sha256"]
    (d / "a.bin").rename(d / "c.bin")
    assert mf.hash_path(d)["sha256"] != h["sha256"]


def _complete(tmp_path, fp="f" * 64):
    stage = tmp_path / "cold_sft"
    (stage / "model").mkdir(parents=True)
    (stage / "model" / "w.safetensors").write_bytes(b"weights")
    man = {"schema": 1, "stage": "cold_sft", "status": "complete", "fingerprint": fp, "outputs": {"model": "model"}}
    man["hashes"] = {"model": mf.hash_path(stage / "model")}
    mf.write_json_atomic(stage / mf.MANIFEST, man)
    return stage


def test_states(tmp_path):
    stage = _complete(tmp_path)
    assert mf.stage_state(stage, "f" * 64, False).state == "complete"
    assert mf.stage_state(stage, "e" * 64, False).state == "stale"
    assert mf.stage_state(stage, None, False).state == "stale"
    (stage / "model" / "w.safetensors").write_bytes(b"truncat")  # same size, other bytes
    assert mf.stage_state(stage, "f" * 64, False).state == "complete"  # the quick check cannot see it ...
    full = mf.stage_state(stage, "f" * 64, False, full=True)
    assert full.state == "corrupt" and "w.safetensors was modified" in full.reason  # ... the full one does
    (stage / "model" / "w.safetensors").write_bytes(b"trunc")
    s = mf.stage_state(stage, "f" * 64, False)
    assert s.state == "corrupt" and "w.safetensors changed size" in s.reason and "5 bytes, recorded 7" in s.reason
    (stage / "model" / "w.safetensors").unlink()
    assert "w.safetensors is missing" in mf.stage_state(stage, "f" * 64, False).reason
    (stage / "model" / "w.safetensors").write_bytes(b"weights")
    (stage / "model" / "extra.bin").write_bytes(b"")
    assert "extra.bin was added" in mf.stage_state(stage, "f" * 64, False).reason


def test_full_check_hashes_only_files_whose_stamp_moved(tmp_path, monkeypatch):
    import os

    stage = _complete(tmp_path)
    w = stage / "model" / "w.safetensors"
    hashed = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda f: hashed.append(f.name) or real(f))
    assert mf.outputs_intact(stage, mf.read_manifest(stage), full=True) is None
    assert hashed == []  # size and mtime as recorded: the fast path reads no bytes
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10**9))  # a touch, or a copy without -p
    assert mf.outputs_intact(stage, mf.read_manifest(stage), full=True) is None
    assert hashed == ["w.safetensors"]  # hashed once, matched ...
    assert mf.outputs_intact(stage, mf.read_manifest(stage), full=True) is None
    assert hashed == ["w.safetensors"]  # ... and remembered in .verified.json: fast again
    assert json.loads((stage / mf.VERIFIED).read_text()) == {"model/w.safetensors": [7, w.stat().st_mtime_ns]}
    w.write_bytes(b"WEIGHTS")  # same size, new bytes, new mtime
    problem = mf.outputs_intact(stage, mf.read_manifest(stage), full=True)
    assert problem == f"file {w} was modified after the stage finished (its sha256 differs from the manifest)"


def test_partial_needs_matching_marker_and_progress(tmp_path):
    stage = tmp_path / "cold_sft"
    stage.mkdir()
    assert mf.stage_state(stage, "a", True).state == "missing"
    mf.write_json_atomic(stage / mf.IN_PROGRESS, {"fingerprint": "a"})
    assert mf.stage_state(stage, "a", True).state == "partial"
    assert mf.stage_state(stage, "a", False).state == "missing"
    assert mf.stage_state(stage, "b", True).state == "missing"  # checkpoints of another config: start over


def test_corrupt_and_future_manifests_are_refused(tmp_path):
    stage = _complete(tmp_path)
    (stage / mf.MANIFEST).write_text("{not json")
    with pytest.raises(R1Error, match="corrupt manifest .*manifest.json"):
        mf.read_manifest(stage)
    (stage / mf.MANIFEST).write_text(json.dumps({"schema": 99, "stage": "cold_sft", "fingerprint": "x"}))
    with pytest.raises(R1Error, match="schema 99"):
        mf.read_manifest(stage)


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    mf.write_json_atomic(tmp_path / "m.json", {"a": 1})
    mf.write_json_atomic(tmp_path / "m.json", {"a": 2})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_editing_a_local_data_file_changes_the_fingerprint(tmp_path):
    import os

    f = tmp_path / "cot.jsonl"
    f.write_text('{"prompt": "1+1"}\n')
    cfg = {"data": {"path": str(f), "fields": {}}, "trainer": {}}
    before = mf.fingerprint("cold_sft", cfg, [], "v1")
    assert before == mf.fingerprint("cold_sft", cfg, [], "v1")
    f.write_text('{"prompt": "1+2"}\n{"prompt": "2+2"}\n')
    os.utime(f, ns=(1, 1))
    assert mf.fingerprint("cold_sft", cfg, [], "v1") != before
