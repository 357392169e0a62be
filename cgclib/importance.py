"""Per-head importance signals: the established scores that capability density is compared
with. All are computed from one calibration set, streamed in batches.

For head h of a layer, z_h(x) in R^{d_head} is its output at token x (the head's slice of
the input to the attention output projection W_O, stored (out, in)), and X_j the j-th input
feature of a linear layer over the calibration tokens.

- **wanda** (the "Wanda-sp" convention of structured pruning): Wanda scores
  abs(W_O[i, j]) * ||X_j||_2 of the output projection, averaged over output rows i and summed
  over the head's input slice j.
- **wanda_qkv**: the same scores on the head's rows of the query, key and value
  projections (inputs: the normalised block input), averaged over those rows and summed
  over inputs. A second aggregation, to see whether a conclusion depends on the choice.
- **magnitude**: the Frobenius norm of the head's slice of W_O.
- **activation_norm**: the root mean square of ||z_h||_2 over tokens.
- **taylor**: the first-order estimate of the loss change when the head is removed. With a
  gate g_h multiplying z_h, removing the head is g_h: 1 -> 0, and the estimate is
  abs(dL/dg_h) at g = 1, which equals abs(E[grad_z L . z_h]) (gradient times activation, summed
  over the head's output; the same as gradient times weight summed over its slice of W_O).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import components, devices
from .hooks import head_outputs, linear_inputs, registered
from .tokens import token_mask

SIGNALS = ("wanda", "wanda_qkv", "magnitude", "activation_norm", "taylor")


@contextmanager
def _head_gates(model: nn.Module, gates: torch.Tensor) -> Iterator[None]:
    """Multiply head h of layer l by gates[l, h] (a tensor that may require grad)."""
    lay = components.layout(model)

    def make(layer):
        def hook(module, args):
            x = args[0]
            z = x.view(*x.shape[:-1], lay.n_heads, lay.head_dim) * gates[layer].to(x.device, x.dtype)[:, None]
            return (z.view_as(x), *args[1:])

        return hook

    with registered(
        lambda: [components.attention_output(model, l).register_forward_pre_hook(make(l)) for l in range(lay.n_layers)]
    ):
        yield


def head_importance(
    model: nn.Module, ids: torch.Tensor, pad_token_id: int | None, batch_sequences: int = 16, progress: bool = False
) -> pd.DataFrame:
    """Every signal of the module docstring for every head, one row per (layer, head),
    from the calibration sequences `ids` (padding and the first position left out)."""
    lay = components.layout(model)
    device = devices.input_device(model)
    n_layers, n_heads, d = lay.n_layers, lay.n_heads, lay.head_dim
    qkv_inputs = {l: next(iter(components.head_qkv_rows(model, l, 0)))[0] for l in range(n_layers)}
    sq_out = torch.zeros(n_layers, n_heads * d, dtype=torch.float64)  # sum of X_j^2, W_O inputs
    sq_qkv = torch.zeros(n_layers, lay.d_model, dtype=torch.float64)  # sum of X_j^2, q/k/v inputs
    head_sq = torch.zeros(n_layers, n_heads, dtype=torch.float64)  # sum of ||z_h||^2
    gate_grad = torch.zeros(n_layers, n_heads, dtype=torch.float64)  # sum of dL/dg over batches
    n_tokens, n_loss_tokens = 0, 0
    was_training = model.training
    model.eval()

    starts = range(0, len(ids), batch_sequences)
    for start in tqdm(starts, desc="importance", disable=not progress, leave=False):
        chunk = ids[start : start + batch_sequences].to(device)
        mask = token_mask(chunk, pad_token_id)
        used = int(mask.sum())

        def grab_heads(layer, z, mask=mask):
            z = z.detach()[mask].double().cpu()  # (tokens, heads, d)
            sq_out[layer] += (z**2).sum(0).reshape(-1)
            head_sq[layer] += (z**2).sum((0, 2))

        def grab_qkv(name, x, mask=mask):
            sq_qkv[int(name)] += (x.detach()[mask].double().cpu() ** 2).sum(0)

        gates = torch.ones(n_layers, n_heads, device=device, requires_grad=True)
        attention = None if pad_token_id is None else (chunk != pad_token_id).long()
        labels = chunk.masked_fill(~mask, -100)
        with (
            head_outputs(model, grab_heads),
            linear_inputs(model, {str(l): m for l, m in qkv_inputs.items()}, grab_qkv),
            _head_gates(model, gates),
        ):
            loss = model(input_ids=chunk, attention_mask=attention, labels=labels).loss
        n_predicted = int((labels[:, 1:] != -100).sum())
        (grad,) = torch.autograd.grad(loss * n_predicted, gates)  # a sum over predicted tokens
        gate_grad += grad.double().cpu()
        n_tokens += used
        n_loss_tokens += n_predicted
    model.train(was_training)

    rows = []
    for layer in range(n_layers):
        w_out = components.weight(components.attention_output(model, layer)).detach().double().cpu()
        wanda_out = w_out.abs() * sq_out[layer].sqrt()  # (out, in) Wanda scores
        for head in range(n_heads):
            cols = slice(head * d, (head + 1) * d)
            qkv = [
                components.weight(m).detach().double().cpu()[r] for m, r in components.head_qkv_rows(model, layer, head)
            ]
            qkv_scores = torch.cat(qkv).abs() * sq_qkv[layer].sqrt()
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "wanda": float(wanda_out[:, cols].mean(0).sum()),
                    "wanda_qkv": float(qkv_scores.mean(0).sum()),
                    "magnitude": float(w_out[:, cols].norm()),
                    "activation_norm": float((head_sq[layer, head] / n_tokens).sqrt()),
                    "taylor": float(abs(gate_grad[layer, head]) / n_loss_tokens),
                }
            )
    return pd.DataFrame(rows).set_index(["layer", "head"])
