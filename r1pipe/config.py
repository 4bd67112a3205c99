"""Configuration: Hydra's compose API behind the CLI, and the checks that run before any model loads.

`load(overrides)` composes `conf/config.yaml` with the preset picked by `conf=NAME` and the user's overrides;
`stage_config(cfg, name)` is the resolved, self-contained config one stage sees (interpolations such as
`${task.cold_start}` already filled in). This module never imports torch: `r1pipe config` and `status` use it.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

from r1pipe import fetch, stages
from r1pipe.errors import R1Error, UsageError


def conf_dir() -> Path:
    """The Hydra config directory: $R1PIPE_CONF_DIR, else `conf/` beside the package (editable install)."""
    env = os.environ.get("R1PIPE_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").is_file():
        raise R1Error(f"no config.yaml in {path}", hint="set R1PIPE_CONF_DIR to r1pipe's conf/ directory")
    return path


CONFIG_PATH_ENV = "R1PIPE_CONFIG_PATH"


def user_conf_dirs() -> list[Path]:
    """Your own config directories: $R1PIPE_CONFIG_PATH, separated by ':'. Each is laid out like conf/ (presets/,
    task/, launcher/, slurm/); its files are found by name as if they were in conf/ (`conf=mine` reads
    <dir>/presets/mine.yaml, `task=mytask` <dir>/task/mytask.yaml), so configs can live outside the repository."""
    dirs = []
    for part in filter(None, os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep)):
        path = Path(part).expanduser().resolve()
        if not path.is_dir():
            raise R1Error(f"{CONFIG_PATH_ENV} names {part}, which is not a directory",
                          hint="each entry is a directory laid out like conf/: presets/, task/, launcher/")
        if path != conf_dir().resolve() and path not in dirs:
            dirs.append(path)
    _refuse_shadows(dirs)
    return dirs


def _refuse_shadows(dirs: list[Path]) -> None:
    """Hydra searches r1pipe's conf/ first, so a file of yours named like one of r1pipe's would be silently
    ignored in favour of r1pipe's: refuse it instead."""
    own = conf_dir()
    for d in dirs:
        for path in sorted(d.glob("*/*.yaml")):
            if (own / path.parent.name / path.name).is_file():
                raise R1Error(f"{path} has the name of r1pipe's own {path.parent.name}/{path.name}, which would be "
                              "used instead of it", hint="rename it, and its `preset:` line to the new name"
                              if path.parent.name == "presets" else "rename it (a task: and its `name:` line)")


def load(overrides: list[str] | tuple[str, ...] = ()):
    """Compose the config. Bad overrides become one-line R1Errors that say what to write instead."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    overrides = list(overrides)
    _register_resolvers()
    for o in overrides:
        if "=" not in o and not o.startswith("~"):  # ~KEY deletes a key (Hydra)
            error = UsageError(f"override {o!r} is not KEY=VALUE", hint="e.g. conf=tiny cold_sft.trainer.max_steps=10")
            error.stage = o if o in stages.names() else None  # a bare stage name: the CLI says how to give it
            raise error
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=_with_stages(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException, YAMLError) as e:
        hint = _replace_suggestion(e, overrides) or _suggest_key(e, overrides) or _hydra_hint(e)
        raise R1Error(_hydra_message(e), hint=hint) from e
    _check_preset_name(cfg, overrides)
    return cfg


def _check_preset_name(cfg, overrides: list[str]) -> None:
    """A preset's `preset:` names its run directory (runs/<preset>) and every message about it. One that builds on
    another (`defaults: [tiny, _self_]`) without its own line would run in the other's directory, under its name."""
    name = chosen_preset(overrides) or DEFAULT_PRESET
    if cfg.get("presets") is not None:  # Hydra put the file's keys under its group: none of them took effect
        raise R1Error(f"conf={name}: {_preset_file(name)} does not start with the line `# @package _global_`, so "
                      "its settings landed under presets.* and none of them applies",
                      hint="add that line at its top, as every preset has; r1pipe presets NAME --copy writes it")
    if cfg.get("preset") != name and not any(o.split("=", 1)[0].lstrip("+") == "preset" for o in overrides):
        raise R1Error(f"conf={name}: {_preset_file(name)} has no `preset: {name}` line (it gets preset: "
                      f"{cfg.get('preset')}), so it would run as {cfg.get('preset')}, in that preset's run directory",
                      hint=f"add the line `preset: {name}` to it")


def _preset_file(name: str) -> Path | str:
    return preset_files().get(name, f"presets/{name}.yaml")


DEFAULT_PRESET = "tiny"


def chosen_preset(overrides: list[str]) -> str | None:
    """The preset a command line picks (its last `conf=NAME`), or None: the default."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "conf"]
    return chosen[-1] if chosen else None


def _with_stages(overrides: list[str]) -> list[str]:
    """The overrides Hydra composes: each registered stage's YAML (conf/stage/<name>.yaml, or under the stage
    module's CONF_DIR) at its config key, then the preset (`conf=NAME`: conf/presets/NAME.yaml), then the
    user's overrides. Stages come from the registry, so conf/config.yaml lists none; the preset comes after
    them so that it can set any stage's keys."""
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+") != "conf"]
    preset = chosen_preset(overrides) or DEFAULT_PRESET
    extra = [f"file://{d}" for d in user_conf_dirs()]
    extra += [f"file://{s.conf_dir.resolve()}" for s in map(stages.get, stages.names()) if s.conf_dir]
    # quoted: a directory name with a comma or brackets is one entry of Hydra's list, not its syntax
    search = [f"hydra.searchpath=[{','.join(_quoted(e) for e in extra)}]"] if extra else []
    return [*(f"+stage@{n}={n}" for n in stages.names()), f"+presets={preset}", *search, *rest]


def _quoted(text: str) -> str:
    if "'" in text or "\\" in text:
        raise R1Error(f"config directory {text.removeprefix('file://')} has a quote or a backslash in its name",
                      hint="move it to a directory whose path has neither")
    return f"'{text}'"


def _register_resolvers() -> None:
    """`${fetched:smollm2}`: the directory `r1pipe fetch smollm2` puts a model in (resolving fetches nothing)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("fetched"):
        OmegaConf.register_new_resolver("fetched", lambda name: str(fetch.model_dir(name)))


def replace_hint(key: str, value: str = "{...}") -> str:
    """How an override replaces a mapping (a data source) instead of merging into it: Hydra merges
    `+KEY={...}` into what is there, and `KEY={...}` refuses keys the mapping lacks; deleting it first works."""
    return f"to replace {key} as a whole, delete it first: '~{key}' '+{key}={value}'; +{key}={{...}} alone merges into it"


def _replace_suggestion(e: Exception, overrides: list[str]) -> str | None:
    """For `task.cold_start={path: x}` (a new key in an existing mapping), how to replace the mapping."""
    import re

    m = re.search(r"Could not override '([^']+)'", str(e))
    value = next((o.split("=", 1)[1] for o in overrides if m and o.split("=", 1)[0] == m.group(1)), "")
    return replace_hint(m.group(1), value) if value.strip().startswith("{") else None


def _suggest_key(e: Exception, overrides: list[str]) -> str | None:
    """For a mistyped key (`cold_sfft.trainer.max_steps=3`), the closest key the config has."""
    import re

    m = re.search(r"Could not override '([^']+)'", str(e))
    if not m:
        return None
    try:  # the same preset without the user's other overrides: every key a user can set
        keys = _dotted(to_plain(load([o for o in overrides if o.startswith("conf=")])))
    except R1Error:
        return None
    key = m.group(1)
    if key in keys:
        return None  # the key exists: the value is what is wrong, and the message says why
    parent, _, leaf = key.rpartition(".")
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
    if leaf in _SOURCE_KINDS and any(f"{parent}.{kind}" in keys for kind in _SOURCE_KINDS):
        # cold_sft.data.path=FILE: the source is a builtin now; a path beside it would name two
        return f"{parent} is a data source; to read your file instead: '~{parent}' '+{parent}={{{leaf}: {value}}}'"
    if parent in keys:  # a leaf under a known block: compared with its siblings, not on the shared prefix
        siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
        close = [f"{parent}.{k}" for k in difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.75)]
    else:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    if parent.endswith("trainer") and parent in keys:
        # a TRL field the preset leaves unset (warmup_ratio) is not a typo of one it sets (warmup_steps)
        new = f"a TRL field the preset leaves unset needs a +: +{key}={value} (TRL then checks the name)"
        return f"did you mean {close[0]}? {new[0].upper()}{new[1:]}" if close else new
    return f"did you mean {close[0]}? `r1pipe config` shows every key" if close else None


_SOURCE_KINDS = ("builtin", "path", "hub")


def _dotted(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    out = [prefix] if prefix else []
    for k, v in node.items():
        out += _dotted(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _hydra_message(e: Exception) -> str:
    text = " ".join(str(e).split())
    # Hydra wraps the useful sentence; keep the first one and drop its suggestion boilerplate.
    for cut in (" To append to your config use", " Config search path:"):
        text = text.split(cut)[0]
    cause = e.__cause__
    if cause is not None and "Could not override" in text:  # Hydra's line hides why; its cause says it
        text += f" ({str(cause).strip().splitlines()[0]})"
    return f"bad config: {text}"


def _hydra_hint(e: Exception) -> str | None:
    text = str(e)
    if "not in struct" in text or "Could not override" in text or "Key '" in text:
        return "`r1pipe config` shows every key; prefix a new key with + (e.g. +cold_sft.trainer.warmup_ratio=0.1)"
    if "Could not find" in text:
        where = ", ".join(str(d / "presets") for d in [conf_dir(), *user_conf_dirs()])
        return f"presets live in {where} (`r1pipe presets` lists them; {CONFIG_PATH_ENV} adds directories)"
    return None


def to_plain(node) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def preset_files() -> dict[str, Path]:
    """Every preset by name: r1pipe's own, then those in $R1PIPE_CONFIG_PATH's directories."""
    files: dict[str, Path] = {}
    for d in [conf_dir(), *user_conf_dirs()]:
        for path in sorted((d / "presets").glob("*.yaml")):
            files.setdefault(path.stem, path)
    return dict(sorted(files.items()))


def copy_preset(name: str, dest: Path) -> Path:
    """Copy preset NAME to `dest` (<dir>/presets/NEW.yaml) to edit, renamed after the file it becomes: its
    `preset:` line, which names the run directory, says NEW."""
    import re

    files = preset_files()
    if name not in files:
        raise R1Error(f"no preset named {name!r}", hint=f"presets are: {', '.join(files)}")
    if dest.suffix != ".yaml" or dest.parent.name != "presets":
        raise R1Error(f"{dest} is not a presets/NAME.yaml path",
                      hint=f"presets are found in a presets/ folder, e.g. r1pipe presets {name} --copy "
                           f"my_conf/presets/mine.yaml, then {CONFIG_PATH_ENV}=my_conf r1pipe run-all conf=mine")
    new = dest.stem
    if dest.exists():
        raise R1Error(f"{dest} exists; r1pipe does not overwrite it", hint="name another file")
    if new in files or (conf_dir() / "presets" / dest.name).is_file():
        raise R1Error(f"a preset named {new} exists already ({files.get(new)}); a copy must have a new name",
                      hint=f"e.g. r1pipe presets {name} --copy {dest.with_name(f'my_{new}.yaml')}")
    text = files[name].read_text(encoding="utf-8")
    text, n = re.subn(rf"^preset:[ \t]*{re.escape(name)}[ \t]*$", f"preset: {new}", text, count=1, flags=re.M)
    if n != 1:
        raise R1Error(f"{files[name]} has no `preset: {name}` line to rename", hint="add one, then copy it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text.replace(f"conf={name}", f"conf={new}"), encoding="utf-8")
    return dest


def presets() -> list[tuple[str, str]]:
    """(name, first sentence of its header comment) for each preset, by name: what `r1pipe presets` lists."""
    out = []
    for path in preset_files().values():
        about = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if text.startswith(("@package", "r1pipe ", "make ")) or not text:
                continue  # Hydra's directive and the command lines come before the description
            about.append(text)
        sentence = " ".join(about)
        out.append((path.stem, (sentence.split(". ")[0].rstrip(".") + ".") if sentence else ""))
    return out


def stage_config(cfg, name: str) -> dict[str, Any]:
    """A stage's resolved config. A stage that trains on task data (its SOURCES, r1pipe/stages) also carries
    the decontamination settings, so switching them changes its fingerprint. Which benchmarks were checked is
    recorded in the manifest instead: adding an eval benchmark must not retrain every model (evaluation says
    when a model was never checked)."""
    if name not in cfg:
        raise R1Error(f"no config for stage {name!r}", hint="a stage's defaults live in conf/stage/<name>.yaml")
    out = to_plain(cfg[name])
    if stages.get(name).reads_task_data(out):
        # decontaminate=null checks nothing, said as such (ctx.load_rows refuses a stage without the key)
        spec = cfg.get("decontaminate")
        out["decontaminate"] = to_plain(spec) if spec is not None else {"enabled": False}
    if runs_code(out):
        # a program's limits decide whether it passes: part of the fingerprint of the stages that run programs,
        # and of no other (a math run keeps its entries whatever the sandbox says)
        out["sandbox"] = to_plain(cfg.get("sandbox")) if cfg.get("sandbox") is not None else None
    return out


def runs_code(stage_cfg: dict[str, Any]) -> bool:
    """Whether a stage's verifier runs programs: `verifier: code` (or yours), or a data source with a per-row
    verifier column, which may name code."""
    from r1pipe.verifiers import runs_code as by_name

    if by_name(stage_cfg.get("verifier")):
        return True
    sources = [v for v in stage_cfg.values() if isinstance(v, dict)]
    return any("verifier" in (s.get("fields") or {}) for s in sources if isinstance(s.get("fields"), dict))


def run_dir(cfg) -> Path:
    return Path(cfg.run.dir)


# ----------------------------------------------------------------------------------------------------------
# The trainer: block is passed to TRL's config class unchanged, and the peft: block to peft.LoraConfig; check
# each against that class first, so a typo or a wrong type fails here, in one line, and not after a model has
# loaded.


def check_trainer_block(stage: str, block: dict[str, Any], config_cls: type) -> None:
    check_fields(f"{stage}.trainer", block, config_cls, f"trl.{config_cls.__name__}", MANAGED_TRAINER_KEYS)


def check_peft_block(stage: str, block: Any, config_cls: type) -> None:
    if not isinstance(block, dict):
        raise R1Error(f"{stage}.peft={block!r} is not a mapping of peft.{config_cls.__name__} fields",
                      hint=f"e.g. '{stage}.peft={{r: 16, lora_alpha: 32, target_modules: all-linear}}', or null "
                           "for full fine-tuning")
    check_fields(f"{stage}.peft", block, config_cls, f"peft.{config_cls.__name__}", MANAGED_PEFT_KEYS)


def check_fields(where: str, block: dict[str, Any], config_cls: type, label: str, managed: dict[str, str]) -> None:
    """Each key of `block` a field of the dataclass `config_cls` (`label` in messages), of its type, and not
    one of the `managed` keys r1pipe sets itself."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = typing.get_type_hints(config_cls)
    for key, value in block.items():
        at = f"{where}.{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]}?" if close else f"see the fields of {label}"
            raise R1Error(f"{at} is not a field of {label}", hint=hint)
        if key in managed:
            raise R1Error(f"{at} is set by r1pipe", hint=managed[key])
        if not _type_ok(value, hints.get(key, Any)):
            raise R1Error(f"{at}={value!r} has the wrong type",
                          hint=f"{label}.{key} takes {_type_name(hints.get(key, Any))}")


# Keys the runner owns: where checkpoints go decides resume, so users cannot move them.
MANAGED_TRAINER_KEYS = {
    "output_dir": "checkpoints live in <run.dir>/<stage>/trainer; set run.dir to move them",
    "resume_from_checkpoint": "r1pipe resumes partial stages on its own",
}
# LoRA trains an adapter on the stage's starting model (its init:), which peft records itself
MANAGED_PEFT_KEYS = {
    "base_model_name_or_path": "the adapter is trained on the stage's starting model (its init:, distill's student)",
    "inference_mode": "the stage trains the adapter, so r1pipe leaves inference_mode false",
}


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any or value is None:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        if issubclass(hint, str) and hint is not str:  # str-valued enums (schedulers, strategies)
            return isinstance(value, str)
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
