"""Exit heads at every layer, and which tokens are settled before the last block.

An exit head turns the residual stream after block l into next-token logits with the
model's own final norm and unembedding. The *logit lens* applies them to h_l directly (no
training); a *fitted* exit head first maps h_l by an affine translator T_l fitted by least
squares to the last block's output h_L (closed-form ridge on streamed moments; a
closed-form cousin of the tuned lens, which trains T_l by gradient descent on the KL).

A token's prediction is settled at layer l when the KL divergence from the full model's
next-token distribution to the exit head's is at most a threshold tau: an oracle early-exit
policy with tolerance tau would stop there. A token is *easy* when it settles by a chosen
depth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import components, devices
from .evaluation import max_batch_tokens, vocabulary_size
from .hooks import residual_stream
from .moments import AffineMap, CrossMoments, ridge_regression, token_batches


@torch.no_grad()
def fit_exit_translators(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    ridge: float = 1e-4,
    batch_sequences: int = 16,
    progress: bool = False,
) -> dict[int, AffineMap]:
    """Affine maps from each block's output to the last block's output, fitted on `ids`."""
    n_layers = components.layout(model).n_layers
    d = components.layout(model).d_model
    device = devices.input_device(model)
    moments = {l: CrossMoments.zeros(d, d, device) for l in range(n_layers - 1)}
    outputs: dict[int, torch.Tensor] = {}

    def grab(layer, where, h):
        if where == "out":
            outputs[layer] = h

    with residual_stream(model, grab):
        for chunk, mask, attention in token_batches(
            model, ids, pad_token_id, batch_sequences, progress, "exit translators"
        ):
            model(input_ids=chunk, attention_mask=attention)
            last = outputs[n_layers - 1][mask]
            for l, m in moments.items():
                m.update(outputs[l][mask], last)
    return {l: ridge_regression(m, ridge) for l, m in moments.items()}


@torch.no_grad()
def exit_divergences(
    model: nn.Module,
    ids: torch.Tensor,
    predicted: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    translators: Mapping[int, AffineMap] | None = None,
    batch_sequences: int = 64,
) -> np.ndarray:
    """KL(full model || exit head at layer l), in nats, for every token marked in
    `predicted` (bool, shape of `ids`; the token at t is predicted from position t - 1):
    an array (tokens, layers). Without `translators` the exit heads are the logit lens."""
    if predicted.shape != ids.shape:
        raise ValueError(f"predicted mask shape {tuple(predicted.shape)} differs from ids {tuple(ids.shape)}")
    n_layers = components.layout(model).n_layers
    device = devices.input_device(model)
    token_budget = max_batch_tokens(vocabulary_size(model))  # logits are tokens x vocab
    batch_sequences = max(1, min(batch_sequences, token_budget // ids.shape[1]))
    norm, unembed = components.final_norm(model), components.unembedding(model)
    translators = {l: t.to(device) for l, t in (translators or {}).items()}
    outputs: dict[int, torch.Tensor] = {}
    rows = []

    def grab(layer, where, h):
        if where == "out":
            outputs[layer] = h

    was_training = model.training
    model.eval()
    try:
        with residual_stream(model, grab):
            for start in range(0, len(ids), batch_sequences):
                chunk = ids[start : start + batch_sequences].to(device)
                attention = (
                    None if attention_mask is None else attention_mask[start : start + batch_sequences].to(device)
                )
                positions = predicted[start : start + batch_sequences, 1:].to(device)
                logits = model(input_ids=chunk, attention_mask=attention).logits[:, :-1][positions].float()
                final = F.log_softmax(logits, -1)
                per_layer = []
                for l in range(n_layers):
                    h = outputs[l][:, :-1][positions]
                    if l in translators:
                        h = translators[l](h)
                    exit_logp = F.log_softmax(unembed(norm(h)).float(), -1)
                    per_layer.append(F.kl_div(exit_logp, final, log_target=True, reduction="none").sum(-1))
                rows.append(torch.stack(per_layer, 1).clamp(min=0).cpu())
    finally:
        model.train(was_training)
    return torch.cat(rows).numpy()


def settling_layer(divergences: np.ndarray, threshold: float) -> np.ndarray:
    """Per token, the first layer whose exit head is within `threshold` nats of the full
    model (the last layer's head is the model itself, so every token settles)."""
    within = divergences <= threshold
    within[:, -1] = True
    return within.argmax(1)


def settled_share(divergences: np.ndarray, threshold: float, by_layer: int) -> float:
    """Share of tokens settled at or before layer `by_layer`."""
    return float((settling_layer(divergences, threshold) <= by_layer).mean())


def token_sequences(predicted: torch.Tensor) -> np.ndarray:
    """Per row of `exit_divergences(model, ids, predicted, ...)`, the index of the sequence
    (row of `ids`) the token belongs to: the clusters of a bootstrap that resamples whole
    sequences (`stats.cluster_bootstrap_interval`)."""
    return torch.nonzero(predicted[:, 1:].cpu())[:, 0].numpy()
