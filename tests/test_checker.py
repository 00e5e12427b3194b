import threading
import time

import pytest

from mass.checker import extract_boxed, extract_final_answer, extract_hashes, is_equivalent

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("\\frac12", "\\frac{2}{4}"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}"),
    ("[1,2)", "[1, 2)"),
    ("(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("90^\\circ", "90"),
    ("50\\%", "50"),
    ("5\\text{ cm}", "5"),
    ("\\pm 3", "3, -3"),
    ("2, 8", "8, 2"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\frac{3\\pi}{4}", "\\frac34\\pi"),
    ("x^2+1", "1+x^2"),
    ("18", "18.0"),
]

NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("[1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"),
    ("2, 8", "2, 9"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}"),
    ("9\\pi", "28.27"),
    ("\\pm 3", "3"),
    ("90^\\circ", "91"),
    ("x^2+1", "x^2-1"),
]


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent_pairs(gold, pred):
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("gold, pred", NOT_EQUIVALENT)
def test_non_equivalent_pairs(gold, pred):
    assert not is_equivalent(gold, pred)


def test_missing_prediction_is_wrong():
    assert not is_equivalent("3", None) and not is_equivalent("3", "  ")


def test_extract_boxed():
    assert extract_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_boxed("nested \\boxed{x^{2} + \\sqrt{y_{1}}}") == "x^{2} + \\sqrt{y_{1}}"
    assert extract_boxed("\\fbox{7}") == "7"
    assert extract_boxed("\\boxed 5$.") == "5"
    assert extract_boxed("cut off \\boxed{12") is None
    assert extract_boxed("no answer") is None


def test_extract_hashes_and_fallback():
    assert extract_hashes("work\n#### 1,234") == "1234"
    assert extract_hashes("no hashes") is None
    assert extract_final_answer("x\n#### 5") == "5"
    assert extract_final_answer("\\boxed{3}\n#### 5") == "3"  # the boxed answer wins


def test_bounded_time_on_adversarial_input_off_the_main_thread():
    evil = "(" * 300 + "x" + ")" * 300 + "^" + "{9^{9^{9^{9}}}}" * 20
    result = {}

    def worker():
        t0 = time.perf_counter()
        result["ok"] = is_equivalent("1", evil, timeout=3.0)
        result["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["ok"] is False and result["seconds"] < 40
    assert is_equivalent("\\frac{1}{2}", "0.5")  # the checker still works afterwards
