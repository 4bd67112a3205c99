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


# ---- the reward functions, in TRL's signature -------------------------------------------------------------

from r1pipe import rewards as R  # noqa: E402
from r1pipe.errors import R1Error  # noqa: E402


def chat(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_accuracy_reward_with_columns_and_none_for_general_prompts():
    comps = chat(GOOD, GOOD, "<think>x</think><answer>7</answer>", "")
    assert R.accuracy(comps, answer=["632", None, "8", "1"], trainer_state=None) == [1.0, None, 0.0, 0.0]
    assert R.accuracy([GOOD], answer=["\\frac{1264}{2}"], verifier=["math"]) == [1.0]


def test_format_and_tag_count_rewards():
    comps = chat(GOOD, "<answer>632</answer>", "<think>a</think><answer>1</answer><answer>2</answer>", "")
    assert R.format_reward(comps) == [1.0, 0.0, 0.0, 0.0]
    assert R.tag_count(comps) == [1.0, 0.5, 0.5, 0.0]


def test_language_consistency_is_the_share_of_cot_words_in_the_target_script():
    comps = chat(
        "<think>add the units then the tens</think><answer>1</answer>",
        "<think>add 思考 the 数字</think><answer>1</answer>",
        "<think>7+5=12</think><answer>12</answer>",  # no words: nothing inconsistent
        "<think>思考</think><answer>1</answer>",
    )
    assert R.language_consistency(comps) == [1.0, 0.5, 1.0, 0.0]
    assert R.language_consistency(comps[3:], target_language="zh") == [1.0]
    assert R.language_consistency(comps[:1], language=["zh"]) == [0.0]  # a per-row column wins


def test_length_cosine_prefers_short_correct_and_long_wrong():
    short_ok, long_ok = "<think>a</think><answer>5</answer>", "<think>" + "a " * 200 + "</think><answer>5</answer>"
    r = R.length_cosine(chat(short_ok, long_ok, short_ok, long_ok), answer=["5", "5", "6", "6"], max_length=400)
    assert r[0] > r[1] > 0 > r[3] > r[2]
    assert R.length_cosine(chat(short_ok), answer=[None]) == [None]


def test_repetition_and_overlong_penalties():
    assert R.repetition(chat("a b c d e f"), ngram=2) == [0.0]
    rep = R.repetition(chat("a b a b a b a b"), ngram=2)[0]
    assert -1.0 < rep < -0.5
    assert R.overlong(chat("x"), completion_ids=[[0] * 10], max_length=20, buffer=5) == [0.0]
    assert R.overlong(chat("x"), completion_ids=[[0] * 18], max_length=20, buffer=5) == [-0.6]
    assert R.overlong(chat("x"), completion_ids=[[0] * 99], max_length=20, buffer=5) == [-1.0]


def test_build_names_weights_params_and_removal():
    funcs, weights = R.build({"accuracy": {"weight": 2.0}, "format": {}, "language_consistency": None,
                              "overlong": {"weight": 0.5, "max_length": 30, "buffer": 10}})
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "overlong"] and weights == [2.0, 1.0, 0.5]
    assert funcs[2](chat("x"), completion_ids=[[0] * 25]) == [-0.5]  # params bound from config
    with pytest.raises(R1Error, match="unknown reward 'acuracy'"):
        R.build({"acuracy": {}})
    with pytest.raises(R1Error, match="no parameter 'max_len'"):
        R.build({"overlong": {"max_len": 3}})


def test_custom_reward_by_import_path():
    funcs, _ = R.build({"chars": {"function": "conftest:char_length_reward", "weight": 1.0}})
    assert funcs[0].__name__ == "chars" and funcs[0](chat("abc", "")) == [3.0, 0.0]
    with pytest.raises(R1Error, match="cannot import reward 'x' from 'nope_mod:f'"):
        R.build({"x": {"function": "nope_mod:f"}})


def test_a_power_tower_is_refused_fast_not_computed():
    from r1pipe.rewards import is_correct, too_big_to_verify

    for hostile in ("9^{9^{9}}", "10^{10^{10}}", "9^9^9", "2^{123456789}", "2**(3**99)", "1" * 3000):
        assert too_big_to_verify(hostile), hostile
        assert not is_correct(f"<think>x</think><answer>{hostile}</answer>", "5", "math")  # unguarded: > 20 s
    for fine in ("x^2+y^2", "2^{10}", "\\frac{1}{2}", "10^{100}"):
        assert not too_big_to_verify(fine), fine
    assert is_correct("<answer>2^{10}</answer>", "1024", "math")
