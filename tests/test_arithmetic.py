import random
import re

import pytest

from r1pipe.tasks import arithmetic as ar


def test_solution_is_r1_format_and_correct_for_many_pairs():
    rng = random.Random(0)
    for _ in range(2000):
        a, b = ar.operand(rng), ar.operand(rng)
        sol = ar.solution(a, b)
        m = re.fullmatch(r"<think>(.*)</think><answer>(\d+)</answer>", sol)
        assert m, sol
        assert int(m.group(2)) == a + b
        # the working's column sums, read back, rebuild the answer
        sums = [int(step.split("=")[1]) for step in m.group(1).split()]
        digits = "".join(str(s % 10) for s in sums[:-1])[::-1]
        assert int(str(sums[-1]) + digits) == a + b


def test_working_shows_carries():
    assert ar.working(347, 285) == "7+5=12 4+8+1=13 3+2+1=6"
    assert ar.solution(47, 285) == "<think>7+5=12 4+8+1=13 0+2+1=3</think><answer>332</answer>"


def test_problems_are_distinct_seeded_and_exclude_heldout():
    held = ar.problems(500, seed=7)
    train = ar.problems(3000, seed=1, exclude=held)
    assert len(set(train)) == 3000
    assert not set(train) & set(held)
    assert ar.problems(50, seed=1) == ar.problems(50, seed=1)
    assert ar.problems(50, seed=1) != ar.problems(50, seed=2)
    for a, b in train:
        assert 10 <= a <= 999 and 10 <= b <= 999


def test_asking_for_more_problems_than_exist_fails():
    with pytest.raises(ValueError, match="distinct problems"):
        ar.problems(10**7, seed=0)


def test_prompt_round_trip():
    assert ar.parse_prompt(ar.prompt(12, 345)) == (12, 345)


def test_a_slip_forgets_one_carry_and_the_answer_follows_the_working():
    assert ar.carried(347, 285) == [1, 2]
    assert ar.solution(347, 285, slip=1) == "<think>7+5=12 4+8=12 3+2+1=6</think><answer>622</answer>"
    assert ar.solution(254, 766, slip=2) == "<think>4+6=10 5+6+1=12 2+7=9</think><answer>920</answer>"
    assert ar.solution(347, 285, slip=None) == ar.solution(347, 285)


def test_slips_are_the_asked_share_of_carrying_solutions_and_seeded():
    pairs = ar.problems(4000, seed=1)
    rows = list(ar.records(pairs, slips=0.3, seed=1))
    assert rows == list(ar.records(pairs, slips=0.3, seed=1))
    wrong = [r for r in rows if re.search(r"<answer>(\d+)", r["solution"]).group(1) != r["answer"]]
    carrying = [p for p in pairs if ar.carried(*p)]
    assert 0.25 < len(wrong) / len(carrying) < 0.35
    for r in wrong:  # exactly one column lost its carry; the answer stays the true sum
        a, b = ar.parse_prompt(r["prompt"])
        assert r["answer"] == str(a + b)
        assert r["solution"] in {ar.solution(a, b, slip=i) for i in ar.carried(a, b)}
    assert all(r["solution"] == ar.solution(*ar.parse_prompt(r["prompt"])) for r in ar.records(pairs[:50]))
