"""Models named by a stage, checked without loading them (--dry-run), and a hub id without network: one line at
once, not a minute of retries. No network here: HF_HUB_OFFLINE stands for it."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import overrides_for

from r1pipe import hub, models
from r1pipe.errors import R1Error


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # an empty cache: nothing is in it
    monkeypatch.setattr(hub, "_reachable", None)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def _model_dir(path, *, weights=True, tokenizer=True, pickled=False):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    if pickled:
        (path / "pytorch_model.bin").write_bytes(b"\0")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def test_a_local_model_is_checked_by_its_files(tmp_path):
    assert hub.check_model(_model_dir(tmp_path / "good"), "base.model") == "ok, local qwen2, 2 MB of safetensors"
    for kwargs, message in (({"weights": False}, "has no *.safetensors weights"),
                            ({"tokenizer": False}, "has no tokenizer"),
                            ({"weights": False, "pickled": True}, "has only pickled weights")):
        bad = _model_dir(tmp_path / "-".join(message.split()), **kwargs)
        with pytest.raises(R1Error, match=re.escape(message)):
            hub.check_model(bad, "base.model")
    with pytest.raises(R1Error, match="does not exist"):
        hub.check_model(tmp_path / "nowhere", "base.model")
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(R1Error, match="base.model: .*noconfig has no readable config.json"):
        hub.check_model(tmp_path / "noconfig", "base.model")


def test_a_hub_id_offline_is_not_checked_and_a_malformed_one_is_an_error(offline):
    outcome = hub.check_model("Qwen/Qwen2.5-0.5B", "base.model")
    assert outcome.startswith("not checked: HF_HUB_OFFLINE is set, and not in the hub cache")
    with pytest.raises(R1Error, match="neither a directory here nor a hub id"):
        hub.check_model("not a//repo id", "distill.student.model")


def test_loading_a_hub_id_without_network_fails_at_once_in_one_line(offline):
    start = time.monotonic()
    with pytest.raises(R1Error, match="cannot reach the hub for Qwen/Qwen2.5-0.5B: HF_HUB_OFFLINE is set, and it "
                                      "is not in the hub cache") as e:
        models.load_tokenizer("Qwen/Qwen2.5-0.5B")
    assert "hf download Qwen/Qwen2.5-0.5B" in e.value.hint
    with pytest.raises(R1Error, match="cannot reach the hub"):
        models.load_causal_lm("Qwen/Qwen2.5-0.5B")
    assert time.monotonic() - start < 30  # generous: the point is no retry loop (it was 53 s of them)


def test_a_cached_hub_model_is_checked_offline(offline, tmp_path):
    snap = tmp_path / "hub-cache" / "models--acme--small" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    refs = tmp_path / "hub-cache" / "models--acme--small" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    assert hub.check_model("acme/small", "base.model") == "ok, in the hub cache here"
    hub.require("acme/small")  # cached: it may load offline, nothing raised


def test_the_dry_run_checks_the_base_model_and_fails_on_a_bad_one(tmp_path):
    good = _model_dir(tmp_path / "good")
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run-all", "--dry-run", "--to", "cold_sft",
                        *overrides_for(tmp_path / "run", f"base.model={good}")], capture_output=True, text=True)
    out = " ".join(r.stdout.split())
    assert r.returncode == 0 and "models (none loaded)" in out and "ok, local qwen2" in out, r.stdout + r.stderr
    assert "everything checked: ok" in out
    bad = _model_dir(tmp_path / "bad", tokenizer=False)
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run-all", "--dry-run",
                        *overrides_for(tmp_path / "run", f"base.model={bad}")], capture_output=True, text=True)
    assert r.returncode == 1 and "has no tokenizer" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_stops_before_any_work_when_a_later_stages_model_is_out_of_reach(tmp_path):
    """distill's student, a hub id neither cached nor reachable, fails the run before base trains, not hours later
    when distill starts."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run-all",
                        *overrides_for(tmp_path / "run", "distill.student.model=acme/student")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "distill.student.model: cannot reach the hub for acme/student" in " ".join(r.stderr.split())
    assert not (tmp_path / "run" / "base").exists()  # nothing ran


def test_the_hub_is_probed_where_the_client_would_connect(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                "no_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert hub._probe_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local")
    assert hub._probe_address() == ("mirror.local", 80)  # http's port, not 443
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    assert hub._probe_address() == ("proxy.corp", 3128)  # through the proxy the client would use
    monkeypatch.setenv("NO_PROXY", "mirror.local")
    assert hub._probe_address() == ("mirror.local", 80)


def test_no_answer_switches_the_libraries_to_their_caches_and_says_why(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(hub, "_reachable", None)
    monkeypatch.setattr(hub, "_offline_why", "")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.reachable() is False and hub.reachable() is False  # asked once
    assert hub._offline_why.startswith("no network here (127.0.0.1:9:")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True


def test_a_model_path_with_a_tilde_loads(tmp_path, monkeypatch):
    """transformers takes `~/x` for a hub id; r1pipe expands it, as its checks do."""
    from conftest import save_tiny_model

    save_tiny_model(tmp_path / "models" / "small")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.check_model("~/models/small", "base.model").startswith("ok, local")
    assert models.load_causal_lm("~/models/small").config.model_type == "qwen2"
    assert models.load_tokenizer("~/models/small").pad_token is not None
