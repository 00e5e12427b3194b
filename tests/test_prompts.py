from mass.prompts import parse_synthesised, solve_prompt, synth_document, synth_prompt


def test_plain_and_chat_prompts():
    assert solve_prompt("What is 1+1?") == "Problem: What is 1+1?\nSolution:"
    chat = solve_prompt("What is 1+1?", chat_template=True)
    assert chat[0]["role"] == "user" and "\\boxed{}" in chat[0]["content"]
    assert synth_prompt("T").endswith("New problem:")


def test_parse_round_trips_a_synthesis_document():
    prompt, completion = synth_document("T", "What is $2 + 2$?", "$2 + 2 = 4$. The answer is $\\boxed{4}$.")
    s = parse_synthesised(completion)
    assert (s.problem, s.answer) == ("What is $2 + 2$?", "4")


def test_parse_rejects_unusable_samples():
    assert parse_synthesised(" What is 2+2?") is None  # no solution
    assert parse_synthesised(" What is 2+2?\nSolution: it is four.") is None  # no boxed answer
    assert parse_synthesised(" \nSolution: \\boxed{4}") is None  # no problem
    assert parse_synthesised(" What is 2+2?\nSolution: \\boxed{4") is None  # cut off


def test_parse_cuts_run_on_generations():
    s = parse_synthesised(" P1?\nSolution: \\boxed{1}\nNew problem: P2?\nSolution: \\boxed{2}")
    assert (s.problem, s.answer) == ("P1?", "1")


# --- property tests (Hypothesis): the parser of model output never fails, and round-trips ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mass.prompts import synth_completion  # noqa: E402

LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=60)
ANSWER = st.text("0123456789abcdefxy+-/(),^ ", min_size=1, max_size=12).filter(lambda a: a.strip())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_model_output_parses_to_a_usable_example_or_none(text):
    s = parse_synthesised(text)
    assert s is None or (s.problem and s.solution and s.answer and "Solution:" not in s.problem)


@settings(max_examples=300, deadline=None)
@given(LINE.filter(lambda p: p.strip() and "Solution:" not in p and "Problem:" not in p and "\\boxed" not in p),
       LINE.filter(lambda w: "\\boxed" not in w and "Problem:" not in w and "{" not in w and "}" not in w), ANSWER)
def test_what_the_generator_is_taught_to_write_parses_back(problem, working, answer):
    solution = f"{working.strip()} The answer is $\\boxed{{{answer.strip()}}}$."
    s = parse_synthesised(synth_completion(problem, solution))
    assert s is not None
    assert (s.problem, s.solution, s.answer) == (problem.strip(), solution.strip(), answer.strip())


def test_enormous_or_truncated_model_output_is_dropped_quickly():
    import time

    start = time.perf_counter()
    assert parse_synthesised("x" * 200_000) is None  # no solution line
    assert parse_synthesised(" P?\nSolution: " + "{" * 100_000 + "\\boxed{1") is None  # cut inside its answer
    s = parse_synthesised(" P?\nSolution: " + "step. " * 20_000 + "\\boxed{7}")
    assert s is not None and s.answer == "7"
    assert time.perf_counter() - start < 5
