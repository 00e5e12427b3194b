"""mass/tangents.py: the lean forward-mode rules give the stock rules' values and derivatives
(float64, first and second order, under torch.func and plain autograd), with fewer products."""

import pytest
import torch
from torch.func import grad, jvp, vjp
from torch.profiler import profile

from mass.tangents import FrozenLinear, lean_linears, softmax

F = torch.nn.functional


def _rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    else:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _matmul_flops(fn) -> float:
    with profile(with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.key_averages() if e.key in ("aten::mm", "aten::bmm", "aten::addmm"))


def test_frozen_products_match_the_stock_ones_at_first_and_second_order():
    x, t, weight, g = _rand(3, 5, 4), _rand(3, 5, 4, seed=1), _rand(6, 4, seed=2), _rand(3, 5, 6, seed=3)
    _close(FrozenLinear.apply(x, weight), F.linear(x, weight))
    _close(FrozenLinear.apply(g, weight, True), g @ weight)
    _close(jvp(lambda x: FrozenLinear.apply(x, weight), (x,), (t,)), jvp(lambda x: F.linear(x, weight), (x,), (t,)))
    # jvp of the vjp: the tangent of the backward product as well
    def pulled(apply):
        return lambda x: vjp(lambda x: apply(x).tanh(), x)[1](g)[0]
    _close(jvp(pulled(lambda x: FrozenLinear.apply(x, weight)), (x,), (t,)),
           jvp(pulled(lambda x: F.linear(x, weight)), (x,), (t,)))
    # plain autograd: second derivatives through the pair
    x1 = x.clone().requires_grad_()
    torch.autograd.gradcheck(lambda x: FrozenLinear.apply(x, weight).sin(), (x1,))
    torch.autograd.gradgradcheck(lambda x: FrozenLinear.apply(x, weight).sin(), (x1,))


def _lora_loss(a, b, x, weight, bias, weight2):
    """Two frozen layers with a LoRA update on the first: the shape of the meta-gradient's work."""
    h = F.linear(x, weight, bias) + F.linear(F.linear(x, a), b)
    return F.linear(h.tanh(), weight2).pow(2).sum()


@pytest.mark.parametrize("with_bias", [False, True])
def test_lean_linears_gives_the_same_hessian_vector_product_with_fewer_products(with_bias):
    x, weight, weight2 = _rand(64, 32), _rand(48, 32, seed=1), _rand(32, 48, seed=2)
    bias = _rand(48, seed=3) if with_bias else None
    a, b = _rand(4, 32, seed=4), 0.1 * _rand(48, 4, seed=5)
    ta, tb = _rand(4, 32, seed=6), _rand(48, 4, seed=7)

    def hvp():
        gradient = grad(lambda a, b: _lora_loss(a, b, x, weight, bias, weight2), argnums=(0, 1))
        return jvp(gradient, (a, b), (ta, tb))

    stock, stock_flops = hvp(), _matmul_flops(hvp)
    with lean_linears():
        lean, lean_flops = hvp(), _matmul_flops(hvp)
    _close(lean, stock)
    assert lean_flops < 0.8 * stock_flops


def test_lean_linears_leaves_differentiated_weights_and_plain_calls_alone(monkeypatch):
    calls = []
    real = FrozenLinear.apply
    monkeypatch.setattr(FrozenLinear, "apply", lambda *a: calls.append(1) or real(*a))
    x, weight = _rand(5, 4), _rand(3, 4, seed=1).requires_grad_()
    with lean_linears():
        y = F.linear(x, weight)  # a weight autograd differentiates: the stock path
        (gw,) = torch.autograd.grad(y.sum(), weight)
        z = F.linear(x, weight.detach())  # nothing differentiated at all: the plain call
        assert not calls
        frozen = weight.detach()
        jvp(lambda x: F.linear(x, frozen), (x,), (x,))  # a frozen weight under a transform
        assert calls
    _close(gw, x.sum(0).expand(3, 4))
    _close(z, x @ weight.detach().T)


def test_lean_linears_takes_f_linear_by_keyword():
    x, t, weight, bias = _rand(5, 4), _rand(5, 4, seed=1), _rand(3, 4, seed=2), _rand(3, seed=3)
    stock = jvp(lambda x: F.linear(x, weight, bias=bias), (x,), (t,))
    with lean_linears():
        _close(jvp(lambda x: F.linear(input=x, weight=weight, bias=bias), (x,), (t,)), stock)
        _close(jvp(lambda x: F.linear(x, weight=weight, bias=bias), (x,), (t,)), stock)


def test_softmax_matches_torch_softmax_under_masks_at_first_and_second_order():
    scores = _rand(2, 3, 6, 6)
    mask = torch.full((6, 6), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)
    masked, t = scores + mask, _rand(2, 3, 6, 6, seed=1)
    _close(softmax(masked, -1), torch.softmax(masked, -1))
    _close(jvp(lambda s: softmax(s, -1), (masked,), (t,)), jvp(lambda s: torch.softmax(s, -1), (masked,), (t,)))
    g = _rand(2, 3, 6, 6, seed=2)

    def pulled(fn):
        return lambda s: vjp(lambda s: fn(s, -1).pow(2), s)[1](g)[0]
    _close(jvp(pulled(softmax), (scores,), (t,)), jvp(pulled(torch.softmax), (scores,), (t,)))
    s1 = scores.clone().requires_grad_()
    torch.autograd.gradgradcheck(lambda s: softmax(s, 1), (s1[0, 0],))
