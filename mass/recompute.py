"""Block-level recomputation: the inner loss, its LoRA gradient and the per-example losses of a
decoder-only model, holding the activations of one decoder block at a time.

`torch.utils.checkpoint` refuses to run inside `torch.func` transforms (its saved-tensor hooks
are not allowed there), so the recomputation is written out by hand:

    forward:   h_0 = embed(x);  h_{b+1} = block_b(h_b; phi_b)      keep only h_0 .. h_B
    head:      L_in = sum_i s_i l_i(norm(h_B) @ W_out)             vjp -> g_B = dL_in/dh_B
    backward:  for b = B-1 .. 0: recompute block_b(h_b; phi_b) under `torch.func.vjp`,
               (g_b, dL_in/dphi_b) = vjp(g_{b+1}), and drop the block's activations
               (the last block's are kept from the forward: they are needed next anyway)

`loss_grad_blockwise` is an ordinary function of phi made of `torch.func` calls, so forward mode
composes with it: `jvp(loss_grad_blockwise, phi_k, lambda)` gives the Hessian-vector product
H_k lambda while holding one block's primal and tangent activations plus the B+1 block inputs,
where `jvp(grad(...))` (`meta_grad=hybrid`) holds every block's. mass/metagrad.py
(`meta_grad_hybrid_recompute`) runs the adjoint recurrence on top of it (docs/method.md,
"Meta-gradients"; `mass bench metagrad` measures the three modes).

Supported: Hugging Face decoder-only models laid out as Llama is (`model.embed_tokens`,
`model.layers`, `model.norm`, `model.rotary_emb`, `lm_head`: Llama, Mistral, Qwen2, SmolLM2, the
embedded model), with LoRA on the decoder layers only; anything else is a clear error. A model
laid out so but doing more in its own forward than those parts do (Cohere scales its logits,
Gemma 2 caps them) is caught the first time it is used (`check_blockwise_once`), and sequences
longer than a sliding attention window are refused: the blockwise pass builds a plain causal mask.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.func import functional_call, vjp
from transformers.masking_utils import create_causal_mask

from mass.errors import MassError
from mass.inner import Params, SFTBatch, answer_ce, example_losses, row_slices, scored_start


@dataclass
class Decoder:
    """The pieces of a decoder-only causal LM that the blockwise pass runs one by one."""
    embed: torch.nn.Module
    layers: list[torch.nn.Module]
    layer_prefixes: list[str]  # each layer's parameter-name prefix in the (PEFT) model, with the dot
    norm: torch.nn.Module
    head: torch.nn.Module
    rotary: torch.nn.Module
    config: object


def decoder_of(model: torch.nn.Module) -> Decoder:
    """The model's embedding, decoder layers, final norm, LM head and rotary embedding."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(lm, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, a) for a in needed) or not hasattr(lm, "lm_head"):
        raise MassError(f"meta_grad=hybrid-recompute needs a Llama-style decoder (model.embed_tokens, model.layers, "
                        f"model.norm, model.rotary_emb, lm_head); {type(lm).__name__} is not one: use hybrid")
    names = {id(module): name for name, module in model.named_modules()}
    layers = list(inner.layers)[: lm.config.num_hidden_layers]
    return Decoder(inner.embed_tokens, layers, [names[id(layer)] + "." for layer in layers], inner.norm,
                   lm.lm_head, inner.rotary_emb, lm.config)


def split_by_layer(decoder: Decoder, phi: Params) -> list[Params]:
    """phi as one dict per decoder layer, keyed by names inside that layer."""
    parts: list[Params] = [{} for _ in decoder.layers]
    for name, value in phi.items():
        for b, prefix in enumerate(decoder.layer_prefixes):
            if name.startswith(prefix):
                parts[b][name[len(prefix):]] = value
                break
        else:
            raise MassError(f"meta_grad=hybrid-recompute recomputes decoder layers only, and the LoRA parameter "
                            f"{name} is outside them: use hybrid, or LoRA targets inside the layers")
    return parts


def _causal_mask(decoder: Decoder, embeds: torch.Tensor, attention_mask: torch.Tensor,
                 position_ids: torch.Tensor):
    """The additive attention mask the model itself builds for these inputs (no cache)."""
    return create_causal_mask(config=decoder.config, inputs_embeds=embeds, attention_mask=attention_mask,
                              past_key_values=None, position_ids=position_ids)


def loss_grad_blockwise(model: torch.nn.Module, phi: Params, batch: SFTBatch, s: torch.Tensor,
                        decoder: Decoder | None = None, head_rows: int | None = None) -> tuple[Params, torch.Tensor]:
    """(grad_phi L_in, l) with L_in = sum_i s_i l_i, recomputing one decoder block at a time.

    Equal to `grad(inner_loss)` and `example_losses` of mass/inner.py up to float rounding
    (tests/test_recompute.py); the position ids are 0..L-1, as the model's own forward uses for
    right-padded rows. `decoder`: `decoder_of(model)`, if the caller already has it. The head
    (norm, LM head, loss) runs `head_rows` rows at a time (None: all): each row's loss depends on
    its own hidden states only, and a large vocabulary's logits of all rows would be the largest
    thing held (Llama 3's 128k entries, 12 rows of 1,024 tokens: 6 GB per float32 copy)."""
    decoder = decoder or decoder_of(model)
    window = getattr(decoder.config, "sliding_window", None)
    if isinstance(window, int) and batch.input_ids.shape[1] > window:
        raise MassError(f"meta_grad=hybrid-recompute builds a plain causal mask, and these {batch.input_ids.shape[1]}-"
                        f"token examples are longer than the model's sliding window ({window}): use hybrid")
    per_layer = split_by_layer(decoder, phi)
    embeds = decoder.embed(batch.input_ids)
    position_ids = torch.arange(batch.input_ids.shape[1], device=embeds.device)[None]
    mask = _causal_mask(decoder, embeds, batch.attention_mask, position_ids)
    position_embeddings = decoder.rotary(embeds, position_ids=position_ids)

    def block(b: int, h: torch.Tensor, params: Params) -> torch.Tensor:
        out = functional_call(decoder.layers[b], params, args=(h,), strict=False,
                              kwargs={"attention_mask": mask, "position_ids": position_ids,
                                      "position_embeddings": position_embeddings})
        return out[0] if isinstance(out, tuple) else out

    start = scored_start(batch)

    def head(h: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:  # logits where scored only
        losses = answer_ce(decoder.head(decoder.norm(h[:, start:])), batch.rows(rows))
        return (s[rows].to(losses.dtype) * losses).sum(), losses

    last = len(decoder.layers) - 1
    inputs = [embeds]  # h_0 .. h_{B-1}: the only activations kept between blocks
    for b in range(last):
        inputs.append(block(b, inputs[-1], per_layer[b]))
    # the last block's backward comes right after the head's: keep its activations, not recompute them
    h_last, last_vjp = vjp(lambda h, params: block(last, h, params), inputs.pop(), per_layer[last])
    g, losses = _head_backward(head, h_last, head_rows)
    grads: Params = {}
    for b in reversed(range(last + 1)):
        pullback = last_vjp if b == last else vjp(lambda h, params, b=b: block(b, h, params), inputs.pop(),
                                                  per_layer[b])[1]
        last_vjp = None
        g, layer_grads = pullback(g, retain_graph=False)
        del pullback
        grads.update({decoder.layer_prefixes[b] + n: t for n, t in layer_grads.items()})
    return {n: grads[n] for n in phi}, losses


def _head_backward(head, h: torch.Tensor, rows_at_once: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dh, l): the head's vjp `rows_at_once` rows at a time; each pullback is dropped once
    used, so that its saved activations (the logits) go with it."""
    grads, losses = [], []
    for rows in row_slices(h.shape[0], rows_at_once):
        _, head_vjp, part_losses = vjp(lambda h_rows, rows=rows: head(h_rows, rows), h[rows], has_aux=True)
        (g,) = head_vjp(torch.ones((), dtype=part_losses.dtype, device=part_losses.device), retain_graph=False)
        del head_vjp
        grads.append(g)
        losses.append(part_losses)
    return torch.cat(grads), torch.cat(losses)


_CHECKED: weakref.WeakSet = weakref.WeakSet()  # models whose blockwise losses matched their own


def check_blockwise_once(model: torch.nn.Module, phi: Params, batch: SFTBatch, decoder: Decoder) -> None:
    """Raise unless the blockwise pass gives the model's own per-example losses on `batch`; once
    per model (a forward pass of each, a row at a time: no more memory than the meta-step's).

    `decoder_of` knows a Llama-like model by its parts, but a model's forward may do more than
    its parts (Cohere multiplies the logits by a scale, Gemma 2 caps them), and the meta-gradient
    would then be silently wrong: here it is an error instead."""
    if model in _CHECKED:
        return
    s = torch.zeros(batch.input_ids.shape[0], device=batch.input_ids.device)
    blockwise = loss_grad_blockwise(model, phi, batch, s, decoder, head_rows=1)[1].detach()
    with torch.no_grad():
        own = torch.cat([example_losses(model, phi, batch.rows(rows)) for rows in row_slices(len(blockwise), 1)])
    tol = max(1e-4, 4 * torch.finfo(decoder.embed.weight.dtype).eps)
    if not torch.allclose(blockwise, own.to(blockwise.dtype), rtol=tol, atol=tol):
        name = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
        largest = float((blockwise - own).abs().max())
        raise MassError(f"meta_grad=hybrid-recompute does not reproduce {name}'s own losses (largest difference "
                        f"{largest:.3g}): its forward does more than its embedding, decoder layers, final norm and "
                        f"LM head; use meta_grad=hybrid")
    _CHECKED.add(model)
