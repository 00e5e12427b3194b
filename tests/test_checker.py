import json
import os
import signal
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mass import checker
from mass.checker import extract_boxed, extract_final_answer, extract_hashes, is_equivalent
from mass.errors import MassError

# Deterministic examples, no .hypothesis/ database, and no per-example deadline (a check is a
# round trip to a worker process, which a loaded machine can slow down).
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200)
FUZZ_CHECKER = settings(FUZZ, max_examples=25)

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
    # exact but written differently: decided by simplify(a - b) == 0, not by a float tolerance
    ("\\frac{1}{2004!}", "\\frac{2005 \\cdot 2006}{2006!}"),
    ("\\sqrt{3+2\\sqrt{2}}", "1+\\sqrt{2}"),
    ("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt2}"),
    ("\\tan\\frac{\\pi}{8}", "\\sqrt2-1"),
    # simplify cannot decide this one; the difference is zero to every digit evalf computes
    ("-\\frac12", "\\cos\\frac{2\\pi}{7}+\\cos\\frac{4\\pi}{7}+\\cos\\frac{6\\pi}{7}"),
    ("x^2 + 1", "x^2+1"),
    ("\\frac13", "0.333333"),  # a decimal side keeps Math-Verify's tolerance (6 places)
    ("(2,2), (6,2)", "(6,2),(2,2)"),
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
    # tiny exact numbers: Math-Verify alone calls these equal (a difference below ~1e-15 is "zero")
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}"),
    ("1/2^{99}", "1/2^{98}"),
    ("10^{-20}", "2\\cdot 10^{-20}"),
    ("(1/2^{99}, 1)", "(1/2^{98}, 1)"),
    ("\\{1/2^{99}, 1\\}", "\\{1/2^{98}, 1\\}"),
    ("[0, 1/2^{99})", "[0, 1/2^{98})"),
    ("x = 1/2^{99}", "x = 1/2^{98}"),
    ("\\frac{\\pi}{10^{30}}", "\\frac{\\pi}{10^{31}}"),
    # whitespace separates tokens: no squashing "1 2" into "12"
    ("12", "1 2"),
    ("21/2", "2 1/2"),
]

# Time past a limit that a bounded call may take to return on a loaded machine (killing and
# replacing a worker). Unbounded, these inputs run for minutes, so the bound still tells.
SLACK = 2.0


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


EXTRACTED = [
    ("The answer is \\boxed 5.", "5"),  # TeX's brace-less form; the full stop ends the sentence
    ("so \\boxed -3.5, done", "-3.5"),
    ("\\boxed  {5}", "5"),
    ("\\boxed\n{5}", "5"),
    ("\\boxed{\\}}", "\\}"),  # escaped braces do not count
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("$\\boxed{ \\frac{1}{2} }$", "\\frac{1}{2}"),
    ("So \\boxed{(2,2)} and \\boxed{(6,2)}", "(2,2), (6,2)"),  # several boxes end the text: one list
    ("$\\boxed{2}$, $\\boxed{3}$, and $\\boxed{5}$.", "2, 3, 5"),
    ("\\[x = \\boxed{1} \\text{ and } \\boxed{-1}\\]", "1, -1"),
    ("a = \\boxed{2}, so b = \\boxed{3}", "3"),  # an earlier result, not part of the final answer
    ("$\\boxed{-b+2}$, or $\\boxed{2-b}$", "2-b"),  # "or": two forms of one answer, keep the last
    ("\\boxed{x = \\boxed{4}}", "4"),
    ("Put the answer in \\boxed{}. The answer is \\boxed{7}", "7"),
    ("The answer is \\boxed{7}. Check: \\boxed{}", "7"),  # empty boxes are no answer
    ("\\boxed{\\text{(A)}}", "\\text{(A)}"),
    ("\\boxedx{3}", None),  # another command
    ("\\boxed{}", None),
    ("\\boxed{1} and \\boxed{2", None),  # the last box is cut off
]


@pytest.mark.parametrize("text, answer", EXTRACTED)
def test_extract_boxed_forms(text, answer):
    assert extract_boxed(text) == answer
    assert extract_final_answer(text) == answer  # a text with \boxed is graded on its boxes only


def test_extract_hashes_and_fallback():
    assert extract_hashes("work\n#### 1,234") == "1234"
    assert extract_hashes("no hashes") is None
    assert extract_hashes("#### $42.") == "42" and extract_hashes("#### 3.5.\nDone") == "3.5"
    assert extract_hashes("#### ") is None
    assert extract_final_answer("x\n#### 5") == "5"
    assert extract_final_answer("\\boxed{3}\n#### 5") == "3"  # the boxed answer wins


@pytest.mark.parametrize("text, gold", [
    ("So the answer is 5.", "5"),
    ("Therefore the final answer is $\\frac{3}{4}$.", "\\frac34"),
    ("Adding them up, we get $x = 12$.", "12"),
    ("The pairs are $(2,2)$ and $(6,2)$.", "(2,2), (6,2)"),
    ("It costs 1,234 dollars in total.", "1234"),
])
def test_without_a_box_math_verify_finds_the_answer(text, gold):
    answer = extract_final_answer(text)
    assert answer is not None and is_equivalent(gold, answer), answer


def test_without_any_answer_there_is_none():
    assert extract_final_answer("I do not know.") is None
    assert extract_final_answer("") is None
    assert extract_final_answer("   \n") is None


def test_a_boxed_answer_with_trailing_punctuation_is_graded_right():
    assert is_equivalent("5", extract_final_answer("The answer is \\boxed 5."))
    assert is_equivalent("(2,2), (6,2)", extract_final_answer("So \\boxed{(2,2)} and \\boxed{(6,2)}."))


def test_string_extraction_is_fast_on_long_adversarial_text():
    texts = ["\\boxed{" * 50_000, "\\boxed{}" * 50_000, "\\boxed{1} and " * 20_000, "\\boxed " * 50_000,
             "\\boxed{" + "\\{" * 50_000 + "}", "\\boxed" + " " * 100_000 + "{1}", "{" * 100_000 + "\\boxed{1}"]
    t0 = time.perf_counter()
    answers = [extract_boxed(text) for text in texts]
    assert time.perf_counter() - t0 < 3.0
    assert answers[0] is None and answers[1] is None and answers[2] == ", ".join(["1"] * 20_000)


# --- fuzzing ---------------------------------------------------------------------------------

_TOKENS = st.sampled_from(["\\boxed", "\\fbox", "{", "}", "\\{", "\\}", "\\", " ", "\n", "and", "or", ",",
                           "$", ".", "5", "-1", "x^2", "\\frac", "####", "1,234", "\\text{ and }", "\\\\"])
LATEXISH = st.one_of(st.text(), st.lists(_TOKENS, max_size=30).map("".join))


def _pieces_come_from(answer: str, text: str) -> bool:
    return all(piece in text for piece in answer.split(", "))


@FUZZ
@given(LATEXISH)
def test_string_extraction_never_raises_and_only_returns_pieces_of_the_text(text):
    for extract in (extract_boxed, extract_hashes):
        answer = extract(text)
        assert answer is None or (isinstance(answer, str) and answer.strip() == answer)
    boxed = extract_boxed(text)
    assert boxed is None or (boxed and _pieces_come_from(boxed, text))
    hashes = extract_hashes(text)
    assert hashes is None or hashes in text.replace(",", "").replace("$", "")


@FUZZ_CHECKER
@given(LATEXISH)
def test_final_answer_extraction_never_raises(text):
    answer = extract_final_answer(text, timeout=5.0)
    assert answer is None or (isinstance(answer, str) and answer)


def _group(inner):
    return inner.map(lambda s: "{" + s + "}")


# Balanced LaTeX-ish content: no `\boxed`, backslashes only as whole commands or escapes.
_ATOMS = st.sampled_from(["a", "1", "23", "+", "-", "x^", "_", "(", ")", ",", " ", "\\frac", "\\pi", "\\{",
                          "\\}", "\\\\", "\\text", ".", "=", "\\$"])
CONTENT = st.recursive(st.lists(_ATOMS, max_size=8).map("".join),
                       lambda inner: st.lists(st.one_of(inner, _group(inner)), max_size=4).map("".join),
                       max_leaves=20)
PLAIN = st.text(alphabet=st.characters(exclude_characters="\\"), max_size=40)


@FUZZ
@given(PLAIN, CONTENT, PLAIN)
def test_boxed_content_round_trips(before, content, after):
    text = before + "\\boxed{" + content + "}" + after
    assert extract_boxed(text) == (content.strip() or None)


@FUZZ_CHECKER
@given(st.integers(-10**12, 10**12))
def test_an_integer_equals_itself_written_as_a_decimal(n):
    assert is_equivalent(str(n), f"{n}.0")


@FUZZ_CHECKER
@given(st.integers(-10**6, 10**6), st.integers(1, 10**6), st.integers(2, 50))
def test_a_fraction_equals_itself_unreduced(p, q, k):
    assert is_equivalent(f"\\frac{{{p}}}{{{q}}}", f"{p * k}/{q * k}")


@FUZZ_CHECKER
@given(st.integers(-10**15, 10**15), st.integers(-10**15, 10**15))
def test_different_integers_are_never_equivalent(a, b):
    assert is_equivalent(str(a), str(b)) == (a == b)


@FUZZ_CHECKER
@given(st.integers(20, 400), st.integers(20, 400))
def test_tiny_exact_numbers_are_compared_exactly(a, b):
    assert is_equivalent(f"\\frac{{1}}{{2^{{{a}}}}}", f"1/2^{{{b}}}") == (a == b)
    assert is_equivalent(f"\\frac{{1}}{{{a}!}}", f"\\frac{{1}}{{{b}!}}") == (a == b)


# --- time limits and worker processes ----------------------------------------------------------

ADVERSARIAL = [
    "10^{10^{10^{10}}}",
    "9999999999!",
    "x" * 100_000,
    "(" * 300 + "x" + ")" * 300 + "^" + "{9^{9^{9^{9}}}}" * 20,
    "{" * 5000 + "}" * 5000,
    "\\int_0^1 e^{x^2} \\sin(x^{100}) dx",
]


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def _in_threads(jobs):
    """Run each job (a function of no arguments) in its own thread; their results in order."""
    results = [None] * len(jobs)

    def run(i):
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results


def test_adversarial_answers_from_several_threads_return_within_the_limit(capfd):
    limit, margin = 2.0, 3.0  # margin: a loaded 2-core machine delays kills and replies (unbounded before: 12 s+)
    # Start all four workers first: a worker's start-up is not counted against a check's limit.
    _in_threads([lambda: is_equivalent("1", "9999999999!", timeout=1.0)] * checker.MAX_WORKERS)

    def adversarial(k):  # three checks, the last with both sides adversarial
        n = len(ADVERSARIAL)
        pairs = [("1", ADVERSARIAL[k % n]), ("\\frac{1}{2}", ADVERSARIAL[(k + 1) % n]),
                 (ADVERSARIAL[(k + 2) % n], ADVERSARIAL[(k + 3) % n])]
        return [_timed(is_equivalent, gold, evil, timeout=limit) for gold, evil in pairs]

    def normal():  # waits for a free worker; that wait counts against its limit
        return [_timed(is_equivalent, "\\frac{1}{2}", "0.5", timeout=limit) for _ in range(3)]

    results = _in_threads([lambda k=k: adversarial(k) for k in range(4)] + [normal])
    for ok, seconds in (r for calls in results[:4] for r in calls):
        assert ok is False and seconds < limit + margin
    assert all(seconds < limit + margin for _, seconds in results[4])
    assert is_equivalent("\\frac{1}{2}", "0.5", timeout=limit)  # the checker still works afterwards
    assert not is_equivalent("\\frac{1}{2}", "0.6", timeout=limit)
    assert "xxxxxxxxxx" not in capfd.readouterr().err  # Math-Verify's timeout messages are quiet


def test_both_sides_adversarial_still_respect_the_limit():
    ok, seconds = _timed(is_equivalent, "9999999999!", "10^{10^{10^{10}}}", timeout=1.5)
    assert ok is False and seconds < 1.5 + SLACK


def test_bounded_time_on_adversarial_input_off_the_main_thread():
    evil = "(" * 300 + "x" + ")" * 300 + "^" + "{9^{9^{9^{9}}}}" * 20
    result = {}

    def worker():
        result["ok"], result["seconds"] = _timed(is_equivalent, "1", evil, timeout=3.0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["ok"] is False and result["seconds"] < 3.0 + SLACK
    assert is_equivalent("\\frac{1}{2}", "0.5")  # the checker still works afterwards


def test_workers_write_nothing_to_stderr(capfd):
    pool = checker._Pool(size=1)  # a fresh worker: warnings shown "once" would show here
    try:
        text = "so the area became $.9A$. Thus, the area decreased by ${10}$ percent."  # a SymPy deprecation
        assert pool.run("extract", (text,), 30.0) == "{10}"
        assert pool.run("equal", ("1", "x" * 100_000), 1.0) is None  # over time: Math-Verify would print it all
    finally:
        pool.close()
    assert capfd.readouterr().err == ""


@pytest.fixture
def pool():
    p = checker._Pool(size=1)
    yield p
    p.close()


def _the_worker(pool):
    (worker,) = pool.workers
    return worker.proc.pid


def test_a_hung_worker_is_killed_and_its_replacement_starts_outside_the_limit(pool):
    assert pool.run("equal", ("1", "1.0"), 60.0) is True
    os.kill(_the_worker(pool), signal.SIGSTOP)  # stuck where no alarm reaches it
    result, seconds = _timed(pool.run, "equal", ("1", "2"), 0.5)
    assert result is None and seconds < 0.5 + SLACK
    # The replacement imports sympy and Math-Verify (~1 s) before this 1 s check starts its clock;
    # the check itself is trivial, so that a loaded machine cannot push it past the limit.
    assert pool.run("equal", ("2", "2.0"), 1.0) is True


def test_a_worker_that_died_while_idle_is_replaced(pool):
    assert pool.run("equal", ("1", "1.0"), 60.0) is True
    (worker,) = pool.workers
    worker.proc.kill()  # the OOM killer, say
    worker.proc.join(5)
    # 1 s: less than a replacement's start-up (1.2-1.8 s here with the check), which must not count
    assert pool.run("equal", ("\\frac{1}{2}", "0.5"), 1.0) is True


def _exit_at_start(conn):
    os._exit(3)


def _fail_at_start(conn):
    conn.send(("failed", "ImportError: boom"))


@pytest.mark.parametrize("serve, reason", [(_exit_at_start, "exit code 3"), (_fail_at_start, "boom")])
def test_a_worker_that_cannot_start_is_a_clear_error_after_a_retry(serve, reason):
    pool = checker._Pool(size=2, serve=serve, startup_timeout=30.0)
    for _ in range(2):  # every call retries, and reports
        with pytest.raises(MassError, match=f"could not start \\(tried twice\\).*{reason}"):
            pool.run("equal", ("1", "2"), 1.0)
    assert pool.live == 0 and pool.failures == 2


# --- the gold answers of the benchmarks ----------------------------------------------------

def test_math500_gold_answers_extract_and_equal_themselves(shared_data):
    path = shared_data / "math500_test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    for line in path.read_text().splitlines():
        gold = json.loads(line)["answer"]
        assert extract_final_answer(f"The answer is $\\boxed{{{gold}}}$.") == gold.strip()
        # itself, through Math-Verify (is_equivalent would stop at the string comparison)
        assert checker._pool().run("equal", (gold, gold), 10.0) is True, gold


# --- cases from outside suites (scripts/checker_outside_suites.py) that the checker got wrong ---

def test_an_unboxed_answer_ending_a_sentence_keeps_its_value():
    assert extract_final_answer("The probability is 2/3.") == "2/3"
    assert is_equivalent("\\frac{2}{3}", extract_final_answer("The probability is 2/3."))
    assert is_equivalent("\\frac{7}{4}", extract_final_answer("so x = 7/4."))


def test_primes_count():
    assert not is_equivalent("E", "E'") and not is_equivalent("E'", "E")
    assert not is_equivalent("f(x)", "f'(x)") and not is_equivalent("A", "A^{\\prime}")
    assert is_equivalent("E'", "E'")


def test_equal_nested_radicals_are_decided_fast_and_exactly():
    start = time.perf_counter()
    assert is_equivalent(r"\frac{\sqrt{\sqrt{11}+\sqrt{194}}}{15+2\sqrt{33}}",
                         r"\frac{\sqrt{\sqrt{11}+\sqrt{194}}}{2\sqrt{33}+15}", timeout=10)
    assert time.perf_counter() - start < 8  # it used to time out (simplify on the nested radicals)
    assert not is_equivalent(r"\sqrt{\sqrt{11}+\sqrt{194}}", r"\sqrt{\sqrt{11}+\sqrt{195}}")
    assert not is_equivalent(r"\frac{1}{2004!}", r"\frac{1}{2006!}")
