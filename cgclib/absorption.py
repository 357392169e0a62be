"""How a perturbation of the residual stream travels through the later layers: amplified or
absorbed. Our reconstruction of the protocol of Jing et al. (2026).

A perturbation enters at the output of block l, either as Gaussian noise whose norm is a
given fraction `magnitude` of the hidden state's norm at every token, or as the change that
pruning block l causes. At every block k >= l we compare the perturbed hidden state h~_k
with the clean one h_k, token by token:

    drift_k  = ||h~_k - h_k|| / ||h_k||          (relative L2 drift)
    cosine_k = <h~_k, h_k> / (||h~_k|| ||h_k||)    (realignment with the clean trajectory)

averaged over the real tokens of the calibration text, accumulated batch by batch (only
one batch of clean states is held at a time). Block k *amplifies* what it receives when
drift_k > drift_{k-1} and *absorbs* it when drift_k < drift_{k-1}.

The linearised picture: for a small perturbation delta, h~_k - h_k ~ J_{k<-l} delta, with
J the Jacobian of block k's output with respect to block l's output; `linear_drift`
computes ||J delta|| / ||h_k|| with forward-mode differentiation (a Jacobian-vector
product), the drift per unit magnitude that a purely linear network would show.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from . import components, devices
from .hooks import registered, residual_stream
from .pruning import Masks, masked, wanda_block_masks
from .resume import started_at
from .tokens import token_mask

Perturbation = Callable[[list[torch.Tensor], int], AbstractContextManager]
"""Given the clean block outputs of a batch and the batch's index, a context under which
the model is perturbed."""

K = TypeVar("K", bound=Hashable)


@contextmanager
def added_to_block_output(model: nn.Module, layer: int, delta: torch.Tensor) -> Iterator[None]:
    """Add `delta` (batch, seq, d_model) to the output of block `layer`."""
    block = components.block(model, layer)

    def hook(module, args, output):
        if isinstance(output, (tuple, list)):
            return (output[0] + delta.to(output[0].device), *output[1:])
        return output + delta.to(output.device)

    with registered(lambda: [block.register_forward_hook(hook)]):
        yield


def _generator(device: torch.device, *entropy: int) -> torch.Generator:
    """A generator on `device` seeded from the integers `entropy` (seed, layer, batch)."""
    return torch.Generator(device=device).manual_seed(int(np.random.SeedSequence(list(entropy)).generate_state(1)[0]))


def relative_noise(state: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian direction per token, scaled to `magnitude` times that token's norm."""
    xi = torch.randn(state.shape, generator=generator, device=state.device, dtype=torch.float32).to(state.dtype)
    scale = magnitude * state.norm(dim=-1, keepdim=True) / xi.norm(dim=-1, keepdim=True)
    return xi * scale


def noise_at(model: nn.Module, layer: int, magnitude: float, seed: int) -> Perturbation:
    """Noise of relative `magnitude` added at block `layer`'s output; a seeded draw per
    (seed, layer, batch index), the same draw for every magnitude."""
    components.check_layer(model, layer)
    if not magnitude > 0:
        raise ValueError(f"a perturbation magnitude must be positive, got {magnitude}")

    def make(clean: list[torch.Tensor], batch_index: int):
        generator = _generator(clean[layer].device, seed, layer, batch_index)
        return added_to_block_output(model, layer, relative_noise(clean[layer], magnitude, generator))

    return make


def pruned(model: nn.Module, masks: Masks) -> Perturbation:
    """The perturbation of applying `masks` (e.g. Wanda on one block)."""
    return lambda clean, batch_index: masked(model, masks)


def _block_outputs(model: nn.Module, ids: torch.Tensor, attention: torch.Tensor | None) -> list[torch.Tensor]:
    outs: dict[int, torch.Tensor] = {}
    with residual_stream(model, lambda l, where, h: outs.__setitem__(l, h) if where == "out" else None):
        model(input_ids=ids, attention_mask=attention)
    return [outs[l] for l in range(len(outs))]


def _clean_batches(
    model: nn.Module, ids: torch.Tensor, pad_token_id: int | None, batch_sequences: int, progress: bool = False
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, list[torch.Tensor]]]:
    """Per batch: (index, token ids, mask of real tokens, attention mask, clean block
    outputs), with the model in eval mode; one batch of clean states is held at a time."""
    device = devices.input_device(model)
    was_training = model.training
    model.eval()
    try:
        batches = list(enumerate(range(0, len(ids), batch_sequences)))
        for index, start in tqdm(batches, desc="perturbations", disable=not progress, leave=False):
            chunk = ids[start : start + batch_sequences].to(device)
            attention = None if pad_token_id is None else (chunk != pad_token_id).long()
            with torch.no_grad():
                clean = _block_outputs(model, chunk, attention)
            yield index, chunk, token_mask(chunk, pad_token_id), attention, clean
    finally:
        model.train(was_training)


def trajectory_drift(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    perturbations: Mapping[K, tuple[int, Perturbation]],
    batch_sequences: int = 16,
    progress: bool = False,
    by_sequence: bool = False,
) -> pd.DataFrame:
    """Mean relative drift and cosine at every block k >= l for every perturbation
    {key: (l, perturbation)}: one row per (key, block), averaged over every real token.
    With `by_sequence`, one row per (key, block, calibration sequence), each averaged over
    that sequence's tokens and carrying its token count, so that intervals can resample
    sequences (`pooled` recovers the token-weighted mean). A perturbation keyed to block l
    must leave the blocks before l as they are: its forward pass starts at block l, from
    the clean stream."""
    n_layers = components.layout(model).n_layers
    sums = {key: torch.zeros(len(ids), 2, n_layers, dtype=torch.float64) for key in perturbations}
    tokens = torch.zeros(len(ids), dtype=torch.float64)
    for batch_index, chunk, mask, attention, clean in _clean_batches(
        model, ids, pad_token_id, batch_sequences, progress
    ):
        rows = slice(batch_index * batch_sequences, batch_index * batch_sequences + len(chunk))
        tokens[rows] = mask.sum(1).double().cpu()
        for key, (layer, perturbation) in perturbations.items():
            # blocks before the perturbed one compute the clean stream: start at that block
            start = clean[layer - 1] if layer > 0 else None
            with perturbation(clean, batch_index), started_at(model, layer, start), torch.no_grad():
                noisy = _block_outputs(model, chunk, attention)
            for k in range(layer, n_layers):
                h, g = clean[k].double(), noisy[k].double()
                # positions outside the mask (padding) may hold zero states: never divide there
                drift = torch.where(mask, (g - h).norm(dim=-1) / h.norm(dim=-1).where(mask, 1.0), 0.0)
                cosine = torch.where(mask, torch.nn.functional.cosine_similarity(g, h, dim=-1), 0.0)
                sums[key][rows, 0, k] = drift.sum(1).cpu()
                sums[key][rows, 1, k] = cosine.sum(1).cpu()
    frame = pd.DataFrame(
        [
            {
                "key": key,
                "source": layer,
                "layer": k,
                "sequence": i,
                "tokens": float(tokens[i]),
                "drift": float(sums[key][i, 0, k] / tokens[i]) if tokens[i] else np.nan,
                "cosine": float(sums[key][i, 1, k] / tokens[i]) if tokens[i] else np.nan,
            }
            for key, (layer, _) in perturbations.items()
            for k in range(layer, n_layers)
            for i in range(len(ids))
        ]
    )
    return frame if by_sequence else pooled(frame)


def pooled(by_sequence: pd.DataFrame) -> pd.DataFrame:
    """Token-weighted means over sequences of `trajectory_drift(..., by_sequence=True)`:
    one row per (key, block), as `trajectory_drift` returns by default."""
    frame = by_sequence[by_sequence["tokens"] > 0]
    weights = frame["tokens"]
    grouped = frame.assign(drift=frame["drift"] * weights, cosine=frame["cosine"] * weights).groupby(
        ["key", "source", "layer"], sort=False
    )
    sums = grouped[["drift", "cosine", "tokens"]].sum()
    sums["drift"] /= sums["tokens"]
    sums["cosine"] /= sums["tokens"]
    return sums.drop(columns="tokens").reset_index()


def linear_drift(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    layers: list[int],
    seed: int,
    batch_sequences: int = 16,
) -> pd.DataFrame:
    """Drift per unit magnitude predicted by the Jacobian: mean over tokens of
    ||J_{k<-l} v|| / ||h_k|| at every block k >= l, v the unit-magnitude noise direction that
    `noise_at(model, l, m, seed)` scales by m. One row per (source l, block k)."""
    n_layers = components.layout(model).n_layers
    sums = torch.zeros(n_layers, n_layers, dtype=torch.float64)
    n_tokens = 0
    for batch_index, chunk, mask, attention, clean in _clean_batches(model, ids, pad_token_id, batch_sequences):
        n_tokens += int(mask.sum())
        for layer in layers:
            generator = _generator(clean[layer].device, seed, layer, batch_index)
            direction = relative_noise(clean[layer], 1.0, generator)

            def later_states(delta, layer=layer, clean=clean, chunk=chunk, attention=attention):
                start = clean[layer - 1] if layer > 0 else None
                with added_to_block_output(model, layer, delta), started_at(model, layer, start):
                    return tuple(_block_outputs(model, chunk, attention)[layer:])

            # forward-mode differentiation; the fused attention kernels have no forward
            # derivative, so attention runs on the plain (math) backend here
            with sdpa_kernel(SDPBackend.MATH):
                tangents = torch.func.jvp(later_states, (torch.zeros_like(direction),), (direction,))[1]
            for k, t in zip(range(layer, n_layers), tangents, strict=True):
                sums[layer, k] += (
                    (t.detach()[mask].double().norm(dim=-1) / clean[k][mask].double().norm(dim=-1)).sum().cpu()
                )
    return pd.DataFrame(
        [
            {"source": l, "layer": k, "linear_drift": float(sums[l, k] / n_tokens)}
            for l in layers
            for k in range(l, n_layers)
        ]
    )


def layer_gains(drift: pd.DataFrame) -> pd.DataFrame:
    """Per row of `trajectory_drift`, the gain of block k: drift_k / drift_{k-1} on the same
    perturbation (rows k = l, the injection block itself, are left out)."""
    frame = drift.sort_values(["key", "layer"]).copy()
    frame["gain"] = frame["drift"] / frame.groupby("key")["drift"].shift(1)
    return frame[frame["layer"] > frame["source"]]


def block_pruning_drift(
    model: nn.Module,
    calibration: torch.Tensor,
    texts: torch.Tensor,
    pad_token_id: int | None,
    sparsities: list[float],
    progress: bool = False,
) -> pd.DataFrame:
    """The perturbation that pruning causes: every block pruned alone with Wanda (masks from
    `calibration`) at every sparsity, and its drift through the later blocks on `texts`, one
    row per (block pruned, sparsity, block reached, sequence) as `trajectory_drift(...,
    by_sequence=True)` returns, with the columns `pruned` and `sparsity` added."""
    n_layers = components.layout(model).n_layers
    perturbations = {}
    for layer in range(n_layers):
        for sparsity in sparsities:
            masks = wanda_block_masks(model, calibration, pad_token_id, {layer: sparsity})
            perturbations[layer, sparsity] = (layer, pruned(model, masks))
    by_sequence = trajectory_drift(model, texts, pad_token_id, perturbations, progress=progress, by_sequence=True)
    by_sequence["pruned"] = by_sequence["key"].map(lambda key: key[0])
    by_sequence["sparsity"] = by_sequence["key"].map(lambda key: key[1])
    return by_sequence


def depth_profile(drift: pd.DataFrame) -> pd.Series:
    """Each block's geometric-mean gain over every perturbation that reaches it from an
    earlier block (`drift`: one perturbation per source block, as `trajectory_drift`
    returns): the profile over depth that says whether later blocks absorb more. Blocks
    with no earlier source (block 0) have no gain and no row."""
    gains = layer_gains(drift)
    return gains.groupby("layer")["gain"].apply(lambda x: float(np.exp(np.log(x).mean()))).rename("gain")


def absorption_coefficients(drift: pd.DataFrame, n_layers: int) -> pd.Series:
    """Per source block l, the mean attenuation per later block of its own perturbation,
    log(drift_l / drift_last) / (number of blocks after l), in nats per block (negative:
    the later blocks amplify it). Dividing by the number of later blocks keeps early blocks
    from scoring high merely for having more blocks after them. The last block has no later
    block: its coefficient is NaN. `drift` holds one perturbation per source."""
    out = {}
    for source, rows in drift.groupby("source"):
        if not isinstance(source, (int, float, np.integer, np.floating)):
            raise TypeError(f"drift sources must be block indices, got {source!r}")
        by_layer = rows.set_index("layer")["drift"]
        later = n_layers - 1 - source
        out[source] = float(np.log(by_layer[source] / by_layer[n_layers - 1]) / later) if later else float("nan")
    return pd.Series(out, name="absorption").rename_axis("layer")


def coefficient_intervals(
    by_sequence: pd.DataFrame, n_layers: int, n_resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Absorption coefficients with 95% bootstrap intervals over calibration sequences: the
    sequences are resampled with replacement (the same resample for every block) and the
    coefficients recomputed from the token-weighted drifts. One row per source block:
    coefficient, ci low, ci high. `by_sequence` is `trajectory_drift(..., by_sequence=True)`
    with one perturbation per source block."""
    drift = by_sequence.pivot_table(index="sequence", columns=["source", "layer"], values="drift")
    tokens = by_sequence.pivot_table(index="sequence", columns=["source", "layer"], values="tokens")
    weighted = (drift * tokens).to_numpy()
    token_counts = tokens.to_numpy()
    columns = drift.columns
    rng = np.random.default_rng(seed)
    n = len(drift)
    draws = [np.arange(n)] + [rng.integers(n, size=n) for _ in range(n_resamples)]
    coefficient_draws = []
    for idx in draws:
        mean = weighted[idx].sum(0) / token_counts[idx].sum(0)
        sources, layers = columns.get_level_values(0), columns.get_level_values(1)
        frame = pd.DataFrame({"source": sources, "layer": layers, "drift": mean})
        coefficient_draws.append(absorption_coefficients(frame, n_layers))
    point, boot = coefficient_draws[0], pd.concat(coefficient_draws[1:], axis=1)
    return pd.DataFrame(
        {
            "coefficient": point,
            "ci low": boot.quantile(0.025, axis=1),
            "ci high": boot.quantile(0.975, axis=1),
        }
    )
