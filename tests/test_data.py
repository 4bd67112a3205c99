import pytest

from r1pipe.data import load_rows, sft_messages
from r1pipe.errors import R1Error
from conftest import FIXTURES


def test_gsm8k_schema_with_answer_pattern():
    src = {
        "path": str(FIXTURES / "gsm8k_sample.jsonl"),
        "fields": {"prompt": "question", "answer": "answer"},
        "answer_pattern": r"####\s*(.+)$",
    }
    rows = load_rows(src, need=("prompt", "answer"))
    assert [r["answer"] for r in rows] == ["72", "10", "5"]
    assert rows[0]["prompt"].startswith("Natalia")


def test_field_mapping_and_limit():
    src = {"path": str(FIXTURES / "cot_sample.jsonl"), "limit": 1,
           "fields": {"prompt": "problem", "solution": "generation", "answer": "expected"}}
    rows = load_rows(src, need=("prompt", "solution", "answer"))
    assert rows == [{"prompt": "12+30", "solution": "<think>2+0=2 1+3=4</think><answer>42</answer>", "answer": "42"}]
    msgs = sft_messages(rows)[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]


def test_missing_field_names_file_row_and_field(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2"}\n')
    with pytest.raises(R1Error, match=r"d.jsonl: row 2: missing field 'answer'"):
        load_rows({"path": str(f), "fields": {"prompt": "question"}}, need=("prompt", "answer"))


def test_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "1+1", "answer": "2"}\n{"prompt": "oops"\n')
    with pytest.raises(R1Error, match=r"d.jsonl: line 2: not valid JSON"):
        load_rows({"path": str(f)}, need=("prompt",))


def test_non_utf8_and_empty_and_missing_files(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(R1Error, match="not UTF-8"):
        load_rows({"path": str(bad)}, need=("prompt",))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(R1Error, match="has no rows"):
        load_rows({"path": str(empty)}, need=("prompt",))
    with pytest.raises(R1Error, match="does not exist"):
        load_rows({"path": str(tmp_path / "nope.jsonl")}, need=("prompt",))


def test_parquet_round_trip(tmp_path):
    from datasets import Dataset

    p = tmp_path / "d.parquet"
    Dataset.from_list([{"q": "1+2", "a": "3"}]).to_parquet(str(p))
    rows = load_rows({"path": str(p), "fields": {"prompt": "q", "answer": "a"}}, need=("prompt", "answer"))
    assert rows == [{"prompt": "1+2", "answer": "3"}]


def test_builtin_excludes_heldout():
    held = load_rows({"builtin": "arithmetic", "size": 100, "seed": 7}, need=("prompt", "answer"))
    train = load_rows(
        {"builtin": "arithmetic", "size": 2000, "seed": 1, "exclude": {"builtin": "arithmetic", "size": 100, "seed": 7}},
        need=("prompt", "solution"),
    )
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}


@pytest.mark.parametrize(
    "source,message",
    [
        ({"builtin": "arithmetic", "seed": 1}, "has no size"),
        ({"builtin": "arithmetic", "size": 10**7, "seed": 1}, "distinct problems"),
        ({"builtin": "nope", "size": 1, "seed": 1}, "unknown builtin task 'nope'"),
        ({"builtin": "arithmetic", "size": 10, "seed": 1, "slips": 1.5}, "slips must be between 0 and 1"),
        ({"path": str(FIXTURES / "gsm8k_sample.jsonl"), "fields": {"prompt": "question"}, "answer_pattern": "####"},
         "needs one capture group"),
        ({"path": str(FIXTURES / "gsm8k_sample.jsonl"), "fields": {"prompt": "question"}, "answer_pattern": "(("},
         "not a valid regex"),
    ],
)
def test_bad_sources_are_one_line_errors(source, message):
    with pytest.raises(R1Error, match=message) as e:
        load_rows(source, need=("prompt", "answer"))
    assert "\n" not in str(e.value)


def test_json_list_of_non_objects_and_limit_zero(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('["a", "b"]')
    with pytest.raises(R1Error, match="expected a JSON list of objects"):
        load_rows({"path": str(f)}, need=("prompt",))
    with pytest.raises(R1Error, match="has no rows"):
        load_rows({"path": str(FIXTURES / "cot_sample.jsonl"), "limit": 0, "fields": {"prompt": "problem"}}, need=("prompt",))
