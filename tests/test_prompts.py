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
