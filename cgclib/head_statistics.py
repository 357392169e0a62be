"""First and second moments of every head's output, and how many directions a head uses.

One streamed pass over calibration tokens accumulates, per head, the sum of its outputs z
(the head's slice of the input of the attention output projection) and of z z^T, in
float64 on the device of the model's inputs; no activation is stored. The means are what
mean ablation (`hooks.ablated_heads`) replaces a head's output with; the covariance
spectrum says how many dimensions of its head_dim a head actually spreads its output over,
a measure that needs no sparse autoencoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from . import components, devices
from .hooks import head_outputs, stopped_after
from .moments import token_batches


@dataclass
class HeadMoments:
    """Mean (n_layers, n_heads, head_dim) and covariance (n_layers, n_heads, head_dim,
    head_dim) of every head's output over `n` calibration tokens (float64; the covariance
    divides by n, as in `cgclib.moments`)."""

    n: int
    mean: torch.Tensor
    cov: torch.Tensor

    def means(self) -> dict[tuple[int, int], torch.Tensor]:
        """The mean output of each head (layer, head), as `hooks.ablated_heads` takes it."""
        n_layers, n_heads = self.mean.shape[:2]
        return {(l, h): self.mean[l, h] for l in range(n_layers) for h in range(n_heads)}

    def eigenvalues(self) -> torch.Tensor:
        """(n_layers, n_heads, head_dim) eigenvalues of each covariance, ascending; the
        slightly negative ones that rounding leaves of a singular covariance are set to 0."""
        return torch.linalg.eigvalsh(self.cov).clamp(min=0)

    def participation_ratio(self) -> pd.Series:
        """(sum of eigenvalues)^2 / sum of squared eigenvalues per head: its effective
        number of output dimensions, from 1 (one direction) to head_dim (isotropic). NaN
        for a head whose output is constant."""
        eig = self.eigenvalues()
        return self._series(eig.sum(-1).square() / eig.square().sum(-1), "participation_ratio")

    def effective_rank(self) -> pd.Series:
        """exp of the entropy of the eigenvalues normalised to sum to 1 (Roy & Vetterli
        2007) per head: like the participation ratio, from 1 to head_dim, but weighting
        small eigenvalues more. NaN for a head whose output is constant."""
        eig = self.eigenvalues()
        p = eig / eig.sum(-1, keepdim=True)
        entropy = -torch.special.xlogy(p, p).sum(-1)
        return self._series(entropy.exp(), "effective_rank")

    def _series(self, values: torch.Tensor, name: str) -> pd.Series:
        n_layers, n_heads = values.shape
        index = pd.MultiIndex.from_product([range(n_layers), range(n_heads)], names=["layer", "head"])
        return pd.Series(values.cpu().reshape(-1).numpy(), index=index, name=name)


def head_output_moments(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    batch_sequences: int = 16,
    progress: bool = False,
) -> HeadMoments:
    """Mean and covariance of every head's output over the calibration sequences `ids`
    (padding and the first position left out, `tokens.token_mask`). The forward pass stops
    after the last block: nothing past it is needed."""
    lay = components.layout(model)
    device = devices.input_device(model)
    shape = (lay.n_layers, lay.n_heads, lay.head_dim)
    sums = torch.zeros(shape, dtype=torch.float64, device=device)
    products = torch.zeros(*shape, lay.head_dim, dtype=torch.float64, device=device)
    current: dict[str, torch.Tensor] = {}
    n = 0

    def grab(layer: int, z: torch.Tensor) -> None:
        z = z[current["mask"]].double()  # (tokens, heads, head_dim)
        sums[layer] += z.sum(0)
        products[layer] += torch.einsum("thi,thj->hij", z, z)

    with torch.no_grad(), head_outputs(model, grab), stopped_after(model, lay.n_layers - 1) as forward:
        for chunk, mask, attention in token_batches(
            model, ids, pad_token_id, batch_sequences, progress, "head moments"
        ):
            current["mask"] = mask
            n += int(mask.sum())
            forward(input_ids=chunk, attention_mask=attention)
    if n < 2:
        raise ValueError(f"head output moments of {n} tokens: at least 2 are needed")
    mean = sums / n
    cov = products / n - mean[..., :, None] * mean[..., None, :]
    return HeadMoments(n, mean, cov)
