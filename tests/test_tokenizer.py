from transformers import AutoTokenizer

from mass.tokenizer import BOS, EOS


TEXTS = [
    "Problem: Compute $\\dbinom{12}{3}$.\nSolution: $\\frac{12 \\cdot 11 \\cdot 10}{3 \\cdot 2 \\cdot 1} = 220$.",
    "  leading spaces, tabs\tand\nnewlines  ",
    "unicode: π ≤ ∞ — é 数学 🙂",
    "",
]


def test_round_trip(tiny_tokenizer):
    for text in TEXTS:
        ids = tiny_tokenizer(text)["input_ids"]
        assert ids[0] == tiny_tokenizer.bos_token_id
        assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_digits_are_single_tokens(tiny_tokenizer):
    tokens = tiny_tokenizer.tokenize("12345 + 678")
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("12345678")


def test_save_and_load_with_auto_tokenizer(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.bos_token == BOS and loaded.eos_token == EOS
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
