"""R1's rejection-sampling rules, on literal completions."""

from r1pipe import filters

OK = "<think>7+5=12 4+8+1=13 3+2+1=6</think><answer>632</answer>"
CFG = {"require_format": True, "language": "en", "min_language_share": 0.95, "max_paragraph_chars": 40,
       "drop_code_blocks": True, "dedupe": True, "max_per_prompt": 2}


def test_judge_orders_correctness_format_then_readability():
    assert filters.judge(OK, "632", "integer", CFG) is None
    assert filters.judge("<think>x</think>", "632", "integer", CFG) == "no_answer"
    assert filters.judge(OK, "633", "integer", CFG) == "wrong"
    assert filters.judge("<answer>632</answer>", "632", "integer", CFG) == "format"
    assert filters.judge("<think>add the 数字 then 进位</think><answer>632</answer>", "632", "integer", CFG) == "mixed_language"
    long = "<think>" + "7+5=12 " * 10 + "</think><answer>632</answer>"
    assert filters.judge(long, "632", "integer", CFG) == "long_paragraph"
    assert filters.judge(long, "632", "integer", {**CFG, "max_paragraph_chars": None}) is None
    code = "<think>```python\nprint(632)\n```</think><answer>632</answer>"
    assert filters.judge(code, "632", "integer", {**CFG, "max_paragraph_chars": None}) == "code_block"
    assert filters.judge(code, "632", "integer", {**CFG, "max_paragraph_chars": None, "drop_code_blocks": False}) is None


def test_select_dedupes_and_caps_per_prompt():
    other = "<think>7+5=12  4+8+1=13 3+2+1=6</think><answer>632</answer>"
    third = "<think>5+7=12 8+4+1=13 2+3+1=6</think><answer>632</answer>"
    reasons = filters.select([OK, OK, "<think>x</think><answer>1</answer>", other, third], "632", "integer", CFG)
    assert reasons == ["kept", "duplicate", "wrong", "kept", "over_cap"]
    assert filters.select([OK, OK], "632", "integer", {**CFG, "dedupe": False}) == ["kept", "kept"]
