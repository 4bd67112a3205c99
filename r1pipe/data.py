"""Data sources: the built-in tiny task, local JSONL/JSON/Parquet files, or a hub dataset, all normalized to
rows of {prompt, answer, solution} and validated on load.

A source is a dict from a task config:

    {builtin: arithmetic, size: 1000, seed: 1, exclude: {...held-out source...}}
    {path: data/train.jsonl, fields: {prompt: question, answer: answer, solution: response}}
    {hub: openai/gsm8k, name: main, split: train, fields: {...}, answer_pattern: '####\\s*(.+)$'}

`fields` maps r1pipe's names to the dataset's columns. A value with braces builds the field from several columns
instead (HumanEval's answer: '{test}\ncheck({entry_point})'; a list column in braces is one item per line), and
`solution_template` is the same for the solution (s1K: '<think>\n{deepseek_thinking_trajectory}\n</think>\n...').
Any other name `fields` maps is an extra column, kept as the dataset has it: GRPO hands it to every reward (a
code task's tests, a per-row `verifier`). A row missing a required field is an error that names the file, the
row and the field. Content is only ever read as data (no pickle, no eval).

A hub source reads a local copy instead of the network when $R1PIPE_DATA_MIRROR names a directory holding
`<owner>/<name>/<split>.jsonl` (or .parquet): air-gapped clusters, and `--dry-run` against fixture files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from r1pipe.config import replace_hint
from r1pipe.errors import R1Error
from r1pipe.tasks import arithmetic, smalltalk

NORMALIZED = ("prompt", "answer", "solution")
KINDS = ("builtin", "path", "hub")  # where a source's rows come from: it names exactly one (source_kind)


def source_kind(source: dict[str, Any], where: str = "data source", key: str | None = None,
                required: bool = True) -> str | None:
    """Where a source's rows come from: "builtin", "path" or "hub", the one of those keys it names (a key set
    to null names nothing). Loading, --dry-run, model cards and benchmarks all ask here, so they cannot disagree.

    Naming two is an error, not a precedence rule: Hydra's `+KEY={...}` (and a preset laid over a task) merges
    into the source already there, so a user's file would sit beside the builtin it was meant to replace.
    `where` is the source's place in the config; `key` the config key that replaces it (default: `where`).
    With required=False a source that names none gives None (a benchmark whose schema supplies the hub)."""
    named = [k for k in KINDS if source.get(k) is not None]
    if len(named) == 1:
        return named[0]
    if not named:
        if not required:
            return None
        raise R1Error(f"{where} names no builtin:, path: or hub: ({source})", hint="see conf/task/*.yaml")
    kind = next((k for k in named if k != "builtin"), named[0])  # the key a merge added, most likely
    raise R1Error(
        f"{where} names both {named[0]}: and {named[1]}: ({', '.join(f'{k}: {source[k]}' for k in named)})",
        hint=f"a source names one of them; {replace_hint(key or where, f'{{{kind}: {source[kind]}}}')}"
        if " " not in (key or where) else "a source names one of builtin:, path:, hub:",
    )


def source_name(source: dict[str, Any], where: str = "data source") -> str:
    """How messages name a source: builtin:arithmetic, hub:openai/gsm8k, or the file's path."""
    kind = source_kind(source, where)
    return str(source["path"]) if kind == "path" else f"{kind}:{source[kind]}"


def check_sources(node: Any, where: str, origins: dict[str, Any] | None = None) -> None:
    """Every data source in a config tree (a dict naming builtin:, path: or hub:, nested ones included) names
    exactly one of them: one line before any stage runs, not at the stage that loads it. `origins` maps config
    keys to sources ({"task.cold_start": {...}}): a source equal to one of them was interpolated from it, and
    the hint says to replace that key (the first that matches)."""
    if isinstance(node, dict):
        key = next((k for k, v in (origins or {}).items() if v == node), None)
        source_kind(node, f"{where} ({key})" if key else where, key=key, required=False)
        for k, v in node.items():
            check_sources(v, f"{where}.{k}", origins)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_sources(v, f"{where}.{i}", origins)


def load_rows(source: dict[str, Any], need: tuple[str, ...], where: str = "data source") -> list[dict[str, str]]:
    """Rows with at least the fields in `need`, from any kind of source (`where`: its place in the config)."""
    kind = source_kind(source, where)
    where = source_name(source, where)  # what messages about its rows name: the file, builtin or hub id
    if kind == "builtin":
        rows = _builtin(source, need)
    else:
        rows = _normalize(_read_raw(source, kind), source, need, where)
    limit = source.get("limit")
    rows = rows[: int(limit)] if limit is not None else rows
    if not rows:
        raise R1Error(f"data source {where} has no rows", hint="check the file, split or size")
    return with_prompt(rows, source, where)


def with_prompt(rows: list[dict[str, str]], source: dict[str, Any], where: str) -> list[dict[str, str]]:
    """How the model is asked, a task setting: `prompt_template` (a str.format string with {prompt}, e.g.
    R1-Zero's instructions around the question), `system_prompt` (a system turn before it) and `response_prefix`
    (the reply's start, which the model continues). The question itself stays in `question`, which
    decontamination compares; `chat(row)` and `ask(row)` build the turns."""
    template, system = source.get("prompt_template"), source.get("system_prompt")
    prefix = source.get("response_prefix")
    if template is None and system is None and not prefix:
        return rows
    if template is not None:
        check_template(template, where)
    for key, value in (("system_prompt", system), ("response_prefix", prefix)):
        if value is not None and not isinstance(value, str):
            raise R1Error(f"{where}: {key} must be a string, got {value!r}")
    out = []
    for row in rows:
        # the question (what decontamination compares) is the prompt field unless the source maps its own
        # (MBPP: the task's text, without the tests its prompt shows)
        row = {**row, "question": row.get("question", row["prompt"])}
        if template is not None:
            row["prompt"] = template.format(prompt=row["prompt"])
        if system:
            row["system"] = system
        if prefix:
            row["response_prefix"] = prefix
        out.append(row)
    return out


def check_template(template: Any, where: str = "prompt_template") -> str:
    """A prompt template must be a str.format string whose only placeholder is {prompt}."""
    import string

    if not isinstance(template, str):
        raise R1Error(f"{where}: prompt_template must be a string, got {template!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:  # unbalanced braces
        raise R1Error(f"{where}: prompt_template {template!r} is not a valid format string ({e})",
                      hint="write literal braces as {{ and }}") from e
    if names != {"prompt"}:
        raise R1Error(f"{where}: prompt_template {template!r} must contain {{prompt}} and no other placeholder",
                      hint="e.g. '{prompt}\\nPut the final answer in <answer></answer>.' (literal braces: {{ }})")
    return template


def chat(row: dict[str, str]) -> list[dict[str, str]]:
    """The turns that ask a row's question: its system prompt, if the task has one, then the user turn. Training
    data appends the whole reply to these."""
    turns = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return turns + [{"role": "user", "content": row["prompt"]}]


def ask(row: dict[str, str]) -> list[dict[str, str]]:
    """The turns a model is sampled from: `chat(row)`, then, if the task sets `response_prefix` (e.g. "<think>",
    as R1-Zero reproductions prefill), the start of the assistant's turn for the model to continue. Generation
    returns whole replies, the prefix included (`rewards.response_prefix`)."""
    prefix = row.get("response_prefix")
    return chat(row) + ([{"role": "assistant", "content": prefix}] if prefix else [])


def _read_raw(source: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The rows of a file or hub source as stored, before any field mapping."""
    return _read_file(Path(source["path"])) if kind == "path" else _read_hub(source)


def _builtin(source: dict[str, Any], need: tuple[str, ...]) -> list[dict[str, str]]:
    if source["builtin"] == smalltalk.NAME:
        return list(smalltalk.records(int(source.get("size", 1000)), int(source.get("seed", 0)),
                                      bool(source.get("heldout")), float(source.get("noise") or 0.0)))
    if source["builtin"] != arithmetic.NAME:
        raise R1Error(
            f"unknown builtin task {source['builtin']!r}", hint=f"builtins: {arithmetic.NAME}, {smalltalk.NAME}"
        )
    for key in ("size", "seed"):
        if key not in source:
            raise R1Error(f"builtin data source {source} has no {key}", hint="e.g. {builtin: arithmetic, size: 1000, seed: 1}")
    exclude: list[tuple[int, int]] = []
    try:
        if source.get("exclude"):
            ex = source["exclude"]
            exclude = arithmetic.problems(ex["size"], ex["seed"], digits=ex.get("digits") or arithmetic.DIGITS)
        pairs = arithmetic.problems(int(source["size"]), int(source["seed"]), exclude=exclude,
                                    digits=source.get("digits") or arithmetic.DIGITS)
    except ValueError as e:
        raise R1Error(str(e), hint="ask for fewer problems") from e
    slips = float(source.get("slips") or 0.0)
    if not 0.0 <= slips <= 1.0:
        raise R1Error(f"builtin data source {source_name(source)}: slips must be between 0 and 1, got {slips}",
                      hint="the share of solutions that forget one carry, e.g. slips: 0.3")
    return list(arithmetic.records(pairs, with_solution="solution" in need, slips=slips, seed=int(source["seed"])))


def _read_file(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise R1Error(f"data file {path} does not exist", hint="check the task's path (relative to where you run)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        try:
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise R1Error(f"{path}: line {i}: not valid JSON ({e.msg})", hint="fix or drop that line") from e
                    if not isinstance(row, dict):
                        raise R1Error(f"{path}: line {i}: expected a JSON object, got {type(row).__name__}")
                    rows.append(row)
        except UnicodeDecodeError as e:
            raise R1Error(f"{path}: not UTF-8 (byte {e.start})", hint="re-encode the file as UTF-8") from e
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise R1Error(f"{path}: not valid UTF-8 JSON ({e})") from e
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise R1Error(f"{path}: expected a JSON list of objects", hint="or use JSONL, one object per line")
        return data
    if suffix == ".parquet":
        from datasets import Dataset

        try:
            return Dataset.from_parquet(str(path)).to_list()
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise R1Error(f"{path}: cannot read as Parquet ({type(e).__name__}: {e})") from e
    raise R1Error(f"{path}: unsupported data file type {suffix!r}", hint="use .jsonl, .json or .parquet")


class DataUnavailable(R1Error):
    """A hub dataset that cannot be reached from here (offline, no local copy): --dry-run reports it as unchecked."""


def mirrored(source: dict[str, Any]) -> Path | None:
    """The local copy of a hub source under $R1PIPE_DATA_MIRROR, if there is one."""
    import os

    root = os.environ.get("R1PIPE_DATA_MIRROR")
    if not root:
        return None
    base = Path(root) / source["hub"] / source.get("split", "train")
    for suffix in (".jsonl", ".parquet", ".json"):
        if base.with_suffix(suffix).is_file():
            return base.with_suffix(suffix)
    raise R1Error(f"R1PIPE_DATA_MIRROR={root} has no copy of hub:{source['hub']} split {source.get('split', 'train')}",
                  hint=f"put it at {base}.jsonl (or .parquet), or unset R1PIPE_DATA_MIRROR")


def _read_hub(source: dict[str, Any]) -> list[dict[str, Any]]:
    copy = mirrored(source)
    if copy is not None:
        return _read_file(copy)
    from r1pipe import hub

    hub.reachable()  # no network: datasets reads its cache only, and fails at once instead of retrying
    from datasets import load_dataset

    try:
        ds = load_dataset(
            source["hub"], source.get("name"), split=source.get("split", "train"), revision=source.get("revision")
        )
    except Exception as e:  # network, auth, missing split: all end the same way for the user
        raise DataUnavailable(
            f"cannot load hub dataset {source['hub']}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            hint="check the id and split, or download it and point path: at a local copy",
        ) from e
    return ds.to_list()


def _normalize(raw: list[dict[str, Any]], source: dict[str, Any], need: tuple[str, ...], where: str):
    fields = {k: k for k in NORMALIZED} | dict(source.get("fields") or {})
    pattern = None
    if source.get("answer_pattern"):
        try:
            pattern = re.compile(source["answer_pattern"], re.S | re.M)
        except re.error as e:
            raise R1Error(f"{where}: answer_pattern {source['answer_pattern']!r} is not a valid regex ({e})") from e
        if pattern.groups < 1:
            raise R1Error(f"{where}: answer_pattern needs one capture group around the answer", hint=r"e.g. '####\s*(.+)$'")
    # a field given as "{col} ..." is built from columns; solution_template is the older spelling of that
    templates = {k: v for k, v in fields.items() if isinstance(v, str) and "{" in v}
    if source.get("solution_template"):
        templates["solution"] = source["solution_template"]
    keys = list(need) + [k for k in extra_fields(source) if k not in need]
    labels = {k: "solution_template" if k == "solution" and source.get("solution_template") else f"fields.{k}"
              for k in templates}
    template_cols = {k: _template_columns(templates[k], where, labels[k]) for k in keys if k in templates}
    rows = []
    for i, row in enumerate(raw, 1):
        out = {}
        for key in keys:
            if key in template_cols:
                out[key] = _fill(templates[key], template_cols[key], row, where, i, labels[key])
                continue
            col = fields[key]
            value = row.get(col)
            if value is None or (isinstance(value, (str, list, dict)) and not value) or (
                    isinstance(value, str) and not value.strip()):
                raise R1Error(
                    f"{where}: row {i}: missing field {col!r} (r1pipe's {key})",
                    hint=f"fix the row, or map {key} to another column with fields.{key}",
                )
            if key not in NORMALIZED:  # an extra column reaches rewards as the dataset has it (a list of tests...)
                out[key] = value
                continue
            value = _lines(value) if isinstance(value, list) else str(value)
            if key == "answer" and pattern is not None:
                m = pattern.search(value)
                if not m:
                    raise R1Error(f"{where}: row {i}: answer {value[:60]!r} does not match answer_pattern")
                value = m.group(1).strip()
            out[key] = value
        rows.append(out)
    return rows


def extra_fields(source: dict[str, Any]) -> list[str]:
    """The columns a source carries besides prompt/answer/solution: every other name its `fields` maps (a
    code task's `tests`, a per-row `verifier` or `language`). GRPO passes each to the rewards by that name."""
    return [k for k in (source.get("fields") or {}) if k not in NORMALIZED]


def extra_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A loaded row's extra columns (see extra_fields): what is left besides r1pipe's own keys."""
    return {k: v for k, v in row.items() if k not in _OWN}


_OWN = (*NORMALIZED, "question", "system", "response_prefix")


def _lines(value: list) -> str:
    """A list field read as text: one item per line (MBPP's test_list, a list of asserts)."""
    return "\n".join(str(v) for v in value)


class _Lines(list):
    """A list column in a template: indexable ({generations[0]}), and whole ({test_list}) one item per line."""

    def __format__(self, spec: str) -> str:
        return format(_lines(self), spec)


def _template_columns(template: str, where: str, label: str = "solution_template") -> list[str]:
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise R1Error(f"{where}: {label} {template!r} is not a format string ({e})",
                      hint="columns in braces, literal braces doubled: {{ }}") from e
    cols = [re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields]  # {generations[0]}: the column generations
    if not cols or any(not c.isidentifier() for c in cols):
        raise R1Error(f"{where}: {label} {template!r} must name columns, e.g. {{solution}}")
    return list(dict.fromkeys(cols))


def _fill(template: str, cols: list[str], row: dict[str, Any], where: str, i: int, label: str = "solution_template") -> str:
    values = {}
    for col in cols:
        value = row.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise R1Error(f"{where}: row {i}: missing field {col!r} (named in {label})",
                          hint="fix the row, or change the template")
        values[col] = _Lines(value) if isinstance(value, list) else value if isinstance(value, dict) else str(value)
    try:
        return template.format(**values)
    except (IndexError, KeyError, TypeError) as e:  # {generations[0]} on an empty list, and the like
        raise R1Error(f"{where}: row {i}: {label} cannot be filled ({type(e).__name__}: {e})",
                      hint="fix the row, or change the template") from e


def sft_messages(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """TRL's conversational SFT format: one `messages` list per row (plus the gold answer for checking)."""
    return [
        {
            "messages": chat(r) + [{"role": "assistant", "content": r["solution"]}],
            "answer": r.get("answer", ""),
        }
        for r in rows
    ]


PREFERENCE = ("prompt", "chosen", "rejected")


def load_preferences(source: dict[str, Any], where: str = "preference source") -> list[dict[str, str]]:
    """Preference pairs {prompt, chosen, rejected} (plain strings: the user turn and the two replies).

    The builtin smalltalk task makes synthetic pairs; files and hub datasets may hold strings or TRL's
    conversational lists (as in UltraFeedback-binarized, where `chosen` is the whole conversation): the prompt is
    then the first user turn and each reply the last assistant turn."""
    kind = source_kind(source, where)
    if kind == "builtin" and source["builtin"] != smalltalk.NAME:
        raise R1Error(f"builtin task {source['builtin']!r} has no preference pairs", hint=f"builtin preference data: {smalltalk.NAME}")
    if kind == "builtin":
        for key in ("size", "seed"):
            if key not in source:
                raise R1Error(f"builtin preference source {source} has no {key}", hint="e.g. {builtin: smalltalk, size: 2000, seed: 6}")
        rows = list(smalltalk.preference_pairs(int(source["size"]), int(source["seed"]), bool(source.get("heldout"))))
    else:
        rows = _read_raw(source, kind)
    where = source_name(source, where)
    fields = {k: k for k in PREFERENCE} | dict(source.get("fields") or {})
    out = []
    for i, row in enumerate(rows, 1):
        pair = {}
        for key in ("chosen", "rejected"):
            pair[key] = _turn(row.get(fields[key]), "assistant", where, i, fields[key])
        prompt = row.get(fields["prompt"])
        if prompt is None and isinstance(row.get(fields["chosen"]), list):
            prompt = row[fields["chosen"]]
        pair["prompt"] = _turn(prompt, "user", where, i, fields["prompt"])
        out.append(pair)
    limit = source.get("limit")
    out = out[: int(limit)] if limit is not None else out
    if not out:
        raise R1Error(f"preference source {where} has no rows", hint="check the file, split or size")
    return out


def _turn(value: Any, role: str, where: str, row: int, col: str) -> str:
    """A string as it is, or from a list of chat messages the first user turn / the last assistant turn."""
    if isinstance(value, list):
        turns = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == role]
        value = (turns[0] if role == "user" else turns[-1]) if turns else None
    if not isinstance(value, str) or not value.strip():
        raise R1Error(
            f"{where}: row {row}: missing field {col!r} (a string, or chat messages with a {role} turn)",
            hint=f"fix the row, or map it to another column with fields.{'prompt' if role == 'user' else col}",
        )
    return value
