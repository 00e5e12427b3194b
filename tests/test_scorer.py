import pytest
import torch

from mass.errors import MassError
from mass.scorer import Scorer, embed_texts, load_scorer, save_scorer


@pytest.mark.parametrize("normalise", ["softmax", "sigmoid"])
def test_fresh_scorer_is_uniform_and_weights_are_nonnegative(normalise):
    scorer = Scorer(8, width=4, normalise=normalise)
    s = scorer(torch.randn(8), torch.randn(5, 8))
    assert torch.allclose(s, torch.full((5,), 0.2))
    torch.nn.init.normal_(scorer.net[2].weight)
    s = scorer(torch.randn(8), torch.randn(5, 8))
    assert (s >= 0).all() and not torch.allclose(s, torch.full((5,), 0.2))
    if normalise == "softmax":
        assert s.sum().item() == pytest.approx(1.0)
    else:
        assert (s < 2 / 5).all()


def test_save_load_round_trip(tmp_path):
    scorer = Scorer(8, width=4, normalise="sigmoid")
    torch.nn.init.normal_(scorer.net[2].weight)
    save_scorer(scorer, tmp_path)
    again = load_scorer(tmp_path)
    t, e = torch.randn(8), torch.randn(3, 8)
    assert torch.equal(scorer(t, e), again(t, e)) and again.normalise == "sigmoid"
    with pytest.raises(MassError, match="no scorer"):
        load_scorer(tmp_path / "empty")


def test_bad_normalisation():
    with pytest.raises(MassError, match="normalisation"):
        Scorer(8, normalise="l2")


def test_embeddings_use_the_base_model_without_adapters(tiny_model_dir):
    from mass.models import attach_lora, load_model

    model, tok = load_model(str(tiny_model_dir))
    before = embed_texts(model, tok, ["Problem: a", "Problem: bb"])
    peft_model = attach_lora(model, rank=2)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_()
    after = embed_texts(peft_model, tok, ["Problem: a", "Problem: bb"])
    assert before.shape == (2, model.config.hidden_size) and torch.allclose(before, after, atol=1e-6)
