"""Forward-mode (jvp) rules that do no more work than the derivative needs.

The forward-over-reverse meta-gradients (mass/metagrad.py) push a tangent through a gradient
computation. PyTorch's stock forward-mode rules waste work there (measured on the embedded
model, `mass bench metagrad`'s batch):

- `x @ W.T` with a frozen W: the rule is `x_t @ W.T + x @ W_t` with W_t a zero tensor, and under
  `torch.func.jvp` the product with that zero is carried out: 4 matrix products where the
  derivative needs 2 (primal and x_t @ W.T). A hybrid-recompute meta-step on the embedded model
  does 185 GFLOP of matrix products with the stock rules and 133 with these.
- softmax: the rule recomputes exp(x - max) on the whole score matrix; causal masking puts
  entries near the float minimum there, and this CPU's vectorised exp falls to a slow path for
  arguments below about -87, so one attention softmax's jvp took 33 ms for what
  `y * (t - <y, t>)` does in 8 (`python scripts/tangent_cost.py` measures both).

`FrozenLinear` is the frozen product (and, flagged, its transpose), with a one-product tangent
rule and the other product as its backward, so the rules stay lean at every order (jvp of the vjp
of the forward included). `lean_linears()` routes `F.linear` with a frozen weight through
them for the duration of a `with`; LoRA weights, which carry tangents, keep the stock rule.
`softmax` is the softmax with the closed-form tangent under `torch.func` transforms and
`torch.softmax` itself elsewhere (generation and plain autograd keep the fused kernels); the
meta-gradient attention (mass/models.py, `mass_math`) uses it. Values are the same functions:
only the tangent arithmetic changes (tests/test_tangents.py checks values, jvps and second derivatives against
the stock rules in float64).
"""

from __future__ import annotations

import torch
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.overrides import TorchFunctionMode


class FrozenLinear(torch.autograd.Function):
    """y = x @ W.T (or, `transposed`, y = x @ W) for a weight W that is not differentiated (no
    tangent, no gradient). The tangent is the same product of x_t, and the backward the other one
    (`transposed` flipped), so the rules stay one product at every order."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
        return torch.matmul(x, weight) if transposed else torch.nn.functional.linear(x, weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.set_materialize_grads(False)  # W's missing tangent stays None, not a W-sized zero tensor
        ctx.transposed = inputs[2] if len(inputs) > 2 else False
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor | None, weight_t, *_transposed_t) -> torch.Tensor | None:
        assert weight_t is None, "FrozenLinear: the weight must carry no tangent"
        (weight,) = ctx.saved_tensors
        return None if x_t is None else FrozenLinear.apply(x_t, weight, ctx.transposed)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor | None):
        (weight,) = ctx.saved_tensors
        return None if grad_y is None else FrozenLinear.apply(grad_y, weight, not ctx.transposed), None, None


def _is_frozen(t: torch.Tensor | None) -> bool:
    """Not differentiated by autograd, and not a variable of a `torch.func` transform."""
    return t is None or (not t.requires_grad and not is_functorch_wrapped_tensor(t))


class _LeanLinears(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:  # F.linear(input, weight, bias=None), any of them by keyword
            named = dict(zip(("input", "weight", "bias"), args)) | kwargs
            x, weight, bias = named.get("input"), named.get("weight"), named.get("bias")
            if x is not None and weight is not None and _is_frozen(weight) and _is_frozen(bias) and not _is_frozen(x):
                y = FrozenLinear.apply(x, weight)
                return y if bias is None else y + bias
        return func(*args, **kwargs)


def lean_linears() -> TorchFunctionMode:
    """A context manager: inside its `with`, `F.linear` (every `nn.Linear`) with a frozen weight
    and bias uses `FrozenLinear`; everything else runs as before."""
    return _LeanLinears()


class _Softmax(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, _dim_t) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return y * (x_t - (y * x_t).sum(ctx.dim, keepdim=True))

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        (y,) = ctx.saved_tensors
        if is_functorch_wrapped_tensor(y) or is_functorch_wrapped_tensor(grad_y):  # differentiated again: plain ops
            return y * (grad_y - (y * grad_y).sum(ctx.dim, keepdim=True)), None
        return torch._softmax_backward_data(grad_y, y, ctx.dim, y.dtype), None  # the fused kernel


def softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`torch.softmax(x, dim, dtype=dtype)`; under a `torch.func` transform, one whose tangent is
    y * (x_t - <y, x_t>) with y the saved output (elsewhere the stock one: no Python overhead)."""
    if not is_functorch_wrapped_tensor(x):
        return torch.softmax(x, dim, dtype=dtype)
    return _Softmax.apply(x if dtype is None else x.to(dtype), dim)
