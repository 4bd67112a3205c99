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
