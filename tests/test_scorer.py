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


def test_scorer_with_statistics_starts_uniform_and_reads_them_standardised():
    from mass.scorer import STATS

    scorer = Scorer(8, width=4, normalise="sigmoid", n_stats=len(STATS))
    t, e, stats = torch.randn(8), torch.randn(4, 8), torch.randn(4, len(STATS))
    assert torch.allclose(scorer(t, e, stats), torch.full((4,), 0.25))
    with pytest.raises(MassError, match="statistics"):
        scorer(t, e)
    # a head that reads only the standardised first statistic ranks by it, whatever its scale
    torch.nn.init.zeros_(scorer.net[0].weight)
    torch.nn.init.zeros_(scorer.net[0].bias)
    with torch.no_grad():
        scorer.net[0].weight[0, 4 * 8 + len(STATS)] = 1.0
        scorer.net[2].weight.fill_(-1.0)
    low_is_good = torch.tensor([[0.1], [0.3], [0.2], [0.9]]) * 1e3
    s = scorer(t, e, torch.cat([low_is_good, torch.zeros(4, len(STATS) - 1)], dim=-1))
    assert s.argsort().tolist() == [3, 1, 2, 0]


def test_standardise_is_zero_for_one_example_or_equal_values():
    from mass.scorer import standardise

    assert torch.equal(standardise(torch.ones(1, 3)), torch.zeros(1, 3))
    assert torch.equal(standardise(torch.ones(4, 3)), torch.zeros(4, 3))
    z = standardise(torch.tensor([[1.0], [3.0]]))
    assert z[0, 0] < 0 < z[1, 0] and z.sum().abs() < 1e-6


def test_within_group_auc_counts_pairs_inside_each_group_only():
    from mass.scorer import within_group_auc

    assert within_group_auc([([0.9, 0.1], [True, False])]) == 1.0
    assert within_group_auc([([0.1, 0.9], [True, False])]) == 0.0
    assert within_group_auc([([0.5, 0.5], [True, False])]) == 0.5
    # group 2 weighs everything lower, which must not count against group 1's ranking
    groups = [([0.9, 0.8, 0.1], [True, True, False]), ([0.05, 0.01], [True, False]), ([0.3], [True])]
    assert within_group_auc(groups) == 1.0
    assert within_group_auc([([0.3, 0.2], [True, True])]) is None


def test_example_statistics_measure_the_models_own_surprise(tiny_model_dir):
    from mass.models import load_model
    from mass.prompts import SynthExample
    from mass.scorer import STATS, example_stats

    model, tok = load_model(str(tiny_model_dir))
    short = SynthExample("What is $1 + 1$?", "It is $\\boxed{2}$.", "2")
    long = SynthExample("What is $1 + 1$?", "One and one make two, so it is $\\boxed{2}$ indeed, we said.", "2")
    stats = example_stats(model, tok, "What is $2 + 2$?", [short, long, short])
    assert stats.shape == (3, len(STATS)) and torch.isfinite(stats).all()
    assert torch.allclose(stats[0], stats[2])  # a function of the example alone
    assert (stats[:, :4] > 0).all() and (stats[:, 1] >= stats[:, 0]).all() and (stats[:, 3] >= stats[:, 2]).all()
    assert stats[1, 4] > stats[0, 4]  # log token count of the answer
