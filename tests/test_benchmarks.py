import json
from pathlib import Path

import pytest

from r1pipe import benchmarks, rewards
from r1pipe.errors import R1Error
from conftest import FIXTURES

MATH500 = str(FIXTURES / "math500_sample.jsonl")
AIME = str(FIXTURES / "aime2024_sample.jsonl")
GSM8K = str(FIXTURES / "gsm8k_sample.jsonl")


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_resolve_applies_schema_defaults_for_hub():
    src = benchmarks.resolve({"schema": "gsm8k"})
    assert src["hub"] == "openai/gsm8k" and src["name"] == "main" and src["split"] == "test"
    assert src["fields"] == {"prompt": "question", "answer": "answer"}
    assert src["answer_pattern"] == r"####\s*(.+)$"
    assert not {"schema", "verifier", "doc", "prompt_template"} & set(src)


def test_resolve_user_keys_win_and_path_drops_hub():
    spec = {"schema": "math500", "path": "local.jsonl", "limit": 3, "fields": {"prompt": "question"},
            "verifier": "integer", "prompt_template": "{prompt}"}
    src = benchmarks.resolve(spec)
    assert src["path"] == "local.jsonl" and src["limit"] == 3
    assert "hub" not in src and "split" not in src
    # fields merge key by key: the user's prompt column, the schema's others
    assert src["fields"]["prompt"] == "question" and src["fields"]["answer"] == "answer"
    assert spec["fields"] == {"prompt": "question"}  # the input is not modified
    assert benchmarks.resolve({"schema": "aime2024", "split": "test"})["split"] == "test"


def test_resolve_without_schema_is_unchanged():
    spec = {"builtin": "arithmetic", "size": 500, "seed": 7}
    assert benchmarks.resolve(spec) == spec
    assert benchmarks.verifier(spec) == "integer"


def test_unknown_schema_names_the_known_ones():
    with pytest.raises(R1Error, match="unknown benchmark schema 'gsm9k'") as e:
        benchmarks.resolve({"schema": "gsm9k"})
    assert "aime2024, gsm8k, humaneval, math500, mbpp" in str(e.value)


def test_verifier_precedence():
    assert benchmarks.verifier({"schema": "math500"}) == "math"
    assert benchmarks.verifier({"schema": "gsm8k", "verifier": "integer"}) == "integer"


def test_math500_rows_and_ids():
    rows = benchmarks.load("math500", {"schema": "math500", "path": MATH500})
    assert len(rows) == 5
    assert {k: v for k, v in rows[0].items() if k != "question"} == {
        "id": "test/prealgebra/1201.json",
        "prompt": "Evaluate $\\frac{1}{3} + \\frac{13}{3}$. Express your answer as a common fraction.",
        "answer": "\\frac{14}{3}",
    }
    assert [r["answer"] for r in rows[1:3]] == ["10", "\\left( 3, \\frac{\\pi}{2} \\right)"]


def test_math500_answer_works_with_the_math_verifier():
    row = benchmarks.load("math500", {"schema": "math500", "path": MATH500})[0]
    v = benchmarks.verifier({"schema": "math500"})
    assert rewards.is_correct("<think>x</think><answer>\\frac{14}{3}</answer>", row["answer"], v)
    assert rewards.is_correct("<think>x</think><answer>14/3</answer>", row["answer"], v)
    assert not rewards.is_correct("<think>x</think><answer>\\frac{13}{3}</answer>", row["answer"], v)
    polar = benchmarks.load("math500", {"schema": "math500", "path": MATH500})[2]
    assert rewards.is_correct("<think>x</think><answer>(3, \\frac{\\pi}{2})</answer>", polar["answer"], v)


def test_aime_answers_are_canonical_strings_and_ids_from_the_dataset():
    rows = benchmarks.load("aime2024", {"schema": "aime2024", "path": AIME})
    assert [r["answer"] for r in rows] == ["130", "376", "33", "15"]  # int 130 and zero-padded "033" included
    assert [r["id"] for r in rows] == ["60", "61", "62", "63"]
    assert rows[1]["prompt"] == "Find the remainder when $2^{100}$ is divided by $1000$."
    assert rewards.is_correct("<think>x</think><answer>33</answer>", rows[2]["answer"], "math")


def test_gsm8k_answers_ids_and_thousands_commas(tmp_path):
    rows = benchmarks.load("gsm8k", {"schema": "gsm8k", "path": GSM8K})
    assert [r["answer"] for r in rows] == ["72", "10", "5"]
    assert [r["id"] for r in rows] == ["gsm8k-0", "gsm8k-1", "gsm8k-2"]  # GSM8K has no id column
    assert rows[0]["prompt"].startswith("Natalia sold clips")
    # tests/fixtures/gsm8k_sample.jsonl is pinned to three rows by test_data.py, so the comma row is a copy
    extra = {"question": "A farm has 600 cows and 400 goats. How many animals are there?",
             "answer": "600 + 400 = <<600+400=1000>>1000\n#### 1,000"}
    lines = [json.loads(line) for line in Path(GSM8K).read_text().splitlines()] + [extra]
    rows = benchmarks.load("gsm8k", {"schema": "gsm8k", "path": _jsonl(tmp_path / "g.jsonl", lines)})
    assert rows[-1]["answer"] == "1000" and rows[-1]["id"] == "gsm8k-3"


def test_strip_thousands_only_touches_grouped_numbers():
    assert benchmarks.strip_thousands("1,234,567.5") == "1234567.5"
    assert benchmarks.strip_thousands("(1, 2)") == "(1, 2)"
    assert benchmarks.strip_thousands("2,5") == "2,5"


def test_user_fields_override_for_a_renamed_column(tmp_path):
    path = _jsonl(tmp_path / "renamed.jsonl", [
        {"question": "What is 2+2?", "solution": "s", "answer": "4", "unique_id": "u1"},
    ])
    rows = benchmarks.load("m", {"schema": "math500", "path": path, "fields": {"prompt": "question"}})
    assert rows == [{"id": "u1", "prompt": "What is 2+2?", "answer": "4", "question": "What is 2+2?"}]


def test_missing_problem_column_is_data_errors_message(tmp_path):
    good = json.loads(Path(MATH500).read_text().splitlines()[0])
    bad = {k: v for k, v in good.items() if k != "problem"}
    path = _jsonl(tmp_path / "broken.jsonl", [good, bad])
    with pytest.raises(R1Error, match=r"broken.jsonl: row 2: missing field 'problem' \(r1pipe's prompt\)"):
        benchmarks.load("math500", {"schema": "math500", "path": path})


def test_prompt_template_and_limit():
    tpl = "{prompt}\nPut the final answer in <answer></answer>."
    rows = benchmarks.load("aime2024", {"schema": "aime2024", "path": AIME, "limit": 2, "prompt_template": tpl})
    assert len(rows) == 2
    assert rows[0]["prompt"].endswith("not by $11$.\nPut the final answer in <answer></answer>.")
    # literal braces are allowed when escaped
    rows = benchmarks.load("a", {"schema": "aime2024", "path": AIME, "prompt_template": "{prompt} \\boxed{{}}"})
    assert rows[0]["prompt"].endswith("\\boxed{}")


@pytest.mark.parametrize("tpl", ["Answer in <answer></answer>.", "{question}", "{prompt} {other}", "{prompt"])
def test_bad_prompt_template_is_an_error(tpl):
    with pytest.raises(R1Error, match="prompt_template"):
        benchmarks.load("aime2024", {"schema": "aime2024", "path": AIME, "prompt_template": tpl})


def test_builtin_spec_without_schema_gets_index_ids():
    rows = benchmarks.load("tiny", {"builtin": "arithmetic", "size": 5, "seed": 7})
    assert [r["id"] for r in rows] == [f"tiny-{i}" for i in range(5)]
    assert all(set(r) == {"id", "prompt", "answer", "question"} and r["question"] == r["prompt"] for r in rows)
