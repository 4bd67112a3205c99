"""Edge cases of the reward library that peers' reward suites (open-r1, TRL) turned up: degenerate answers,
replies cut off mid-thought, TRL's parsed messages, and settings that would only fail at the first GRPO step."""

import time

import pytest

from r1pipe import rewards as R
from r1pipe.errors import R1Error


def chat(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def scaled(completions, scale=1.0, **_):
    """A user reward with a setting of its own (imported by build() as test_reward_edges:scaled)."""
    return [scale] * len(completions)


# ---- 1. integers beyond int()'s 4,300 digits ---------------------------------------------------------------

HUGE = "7" * 5000


def test_huge_integers_compare_without_int():
    assert R.is_correct(f"<think>x</think><answer>{HUGE}</answer>", HUGE)
    assert R.is_correct(f"<think>x</think><answer>000{HUGE}</answer>", f"+{HUGE}")
    assert not R.is_correct(f"<think>x</think><answer>{HUGE}8</answer>", HUGE)
    assert not R.is_correct(f"<think>x</think><answer>-{HUGE}</answer>", HUGE)
    assert R.accuracy(chat(f"<think>x</think><answer>{HUGE}</answer>"), answer=["5"]) == [0.0]
    assert R.parse_int(HUGE) is None and R.parse_int("-0012") == -12  # never raises


@pytest.mark.parametrize("a,b", [("-0", "0"), ("+5", "5"), ("005", "5"), ("5,000", "5000"), ("١٢", "12"), (" 7 ", "7")])
def test_one_spelling_per_integer(a, b):
    assert R.int_key(a) == R.int_key(b) is not None
    assert R.is_correct(f"<answer>{a}</answer>", b)


def test_majority_vote_groups_huge_integers():
    assert R.majority_answer(["1", f"0{HUGE}", HUGE, "1", HUGE]) == f"0{HUGE}"


# ---- 2. an answer inside a think part that never closes -----------------------------------------------------

CUT = "<think>7+5=12, so the answer is <answer>12</answer> or maybe"  # cut off at max_completion_length


@pytest.mark.parametrize("text", [CUT, "<think>7+5 <answer>12</answer>",
                                  "<think>a</think><think>b <answer>12</answer>"])
def test_an_unclosed_think_has_no_answer(text):
    assert R.answer_part(text) is None and R.extract_answer(text) is None
    assert R.predicted_answer(text, "math") is None and not R.is_correct(text, "12")
    assert R.predicted_answer("<think>so \\boxed{12}", "math") is None  # nor a \boxed{} fallback
    assert R.accuracy(chat(text), answer=["12"]) == [0.0]


def test_closing_the_think_part_is_what_earns_the_answer():
    assert R.accuracy(chat("<think>7+5=12</think><answer>12</answer>"), answer=["12"]) == [1.0]
    assert R.extract_answer("<answer>12</answer>") == "12"  # no think part at all: lenient, as before
    assert R.predicted_answer("\\boxed{12}", "math") == "12"


def test_a_prefilled_think_is_put_back_before_judging():
    (acc, fmt), _ = R.build({"accuracy": {}, "format": {}})
    prompts = [[{"role": "user", "content": "7+5?"}, {"role": "assistant", "content": "<think>"}]] * 2
    comps = chat("7+5=12</think><answer>12</answer>", "7+5=12 <answer>12</answer>")  # the second is cut off
    assert acc(comps, prompts=prompts, answer=["12", "12"]) == [1.0, 0.0]
    assert fmt(comps, prompts=prompts, answer=["12", "12"]) == [1.0, 0.0]


# ---- 3. language consistency of a cut-off chain of thought --------------------------------------------------


def test_reasoning_runs_to_the_end_when_the_think_part_never_closes():
    assert R.reasoning("<think>add 思考 the 数字") == "add 思考 the 数字"
    assert R.reasoning("<think>a</think><answer>1</answer>") == "a"
    assert R.reasoning("no tags") == "" and R.reasoning("a</think>b") == "a"
    assert R.split_think("<think>a b") == ("", "<think>a b")  # its contract is unchanged (see its docstring)


def test_cutting_off_a_mixed_chain_of_thought_does_not_raise_its_reward():
    cut, closed = "<think>add 思考 the 数字", "<think>add 思考 the 数字</think><answer>1</answer>"
    assert R.language_consistency(chat(cut, closed)) == [0.5, 0.5]


# ---- 4. edge settings ---------------------------------------------------------------------------------------


def test_overlong_with_no_buffer_is_a_hard_cut_off():
    (fn,), _ = R.build({"overlong": {"max_length": 20, "buffer": 0}})
    assert fn(chat("x", "x", "x"), completion_ids=[[0] * 19, [0] * 20, [0] * 21]) == [0.0, 0.0, -1.0]
    # the soft ramp ends at -1
    assert R.overlong(chat("x"), completion_ids=[[0] * 20], max_length=20, buffer=5) == [-1.0]


@pytest.mark.parametrize(
    "name,settings,message",
    [
        ("repetition", {"max_penalty": 1.0}, "reward repetition: max_penalty=1.0 must be a number <= 0"),
        ("repetition", {"ngram": 0}, "reward repetition: ngram=0 must be a whole number >= 1"),
        ("repetition", {"ngram": "3"}, "reward repetition: ngram='3' must be a whole number"),
        ("overlong", {"max_length": 0}, "reward overlong: max_length=0 must be a whole number >= 1"),
        ("overlong", {"max_length": 512.0}, "reward overlong: max_length=512.0 must be a whole number"),
        ("overlong", {"buffer": -1},
         r"reward overlong: buffer=-1 must be a whole number from 0 \(a hard cut-off\) to max_length \(512\)"),
        ("overlong", {"max_length": 32}, r"reward overlong: buffer=64 .* to max_length \(32\)"),  # the default buffer
        ("overlong", {"buffer": True}, "reward overlong: buffer=True must be a whole number"),
        ("length_cosine", {"max_length": -5}, "reward length_cosine: max_length=-5 must be a whole number >= 1"),
        ("length_cosine", {"min_correct": 1.0, "max_correct": 0.5}, r"max_correct=0.5 must be >= min_correct \(1.0\)"),
        ("length_cosine", {"min_wrong": 0.0, "max_wrong": -1.0}, r"max_wrong=-1.0 must be >= min_wrong \(0.0\)"),
        ("length_cosine", {"max_wrong": 0.9}, r"max_wrong=0.9 must be <= min_correct \(0.5\)"),
        ("length_cosine", {"min_correct": "high"}, "reward length_cosine: min_correct='high' must be a number"),
        ("length_cosine", {"max_correct": float("nan")}, "max_correct=nan must be a number"),
        ("language_consistency", {"target_language": "fr"},
         "reward language_consistency: target_language='fr' must be one of en, zh, ru"),
        ("accuracy", {"weight": "abc"}, "reward accuracy: weight='abc' must be a number"),
        ("format", {"weight": None}, "reward format: weight=None must be a number"),
        ("accuracy", 1.0, "reward accuracy: expected its settings, got 1.0"),
        ("mine", {"function": 5}, "reward mine: function=5 must be 'package.module:function'"),
        ("mine", {"function": "r1pipe.rewards:COLUMNS"}, "reward mine: 'r1pipe.rewards:COLUMNS' is not a function"),
    ],
)
def test_build_refuses_nonsense_settings_in_one_line(name, settings, message):
    with pytest.raises(R1Error, match=message) as e:
        R.build({name: settings})
    assert "\n" not in str(e.value)


def test_weights_alone_refuse_a_weight_that_is_no_number():
    with pytest.raises(R1Error, match="reward helpfulness: weight='1,0' must be a number"):
        R.weights({"helpfulness": {"model": "reward_model", "weight": "1,0"}})
    assert R.weights({"a": {"weight": 2}, "b": None, "c": {}}) == [2.0, 1.0]


def test_sensible_settings_still_build():
    funcs, w = R.build({"repetition": {"ngram": 1, "max_penalty": 0}, "overlong": {"max_length": 8, "buffer": 8},
                        "length_cosine": {"min_correct": 0.5, "max_correct": 0.5, "max_wrong": 0.5, "min_wrong": 0.5},
                        "language_consistency": {"target_language": "zh", "weight": -1}})
    assert len(funcs) == 4 and w == [1.0, 1.0, 1.0, -1.0]


# ---- 5. a setting named like a per-row column --------------------------------------------------------------


@pytest.mark.parametrize("column", ["answer", "verifier", "language", "kind", "completion_ids", "prompts",
                                    "completions", "trainer_state", "tests"])
def test_a_column_is_not_a_setting(column):
    with pytest.raises(R1Error, match=f"reward accuracy: {column} is a per-row column TRL passes from the dataset"):
        R.build({"accuracy": {column: "5"}})
    with pytest.raises(R1Error, match=f"reward mine: {column} is a per-row column"):
        R.build({"mine": {"function": "conftest:char_length_reward", column: "5"}})
    assert column in R.COLUMNS


def test_the_language_column_points_to_target_language():
    with pytest.raises(R1Error, match="put it in the data; for one language, set target_language"):
        R.build({"language_consistency": {"language": "zh"}})


def test_unknown_settings_hint_lists_settings_not_columns():
    with pytest.raises(R1Error, match=r"it takes: buffer, max_length\)"):
        R.build({"overlong": {"max_len": 3}})


# ---- 6. your own rewards: unknown settings and columns only -------------------------------------------------


def test_user_rewards_get_no_range_checks():
    (fn,), _ = R.build({"overlong": {"function": "test_reward_edges:scaled", "scale": -3}})  # named like a builtin
    assert fn(chat("a", "b")) == [-3, -3]
    with pytest.raises(R1Error, match="reward mine has no parameter 'scal'"):
        R.build({"mine": {"function": "test_reward_edges:scaled", "scal": 2}})


# ---- 7. TRL's parsed messages: the think part in reasoning_content ------------------------------------------

# What transformers' parser returns with TRL's qwen3 response template (checked below): the think part stripped
# of its tags and surrounding whitespace, the content stripped of the whitespace before it.
PARSED = [{"role": "assistant", "reasoning_content": "7+5=12", "content": "<answer>12</answer>"}]
PARSED_CUT = [{"role": "assistant", "reasoning_content": "7+5=12 <answer>12</answer>", "content": ""}]


def test_reasoning_content_is_read_back_as_the_think_part():
    assert R.completion_text(PARSED) == "<think>7+5=12</think><answer>12</answer>"
    assert R.format_reward([PARSED]) == [1.0] and R.accuracy([PARSED], answer=["12"]) == [1.0]
    assert R.format_reward([PARSED_CUT]) == [0.0] and R.accuracy([PARSED_CUT], answer=["12"]) == [0.0]
    zh = [{"role": "assistant", "reasoning_content": "思考 数字", "content": "<answer>12</answer>"}]
    assert R.language_consistency([zh]) == [0.0]
    lfm = [{"role": "assistant", "thinking": "a", "content": "<answer>12</answer>"}]
    assert R.completion_text(lfm) == "<think>a</think><answer>12</answer>"


def test_a_parsed_reply_already_holds_its_prefilled_think():
    (fmt,), _ = R.build({"format": {}})
    prompts = [[{"role": "user", "content": "7+5?"}, {"role": "assistant", "content": "<think>"}]]
    assert fmt([PARSED], prompts=prompts) == [1.0]


def test_transformers_parser_output_reads_as_strict_format():
    from transformers.utils.chat_parsing.response_parser import parse_response

    qwen3 = {"defaults": {"role": "assistant"}, "start_anchor": "<|im_start|>assistant\n", "fields": {
        "reasoning_content": {"open": "<think>", "close_pattern": r"</think>\s*", "content": "text"},
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"}}}  # TRL's qwen3_template, tools left out
    prompt = "<|im_start|>user\n7+5?<|im_end|>\n<|im_start|>assistant\n"
    for prefill, reply in [("", "<think>\n7+5=12\n</think>\n\n<answer>12</answer><|im_end|>"),
                           ("<think>", "7+5=12</think> <answer>12</answer>")]:
        msg = parse_response(reply, qwen3, prefix=prompt + prefill)
        assert "reasoning_content" in msg and R.strict_format(R.completion_text([msg])), msg
    cut = parse_response("7+5=12 <answer>12</answer>", qwen3, prefix=prompt + "<think>")
    assert R.extract_answer(R.completion_text([{"content": "", **cut}])) is None


# ---- 8. repetition without spaces ---------------------------------------------------------------------------


def test_repetition_counts_token_ids_when_given():
    assert R.repetition(chat("x"), completion_ids=[[5, 5, 5, 5, 5]], ngram=2) == [-0.75]  # TRL's own example
    assert R.repetition(chat("a a a a a"), completion_ids=[[1, 2, 3, 4]], ngram=2) == [0.0]  # ids win


def test_repetition_sees_text_without_spaces():
    assert R.repetition(chat("7+5=12" * 20))[0] < -0.5
    assert R.repetition(chat("我们先算个位再算十位" * 10))[0] < -0.5
    assert R.repetition(chat("我们先算个位再算十位"))[0] == 0.0
    assert R.repetition(chat("this is a this is a test"), ngram=2) == [pytest.approx(-1 / 3)]  # words, as open-r1


# ---- 9. answers math-verify would spend minutes on -----------------------------------------------------------


@pytest.mark.parametrize("hostile", ["9999999!", "999999!", "\\frac{9999999!}{3}", "10!!", "(10!)!", "(10^{7})!",
                                     "\\left(10^{7}\\right)!", "{10^7}!", "\\binom{1000000}{500000}",
                                     "\\dbinom{99999999}{4999999}", "\\Gamma(1000000)", "10^{9999999}",
                                     "1.5\\times 10^{9999999}"])
def test_huge_factorials_and_friends_are_refused_fast(hostile):
    assert R.too_big_to_verify(hostile)
    t = time.perf_counter()
    assert not R.is_correct(f"<think>x</think><answer>{hostile}</answer>", "5", "math")  # unguarded: 3.7 s to minutes
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("fine", ["120", "5!", "10!", "20!", "99999!", "2^{10}", "10^{999999}", "\\frac{1}{2}",
                                  "\\binom{10}{5}", "\\Gamma(5)", "n!", "(n+1)!", "x^2 + 5!", "3.14159265358979"])
def test_ordinary_answers_are_still_checked(fine):
    assert not R.too_big_to_verify(fine)


def test_small_factorials_still_verify():
    assert R.is_correct("<answer>5!</answer>", "120", "math")
    assert R.is_correct("<answer>\\frac{10!}{9!}</answer>", "10", "math")
