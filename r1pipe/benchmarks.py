"""Evaluation benchmarks: data sources in a named public dataset's layout.

A benchmark spec is a data source as `data.load_rows` reads it, plus `schema:` naming a public dataset. The
schema supplies the hub id, split, column mapping and answer extraction, so a config can say only

    {schema: math500}                                   # HuggingFaceH4/MATH-500, test split
    {schema: gsm8k, path: data/gsm8k_test.jsonl}        # a local copy in GSM8K's layout
    {schema: aime2024, limit: 10, prompt_template: "{prompt}\\nPut the final answer in <answer></answer>."}
    {schema: humaneval, path: data/humaneval.jsonl}     # code: replies run against the tests (verifier code)
    {builtin: arithmetic, size: 500, seed: 7}           # no schema: an ordinary data source

and anything the user writes wins over the schema's defaults. `verifier` belongs to the evaluation, not to
loading, so it is taken off before the source reaches `load_rows`; `prompt_template` and `system_prompt` are
how the question is asked, applied by `load_rows` as for training data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from r1pipe import data
from r1pipe.errors import R1Error

# Keys of a schema that describe the benchmark rather than how to load it.
_SCHEMA_ONLY = ("doc", "verifier")
# Keys of a spec that the evaluation uses and load_rows does not know.
_SPEC_ONLY = ("schema", "verifier")
# Schema defaults that only mean something for a hub source: a local copy (path) or builtin replaces them.
_HUB_ONLY = ("hub", "name", "split", "revision")

SCHEMAS: dict[str, dict[str, Any]] = {
    "gsm8k": {
        "doc": "GSM8K (Cobbe et al. 2021), grade-school word problems; the worked answer ends in '#### <number>'",
        "hub": "openai/gsm8k",
        "name": "main",
        "split": "test",
        "fields": {"prompt": "question", "answer": "answer"},
        "answer_pattern": r"####\s*(.+)$",
        "verifier": "math",
    },
    "math500": {
        "doc": "MATH-500 (Lightman et al. 2023), the 500-problem MATH test subset used by PRM800K and R1; "
        "columns problem, solution, answer, subject, level, unique_id",
        "hub": "HuggingFaceH4/MATH-500",
        "split": "test",
        "fields": {"prompt": "problem", "answer": "answer", "solution": "solution", "id": "unique_id"},
        "verifier": "math",
    },
    "aime2024": {
        "doc": "AIME 2024 I and II (30 problems, integer answers 0-999); columns id, problem, solution, answer, url, year",
        "hub": "HuggingFaceH4/aime_2024",
        "split": "train",
        "fields": {"prompt": "problem", "answer": "answer", "id": "id"},
        "verifier": "math",
    },
    "mbpp": {
        "doc": "MBPP (Austin et al. 2021), 974 short Python tasks (500 in test); columns task_id, text, code, "
        "test_list (asserts), test_setup_code, challenge_test_list. Asked as in the paper, tests shown",
        "hub": "google-research-datasets/mbpp",
        "name": "full",
        "split": "test",
        # the question decontamination compares is the task's text: the tests and the boilerplate around them
        # would make every MBPP row look like every other
        "fields": {"prompt": "{text}\nYour code should pass these tests:\n{test_list}", "answer": "test_list",
                   "solution": "code", "id": "task_id", "question": "text"},
        "verifier": "code",
    },
    "humaneval": {
        "doc": "HumanEval (Chen et al. 2021), 164 Python functions to complete from a signature and docstring; "
        "columns task_id, prompt, canonical_solution, test (defines check), entry_point",
        "hub": "openai/openai_humaneval",
        "split": "test",
        "fields": {"prompt": "Complete this Python function; give the whole function.\n```python\n{prompt}```",
                   "answer": "{test}\ncheck({entry_point})", "solution": "{prompt}{canonical_solution}",
                   "id": "task_id", "question": "prompt"},
        "verifier": "code",
    },
}

_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def strip_thousands(answer: str) -> str:
    """'1,000' -> '1000'. Only a well-formed grouped number is touched, so '(1, 2)' or '2,5' stay as they are."""
    return answer.replace(",", "") if _THOUSANDS.fullmatch(answer) else answer


def canonical_int(answer: str) -> str:
    """'033' -> '33': AIME answers are written 000-999, sometimes zero-padded; anything else stays as it is."""
    return str(int(answer)) if _INTEGER.fullmatch(answer.strip()) else answer


# Per-schema answer clean-up after load_rows (which only applies answer_pattern).
_CLEAN: dict[str, Callable[[str], str]] = {"gsm8k": strip_thousands, "aime2024": canonical_int}


def _schema(spec: dict[str, Any]) -> dict[str, Any] | None:
    name = spec.get("schema")
    if name is None:
        return None
    if name not in SCHEMAS:
        raise R1Error(f"unknown benchmark schema {name!r}", hint=f"known schemas: {', '.join(sorted(SCHEMAS))}")
    return SCHEMAS[name]


def resolve(spec: dict[str, Any], where: str = "benchmark") -> dict[str, Any]:
    """The load_rows source for a benchmark spec: the schema's defaults, overridden by the user's keys.

    `fields` is merged key by key (the user can remap one column and keep the rest); every other key is
    replaced. When the user points at a file or a builtin, the schema's hub settings are dropped; a spec that
    names two kinds itself is data.source_kind's error (`where`: its place in the config). The input is not
    modified."""
    schema = _schema(spec)
    source: dict[str, Any] = {}
    if schema is not None:
        source = {k: v for k, v in schema.items() if k not in _SCHEMA_ONLY}
        if data.source_kind(spec, where, required=False) in ("path", "builtin"):
            source = {k: v for k, v in source.items() if k not in _HUB_ONLY}
    for key, value in spec.items():
        if key == "fields" and isinstance(value, dict) and "fields" in source:
            source["fields"] = dict(source["fields"]) | dict(value)
        else:
            source[key] = value
    source = {k: v for k, v in source.items() if k not in _SPEC_ONLY}
    data.source_kind(source, where)
    return source


def verifier(spec: dict[str, Any]) -> str:
    """How answers are checked: the spec's own verifier, else the schema's, else exact integer match."""
    if spec.get("verifier"):
        return str(spec["verifier"])
    schema = _schema(spec)
    return str(schema["verifier"]) if schema is not None else "integer"


def load(name: str, spec: dict[str, Any]) -> list[dict[str, str]]:
    """Evaluation rows {id, prompt, answer} for the benchmark `name` (the name only makes fallback ids).

    load_rows keeps only the fields it is asked for, so when the source maps an `id` column it is asked for
    that too; a row without it is then data.py's usual missing-field error. Rows without a dataset id get
    f"{name}-{index}" (0-based position after `limit`), stable as long as the source is."""
    where = f"eval.benchmarks.{name}"
    source = resolve(spec, where)
    need = ("prompt", "answer", "id") if (source.get("fields") or {}).get("id") else ("prompt", "answer")
    clean = _CLEAN.get(spec.get("schema", ""), lambda a: a)
    rows = []
    for i, row in enumerate(data.load_rows(source, need=need, where=where)):  # prompt_template applied there
        rows.append({**row, "id": str(row.get("id") or f"{name}-{i}"), "answer": clean(row["answer"]),
                     "question": row.get("question", row["prompt"])})  # what decontamination compares
    return rows
