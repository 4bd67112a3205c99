"""The parsers behind accuracy and format, on literal completions, adversarial ones included."""

import pytest

from r1pipe.rewards import extract_answer, is_correct, parse_int, split_think, strict_format

GOOD = "<think>7+5=12 4+8+1=13 3+2+1=6</think><answer>632</answer>"


@pytest.mark.parametrize(
    "text,answer,strict",
    [
        (GOOD, "632", True),
        ("", None, False),
        ("<think>a</think>", None, False),
        ("<answer>632</answer>", "632", False),  # no reasoning: lenient answer, not strict format
        ("<think>a</think><answer>1</answer><answer>2</answer>", "2", False),  # several answers
        ("<think><think>a</think></think><answer>1</answer>", "1", False),  # nested think
        ("<think>a<answer>3</answer></think><answer>4</answer>", "4", False),  # answer inside think
        ("<think>a<answer>3</answer></think>", None, False),  # only inside think: not an answer
        ("<think>a</think><answer>12", None, False),  # unclosed
        ("<think>a</think> <answer> 12 </answer> ", "12", True),
        ("<think>тест 思考</think><answer>١٢</answer>", "١٢", True),  # unicode survives
        ("junk <think>a</think><answer>5</answer>", "5", False),  # text before the think part
    ],
)
def test_extract_and_strict(text, answer, strict):
    assert extract_answer(text) == answer
    assert strict_format(text) is strict


def test_integer_verifier():
    assert is_correct(GOOD, "632")
    assert not is_correct(GOOD, "633")
    assert is_correct("<think>x</think><answer>1,234</answer>", "1234")
    big = "9" * 400
    assert is_correct(f"<think>x</think><answer>{big}</answer>", big)  # huge numbers: exact, no float
    assert not is_correct(f"<think>x</think><answer>{big}8</answer>", big)
    assert not is_correct("<think>x</think><answer>six</answer>", "6")
    assert parse_int("12.0") is None


def test_math_verifier_accepts_equivalent_forms():
    assert is_correct("<think>x</think><answer>\\frac{1}{2}</answer>", "0.5", verifier="math")
    assert not is_correct("<think>x</think><answer>\\frac{1}{3}</answer>", "0.5", verifier="math")


def test_split_think():
    assert split_think(GOOD) == ("7+5=12 4+8+1=13 3+2+1=6", "<answer>632</answer>")
    assert split_think("no tags") == ("", "no tags")
