"""Exact meta-gradients dL_outer(phi_K)/ds of the inner update (mass/inner.py), three ways.

    L_in(phi; s) = sum_i s_i l_i(phi),    phi_{k+1} = phi_k - alpha * grad L_in(phi_k; s)

- `meta_grad_unrolled`: reverse-over-reverse through the unrolled K steps (create_graph=True);
  the reference, memory grows with K.
- `meta_grad_hybrid`: run the K steps without a graph, keeping phi_0..phi_K and each
  example's own gradient g_k,i = grad l_i(phi_k) (one backward pass in which every example has its
  own copy of phi, mass/batched.py), then the adjoint recurrence backwards from
  lambda_K = grad L_outer(phi_K):
      c_k,i       = <g_k,i, lambda_{k+1}>                              a dot product
      H_k lambda  = jvp(phi -> grad L_in(phi), phi_k, lambda_{k+1})     forward-over-reverse HVP
      lambda_k    = lambda_{k+1} - alpha * H_k lambda                   (k >= 1 only)
      dL/ds_i     = -alpha * sum_k c_k,i
  K steps need K-1 Hessian-vector products and no other forward-mode pass; K = 1 needs none.
- `meta_grad_hybrid_recompute` (meta-training's default): the same recurrence with the HVP
  computed block by block (mass/recompute.py), holding one decoder block's activations at a time.

The jvps run under `lean_linears()` and the `mass_math` attention's softmax (mass/tangents.py):
PyTorch's stock tangent rules multiply by zero tangents of the frozen weights, and that was a
third of a meta-step's matrix products. Forward mode needs that attention (SDPA kernels have no
forward-mode rule) and dropout off. docs/method.md, "Meta-gradients", maps each equation here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, grad_and_value, jvp

from mass.batched import batched_example_losses, lora_layers, stack_params
from mass.inner import Params, SFTBatch, adapt_unrolled, example_losses, inner_loss, row_slices
from mass.recompute import check_blockwise_once, decoder_of, loss_grad_blockwise, split_by_layer
from mass.tangents import lean_linears


@dataclass
class MetaGrad:
    ds: torch.Tensor  # dL_outer/ds_i  (m,)
    outer_loss: float  # L_outer(phi_K)
    phi_K: Params  # the adapted parameters (detached)


def example_grads(model: torch.nn.Module, phi: Params, batch: SFTBatch, rows_at_once: int | None = None) -> Params:
    """grad l_i(phi) of every example i, stacked: {name: (m, *shape)}.

    A forward and backward pass of the examples, each under its own copy of phi (the per-row
    LoRA of mass/batched.py), so slice i holds example i's gradient; `rows_at_once` examples per
    pass (None: all m), which is what such a pass holds activations for. That covers LoRA A/B
    matrices of linear layers; other trainable entries (LoRA on embeddings, DoRA magnitudes,
    modules to save) take one gradient per example instead."""
    m = batch.input_ids.shape[0]
    covered = {name for _, a, b, _ in lora_layers(model, phi).values() for name in (a, b)}
    if set(phi) - covered:
        return _example_grads_one_by_one(model, phi, batch)
    parts = [_stacked_grads(model, phi, batch.rows(rows)) for rows in row_slices(m, rows_at_once)]
    return {n: torch.cat([part[n] for part in parts]) for n in phi}


def _stacked_grads(model: torch.nn.Module, phi: Params, batch: SFTBatch) -> Params:
    m = batch.input_ids.shape[0]
    copies = {n: p.clone().requires_grad_(True) for n, p in stack_params(phi, m).items()}
    with torch.enable_grad():
        losses = batched_example_losses(model, copies, torch.arange(m, device=batch.input_ids.device), batch)
        grads = torch.autograd.grad(losses.sum(), list(copies.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(copies.items(), grads)}


def _example_grads_one_by_one(model: torch.nn.Module, phi: Params, batch: SFTBatch) -> Params:
    rows = [grad(lambda phi, i=i: example_losses(model, phi, batch.rows(slice(i, i + 1))).sum())(phi)
            for i in range(batch.input_ids.shape[0])]
    return {n: torch.stack([r[n] for r in rows]) for n in phi}


def adapt_with_example_grads(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
                             steps: int, rows_at_once: int | None = None) -> tuple[list[Params], list[Params]]:
    """([phi_0, ..., phi_K], [g_0, ..., g_{K-1}]) with g_k = `example_grads` at phi_k; all detached."""
    s = s.detach()
    trajectory, grads = [{n: p.detach() for n, p in phi0.items()}], []
    for _ in range(steps):
        phi, g = trajectory[-1], example_grads(model, trajectory[-1], batch, rows_at_once)
        grads.append(g)
        trajectory.append({n: phi[n] - alpha * torch.tensordot(s.to(g[n].dtype), g[n], 1) for n in phi})
    return trajectory, grads


def meta_grad_hybrid(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
                     steps: int, outer_loss: Callable[[Params], torch.Tensor],
                     inner_grad: Callable[[Params], Params] | None = None,
                     rows_at_once: int | None = None) -> MetaGrad:
    """dL_outer(phi_K)/ds by the forward-over-reverse adjoint recurrence (module docstring).

    `inner_grad(phi) -> grad L_in(phi)` is the function pushed forward along lambda for H_k lambda;
    by default `grad(inner_loss)`, and `meta_grad_hybrid_recompute` passes one that holds one
    decoder block's activations at a time. `rows_at_once`: examples per pass of `example_grads`."""
    s = s.detach()
    inner_grad = inner_grad or grad(lambda phi: inner_loss(model, phi, batch, s))
    trajectory, grads = adapt_with_example_grads(model, phi0, batch, s, alpha, steps, rows_at_once)
    lam, value = grad_and_value(outer_loss)(trajectory[-1])  # lambda_K = grad L_outer(phi_K)
    lam = {n: t.detach() for n, t in lam.items()}
    ds = torch.zeros_like(s, dtype=next(iter(lam.values())).dtype)
    for k in reversed(range(steps)):
        g_k = grads.pop()  # freed once used
        c = sum(g_k[n].flatten(1) @ lam[n].flatten() for n in lam)  # c_k,i = <g_k,i, lambda_{k+1}>
        ds = ds - alpha * c.to(ds.dtype)
        if k > 0:  # lambda_0 is never used
            with lean_linears():  # the frozen base weights' tangent rule without its zero products
                _, h_lam = jvp(inner_grad, (trajectory[k],), (lam,))
            lam = {n: (lam[n] - alpha * h_lam[n]).detach() for n in lam}
    return MetaGrad(ds=ds, outer_loss=float(value), phi_K=trajectory[-1])


def meta_grad_hybrid_recompute(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
                               steps: int, outer_loss: Callable[[Params], torch.Tensor],
                               rows_at_once: int = 1) -> MetaGrad:
    """dL_outer(phi_K)/ds by `meta_grad_hybrid`'s recurrence with the Hessian-vector products
    computed block by block (mass/recompute.py). The K inner steps (each example's gradient) are
    plain gradients of `rows_at_once` examples at a time, and lambda_K = grad L_outer(phi_K) one of
    the gold sequence: each holds what an SFT step on those rows holds (recomputing blocks there
    would only cost time), and the loss head's logits are computed for `rows_at_once` rows at a
    time too: what is held at once is one block's, or those rows', never all m examples'."""
    s = s.detach()
    decoder = decoder_of(model)  # once, and before any work: a model it cannot split is an error now
    split_by_layer(decoder, phi0)
    check_blockwise_once(model, phi0, batch, decoder)
    return meta_grad_hybrid(model, phi0, batch, s, alpha, steps, outer_loss, rows_at_once=rows_at_once,
                            inner_grad=lambda phi: loss_grad_blockwise(model, phi, batch, s, decoder, rows_at_once)[0])


def meta_grad_unrolled(model: torch.nn.Module, phi0: Params, batch: SFTBatch, s: torch.Tensor, alpha: float,
                       steps: int, outer_loss: Callable[[Params], torch.Tensor]) -> MetaGrad:
    """dL_outer(phi_K)/ds by reverse-over-reverse through the unrolled steps (the reference)."""
    s = s.detach().requires_grad_(True)
    phi_K = adapt_unrolled(model, {n: p.detach() for n, p in phi0.items()}, batch, s, alpha, steps)
    value = outer_loss(phi_K)
    (ds,) = torch.autograd.grad(value, s)
    return MetaGrad(ds=ds.detach(), outer_loss=float(value.detach()), phi_K={n: p.detach() for n, p in phi_K.items()})


# every meta-gradient, by the name `mass meta-train meta_grad=...` and `mass bench metagrad` use
META_GRADS = {"hybrid": meta_grad_hybrid, "unrolled": meta_grad_unrolled,
              "hybrid-recompute": meta_grad_hybrid_recompute}
