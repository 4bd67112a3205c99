"""What `make gpu-check` relies on, tested without a GPU (CI runs the check itself at toy sizes: .ci/run)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What the GPU image provides (its package list, /work/.library/device/KINDS.md, read 2026-11-17 and seen on
# the machine 2026-11-30): every other runtime dependency must travel as a wheel.
ON_THE_IMAGE = {"torch", "accelerate", "tokenizers", "safetensors", "typer", "rich", "matplotlib", "peft"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_on_the_image_or_carried_as_a_wheel():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    script = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    carried = {_name(p) for p in re.search(r'^PKGS="([^"]+)"', script, re.M).group(1).split()}
    missing = {_name(d) for d in deps} - ON_THE_IMAGE - carried
    assert not missing, f"add {sorted(missing)} to PKGS in scripts/gpu_wheels.sh (or to ON_THE_IMAGE if the image has it)"
    # hydra-core's antlr4 pin has no wheel on PyPI: the script builds one
    assert "antlr4-python3-runtime" in script and "pip wheel" in script


def test_on_accelerator_moves_a_cpu_model_to_this_ranks_gpu(monkeypatch):
    import torch

    from r1pipe.generation import on_accelerator

    class Model:
        device = torch.device("cpu")

        def to(self, where):
            self.moved_to = where
            return self

    m = Model()
    assert on_accelerator(m) is m and not hasattr(m, "moved_to")  # no GPU: left where it is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert on_accelerator(m).moved_to == "cuda:1"  # a launched rank's own GPU, not always the first


def test_no_gpu_figure_without_a_gpu(monkeypatch):
    from r1pipe import resources

    monkeypatch.delitem(sys.modules, "torch", raising=False)  # a stage that never imported torch
    assert resources.gpu_peak_mb(reset=True) is None and resources.gpu_peak_mb() is None
    assert "torch" not in sys.modules  # asking did not import it


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_gpu_check_sizes_name_every_setting(device):
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    sizes = gpu_check.SIZES[device]
    assert set(sizes) == set(gpu_check.SIZES["cuda"])
    assert sizes["chain_conf"] in {p.stem for p in (ROOT / "conf" / "presets").glob("*.yaml")}
