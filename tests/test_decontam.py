import pytest

from r1pipe.decontam import Index, filter_rows, ngrams, normalize
from r1pipe.errors import R1Error

GSM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
       "How many clips did Natalia sell altogether in April and May?")


def test_normalize_decisions():
    assert normalize("  12 +\t34 ") == normalize("12+34") == "12 + 34"
    assert normalize("Ｈｅｌｌｏ,  World!") == "hello world !"  # NFKC, case, sentence comma dropped, ! kept
    assert normalize("It costs $1,000.50.") == "it costs 1000.50"
    assert normalize("x^2 − 3×y = \\frac{1}{2}") == "x ^ 2 - 3 * y = \\frac { 1 } { 2 }"
    assert normalize("a_{n}") == "a _ { n }"
    assert normalize("12+34") != normalize("12+345") != normalize("12-34")


def test_ngrams_counts_tokens():
    assert ngrams("a b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams("a b", 3) == set()
    assert ngrams("12 + 34 = 46", 3) == {("12", "34", "46")}  # symbols are not words


def test_formulas_that_only_share_symbols_are_not_a_copy():
    idx = Index(["f(x) = x^2 + 3x + 2, so what is the value of f at one"], n=8)
    assert idx.hit("g(x) = x^2 + 3x + 7") is None
    assert idx.hit("Now f(x) = x^2 + 3x + 2, so what is the value of f at one?") == "8-gram"


def test_tiny_arithmetic_exact_match():
    idx = Index(["12+34", "7*8"], n=8)
    assert idx.hit("12+34") == "exact"
    assert idx.hit(" 12 + 34 ") == "exact"  # whitespace inside an expression does not matter
    assert idx.hit("12+345") is None
    assert idx.hit("112+34") is None
    assert idx.hit("What is 12+34?") is None  # short eval texts only match whole
    assert idx.hit("") is None


def test_shared_8gram_inside_a_longer_question_is_found():
    idx = Index([GSM], n=8)
    passage = "she sold half as many clips in May"  # 8 words of the eval question
    assert len(passage.split()) == 8
    assert idx.hit(f"Tom had 30 pens; {passage}, giving how many in total?") == "8-gram"
    assert idx.hit(GSM.upper()) == "exact"


def test_7_word_overlap_is_not_found():
    idx = Index([GSM], n=8)
    assert idx.hit("Tom had 30 pens and then sold half as many clips in May to a friend.") is None


def test_empty_eval_text_matches_nothing_and_n_is_checked():
    assert Index(["", " ? "], n=8).hit("") is None  # both normalize to nothing
    with pytest.raises(R1Error, match="at least 1"):
        Index(["x"], n=0)


def test_filter_rows_report_order_and_chat_prompts():
    idx = Index(["12+34", GSM], n=8)
    rows = [
        {"prompt": "1+1", "answer": "2"},
        {"prompt": " 12 + 34", "answer": "46"},
        {"prompt": [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Quick one. {GSM[:60]} ok"}]},
        {"prompt": "2+2", "answer": "4"},
        {"prompt": [{"role": "user", "content": "3+3"}]},
        {"prompt": None, "answer": "x"},
        {"answer": "no prompt at all"},
    ]
    kept, report = filter_rows(rows, idx)
    assert kept == [rows[0], rows[3], rows[4], rows[5], rows[6]]
    assert report["checked"] == 7 and report["removed"] == 2
    assert report["exact"] == 1 and report["ngram"] == 1
    assert report["examples"][0] == " 12 + 34"
    assert report["examples"][1].startswith("Be brief.\nQuick one. Natalia") and len(report["examples"][1]) == 80


def test_filter_rows_checks_every_named_field():
    idx = Index(["12+34"], n=8)
    rows = [{"prompt": "fine", "solution": "12+34"}, {"prompt": "fine", "solution": "ok"}]
    kept, report = filter_rows(rows, idx, fields=("prompt", "solution"))
    assert kept == [rows[1]] and report["removed"] == 1
    assert filter_rows(rows, idx)[1]["removed"] == 0  # default: prompt only


def test_many_rows_against_many_eval_texts():
    evals = [f"{a}+{a + 1}" for a in range(1000)] + [
        f"question {i} asks how many apples farmer number {i} picked on day {i % 7}" for i in range(500)
    ]
    idx = Index(evals, n=8)
    train = [{"prompt": f"{a}+{a + 2}"} for a in range(10_000)]  # never equal to an eval sum
    train += [{"prompt": f"{a}+{a + 1}"} for a in range(5_000)]  # 1,000 of these are eval sums
    train += [{"prompt": f"so, question {i} asks how many apples farmer number {i} picked?"} for i in range(5_000)]
    kept, report = filter_rows(train, idx)
    assert report["checked"] == 20_000
    assert report["exact"] == 1_000 and report["ngram"] == 500
    assert len(kept) == 20_000 - 1_500
