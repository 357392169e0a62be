"""How linear is a transformer block, and what happens when it is replaced by a linear map.

A block adds an update u = f(x) to its input x: y = x + u. We fit u by an affine map of x
(closed-form ridge regression on streamed moments, `cgclib.moments`), so the fitted block is
y_hat = x + x W + b. Its quality on held-out tokens is reported two ways:

- R^2 of the output, 1 - sum ||y - y_hat||^2 / sum ||y - mean y||^2 (pooled over all
  dimensions), which is what a "block is linear" claim is about; the identity part of the
  residual connection is in it, so it is high even for a block that does little;
- R^2 of the update, the same error over sum ||u - mean u||^2: how much of what the block
  *adds* the map explains. This is the harder number.

Held-out statistics are kept per sequence, so intervals come from resampling sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from . import components, devices
from .hooks import replace_block_output, residual_stream
from .moments import AffineMap, CrossMoments, ridge_regression, token_batches

R2Target = Literal["output", "update"]
"""What an R^2 is of: the block's output y, or its update u = y - x (see the module docstring)."""


@contextmanager
def replaced_blocks(model: nn.Module, maps: Mapping[int, AffineMap]) -> Iterator[None]:
    """Blocks in `maps` output x + map(x) instead of their own output (which is ignored)."""
    with ExitStack() as stack:
        for layer, fit in maps.items():
            moved = fit.to(devices.input_device(model))

            def fitted(x: torch.Tensor, y: torch.Tensor, fit: AffineMap = moved) -> torch.Tensor:
                return x + fit(x)

            stack.enter_context(replace_block_output(model, layer, fitted))
        yield


@torch.no_grad()
def block_moments(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    layers: list[int] | None = None,
    upstream: Mapping[int, AffineMap] | None = None,
    batch_sequences: int = 16,
    progress: bool = False,
) -> dict[int, CrossMoments]:
    """Moments of (block input, block update) for each layer over the tokens of `ids`,
    with the blocks in `upstream` replaced by their maps (to shift the distribution)."""
    n_layers = components.layout(model).n_layers
    layers = list(range(n_layers)) if layers is None else [components.check_layer(model, l) for l in layers]
    d = components.layout(model).d_model
    device = devices.input_device(model)
    moments = {l: CrossMoments.zeros(d, d, device) for l in layers}
    inputs: dict[int, torch.Tensor] = {}
    mask = None

    def grab(layer, where, h):
        if where == "in":
            inputs[layer] = h
        else:
            x = inputs.pop(layer)
            moments[layer].update(x[mask], (h - x)[mask])

    with replaced_blocks(model, upstream or {}), residual_stream(model, grab, layers):
        for chunk, mask, attention in token_batches(  # noqa: B007 (grab reads mask)
            model, ids, pad_token_id, batch_sequences, progress, "block moments"
        ):
            model(input_ids=chunk, attention_mask=attention)
    return moments


def fit_block_maps(moments: Mapping[int, CrossMoments], ridge: float = 1e-4) -> dict[int, AffineMap]:
    """The ridge fit of each block's update on its input."""
    return {layer: ridge_regression(m, ridge) for layer, m in moments.items()}


@dataclass
class FitStats:
    """Per held-out sequence: squared error of the fitted block, and the sums that give the
    total variance of the output y and of the update u."""

    sse: np.ndarray  # (S,)
    sum_y: np.ndarray  # (S, d)
    sq_y: np.ndarray  # (S,)
    sum_u: np.ndarray  # (S, d)
    sq_u: np.ndarray  # (S,)
    n: np.ndarray  # (S,) tokens

    def r2(self, target: R2Target = "output", index: np.ndarray | None = None) -> float:
        """Pooled R^2 of the output ('output') or of the update ('update') over the
        sequences in `index` (all by default; repeated indices for a bootstrap resample)."""
        if target not in ("output", "update"):
            raise ValueError(f"target must be 'output' or 'update', got {target!r}")
        idx = slice(None) if index is None else index
        sums, squares = (self.sum_y, self.sq_y) if target == "output" else (self.sum_u, self.sq_u)
        n = self.n[idx].sum()
        total = squares[idx].sum() - np.square(sums[idx].sum(0)).sum() / n
        return float(1 - self.sse[idx].sum() / total)

    def r2_interval(self, target: R2Target = "output", n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
        """95% percentile-bootstrap interval of R^2 over held-out sequences."""
        return sequence_bootstrap(lambda index: self.r2(target, index), len(self.sse), n_resamples, seed)

    @property
    def relative_error(self) -> float:
        """sqrt(sum ||y - y_hat||^2 / sum ||y||^2): the replacement error of the output."""
        return float(np.sqrt(self.sse.sum() / self.sq_y.sum()))


def identity_r2(stats: FitStats, index: np.ndarray | None = None) -> float:
    """Output R^2 of the block replaced by the identity plus its mean update (y_hat = x +
    mean u): what the residual path alone gives the output R^2, with no fit at all. The
    two R^2 of a fit are tied by 1 - R^2_out = (1 - R^2_upd) (1 - identity_r2), so an
    output R^2 near 1 says little about the update when this is near 1 too."""
    idx = slice(None) if index is None else index
    n = stats.n[idx].sum()
    total_u = stats.sq_u[idx].sum() - np.square(stats.sum_u[idx].sum(0)).sum() / n
    total_y = stats.sq_y[idx].sum() - np.square(stats.sum_y[idx].sum(0)).sum() / n
    return float(1 - total_u / total_y)


def sequence_bootstrap(
    statistic: Callable[[np.ndarray], float], n_sequences: int, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of `statistic(index)` over resamples of the held-out
    sequences; statistics of several blocks computed on the same sequences share each
    resample, so differences between them are paired."""
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n_sequences, n_sequences)) for _ in range(n_resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


@torch.no_grad()
def heldout_fit(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    maps: Mapping[int, AffineMap],
    upstream: Mapping[int, AffineMap] | None = None,
    batch_sequences: int = 16,
    progress: bool = False,
) -> dict[int, FitStats]:
    """How well each map in `maps` predicts its block on the tokens of `ids`, with the
    blocks in `upstream` replaced (the distribution the maps now see)."""
    device = devices.input_device(model)
    maps = {l: fit.to(device) for l, fit in maps.items()}
    rows: dict[int, list[list[torch.Tensor]]] = {l: [] for l in maps}
    inputs: dict[int, torch.Tensor] = {}
    mask: torch.Tensor | None = None

    def grab(layer, where, h):
        if where == "in":
            inputs[layer] = h
            return
        if mask is None:
            raise RuntimeError("heldout_fit: a block ran outside the calibration batches (no token mask)")
        x = inputs.pop(layer).double()
        y = h.double()
        u = y - x
        w = mask.unsqueeze(-1).double()
        err = (u - maps[layer](x)) * w
        rows[layer].append(
            [
                err.square().sum((1, 2)),
                (y * w).sum(1),
                (y.square() * w).sum((1, 2)),
                (u * w).sum(1),
                (u.square() * w).sum((1, 2)),
                mask.sum(1).double(),
            ]
        )

    with replaced_blocks(model, upstream or {}), residual_stream(model, grab, list(maps)):
        for chunk, mask, attention in token_batches(  # noqa: B007 (grab reads mask)
            model, ids, pad_token_id, batch_sequences, progress, "held-out fit"
        ):
            model(input_ids=chunk, attention_mask=attention)
    out = {}
    for layer, parts in rows.items():
        cols = [torch.cat(c).cpu().numpy() for c in zip(*parts, strict=True)]
        out[layer] = FitStats(*cols)
    return out


def block_parameters(model: nn.Module, layer: int) -> int:
    """Parameters of block `layer` (its weights, biases and norms)."""
    return sum(p.numel() for p in components.block(model, layer).parameters())
