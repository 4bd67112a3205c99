"""The Hugging Face hub, asked once and never retried: whether it can be reached from here, what its local cache
holds, a local model directory's files (before anything reads them), and a model named by a stage checked
without loading it (`run-all --dry-run`).

Without network, huggingface_hub, transformers and datasets each retry and warn before failing (a minute of
duplicated warnings per model, then an error that blames "the path or hub id"). r1pipe asks once, with a short
connection timeout; when the hub is out of reach it switches those libraries to their caches, so a model that
is cached loads at once and one that is not fails at once, in one line that says so. No torch here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from r1pipe import fetch
from r1pipe.errors import R1Error, one_line

CONNECT_TIMEOUT_S = 3.0
_TRUE = ("1", "true", "yes", "on")
_reachable: bool | None = None  # asked once per process
_offline_why = ""  # why not, in words for an error message
_PATH_PREFIXES = ("/", "./", "../", "~")  # a name starting so can only be a local path


def reachable() -> bool:
    """Whether the hub answers from here ($HF_HUB_OFFLINE set counts as no). When it does not, the HF libraries
    are switched to their caches for the rest of the process (go_offline)."""
    global _reachable, _offline_why
    if _reachable is None:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
            _reachable, _offline_why = False, "HF_HUB_OFFLINE is set"
        else:
            host, port = _probe_address()
            try:
                socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
                _reachable = True
            except OSError as e:
                _reachable, _offline_why = False, f"no network here ({host}:{port}: {one_line(e, 80)})"
        if not _reachable:
            go_offline()
    return _reachable


def _probe_address() -> tuple[str, int]:
    """Where a connection must get through to reach the hub: the proxy the HF client would use for it, if any
    (HTTPS_PROXY & co., NO_PROXY honoured), else the endpoint itself at its scheme's port."""
    import urllib.request

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, scheme = url.hostname or "huggingface.co", url.scheme or "https"
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    return host, url.port or (80 if scheme == "http" else 443)


def go_offline() -> None:
    """Make huggingface_hub, transformers and datasets read their caches only. They read the environment when
    imported, so a module already imported is told too."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        if module in sys.modules:
            for attr in attrs:
                if hasattr(sys.modules[module], attr):
                    setattr(sys.modules[module], attr, True)


def expand(name: str | Path) -> str | Path:
    """`~/models/x` as the directory it names: transformers does not expand `~` and would take it for a hub id."""
    return Path(name).expanduser() if str(name).startswith("~") else name


def is_local(name: str | Path) -> bool:
    """As transformers decides: a directory here is loaded from disk; a path-looking name (/, ./, ../, ~) can only
    mean one; anything else is a hub id."""
    text = str(name)
    return text.startswith(_PATH_PREFIXES) or Path(text).expanduser().is_dir()


def cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the hub cache here holds the model's config.json (at `revision`)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - a malformed id is not cached; check_model says what is wrong with it
        return False


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def require(name: str | Path, where: str = "", revision: str | None = None) -> None:
    """Before a model loads: a hub id that is neither cached nor reachable fails now, in one line (rather than
    after a minute of retries). A cached one then loads from the cache without asking the hub."""
    text = str(name)
    if is_local(text) or reachable() or cached(text, revision):
        return
    raise R1Error(f"{where + ': ' if where else ''}cannot reach the hub for {text}: {_offline_why}, and it is not "
                  f"in the hub cache ({cache_dir()})",
                  hint=f"download it where there is network (`hf download {text}`) and copy the cache here, or "
                       "point the key at a local save_pretrained directory")


def missing_local_dir(path: str | Path) -> None:
    """A path that can only be local (absolute, ./, ../, ~) and is not a directory: say so, rather than let
    the hub client call it a malformed repo id."""
    text = str(path)
    if text.startswith(_PATH_PREFIXES) and not Path(text).expanduser().is_dir():
        what = "is a file, not a model directory" if Path(text).expanduser().exists() else "does not exist"
        raise R1Error(f"model path {text} {what}",
                      hint=fetch.fetch_hint(text) or "point it at a save_pretrained directory, or use a hub id")


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def refuse_pickled_weights(path: str | Path) -> None:
    """A local model directory with pickled weights and no safetensors is refused before anything reads it:
    unpickling a file can run code, so r1pipe loads weights from safetensors only."""
    p = Path(path).expanduser()
    if not p.is_dir() or any(p.glob("*.safetensors")):
        return
    pickled = sorted(f.name for pattern in PICKLED_WEIGHTS for f in p.glob(pattern))
    if pickled:
        raise R1Error(
            f"model at {path} has only pickled weights ({', '.join(pickled[:3])}); r1pipe loads safetensors only",
            hint="convert it once where you trust the file: from_pretrained(dir).save_pretrained(new) writes "
                 "safetensors",
        )


def check_model(name: str | Path, where: str, revision: str | None = None) -> str:
    """Check a model a stage will load (with its tokenizer), loading nothing: 'ok, ...' or 'not checked: why' (the
    hub cannot be asked from here). What is wrong wherever it runs (a missing directory, pickled weights, no
    such repository) raises."""
    text = str(name)
    if is_local(text):
        try:
            missing_local_dir(text)
            refuse_pickled_weights(text)
        except R1Error as e:
            raise R1Error(f"{where}: {e.message}", hint=e.hint) from e
        d = Path(text).expanduser()
        try:
            model_type = json.loads((d / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError) as e:
            raise R1Error(f"{where}: {d} has no readable config.json ({one_line(e, 120)})",
                          hint="point it at a directory written by save_pretrained") from e
        weights = sorted(d.glob("*.safetensors"))
        if not weights:
            raise R1Error(f"{where}: {d} has no *.safetensors weights", hint="point it at a directory written by "
                          "save_pretrained (safetensors is its default)")
        if not any((d / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                "vocab.json")):
            raise R1Error(f"{where}: {d} has no tokenizer", hint="save the tokenizer beside the model "
                          "(tokenizer.save_pretrained(dir))")
        size = sum(w.stat().st_size for w in weights)
        return f"ok, local {model_type or 'model'}, {size / 1e6:,.0f} MB of safetensors"
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as e:
        raise R1Error(f"{where}: {text!r} is neither a directory here nor a hub id ({one_line(e, 160)})",
                      hint="a hub id is OWNER/NAME; a local path starts with / or ./") from e
    if cached(text, revision):
        return "ok, in the hub cache here"
    if not reachable():
        return f"not checked: {_offline_why}, and not in the hub cache ({cache_dir()})"
    return _ask_hub(text, where, revision)


def _ask_hub(repo_id: str, where: str, revision: str | None) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=False, timeout=10)
    except GatedRepoError:
        return "not checked: a gated model; accept its terms on the hub and log in (`hf auth login`)"
    except RevisionNotFoundError as e:
        raise R1Error(f"{where}: {repo_id} has no revision {revision!r}", hint="check the revision") from e
    except RepositoryNotFoundError as e:
        raise R1Error(f"{where}: no model {repo_id} on the hub (or it is private)",
                      hint="check the id; for a private model, log in (`hf auth login`)") from e
    except Exception as e:  # noqa: BLE001 - a timeout or a proxy: it could not be asked, which is not an error
        return f"not checked: the hub did not answer ({one_line(e, 120)})"
    files = [s.rfilename for s in info.siblings or []]
    if not any(f.endswith(".safetensors") for f in files):
        raise R1Error(f"{where}: {repo_id} on the hub has no safetensors weights; r1pipe loads safetensors only",
                      hint="convert it once where you trust the file (from_pretrained, then save_pretrained)")
    return "ok, on the hub"
