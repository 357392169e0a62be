"""Streamed first and second moments of paired activations, and what they determine.

A linear fit, a canonical correlation analysis and a principal-component analysis need
only the means and (cross-)covariances of the vectors involved, never the vectors
themselves. `CrossMoments` accumulates those sums batch by batch in float64, so a fit over
millions of tokens holds (d + 1)^2 numbers per pair, not the activations: the same code
runs on the test bed and on a 7B model on one GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from . import devices
from .tokens import token_mask

RESOLUTION = 1e-10
"""Smallest share of a variable's mean square (or, after standardising, of its unit
variance) that the moments resolve. A variance is formed as E[x^2] - E[x]^2, and float64
sums over many batches lose around 1e-14 of the mean square to rounding; anything below
1e-10 of it is treated as zero."""


class DegenerateMomentsError(ValueError):
    """The moments do not determine what was asked of them: too few pairs, or a singular
    covariance that no ridge regularises."""


@dataclass
class CrossMoments:
    """Running sums over token pairs (x, y): the count, sum x, sum y, X^T X, X^T Y and,
    when asked for, Y^T Y."""

    n: int
    sum_x: torch.Tensor
    sum_y: torch.Tensor
    xx: torch.Tensor
    xy: torch.Tensor
    yy: torch.Tensor | None = None

    @classmethod
    def zeros(cls, dim_x: int, dim_y: int, device: torch.device | str = "cpu", with_yy: bool = False) -> CrossMoments:
        def z(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(0, z(dim_x), z(dim_y), z(dim_x, dim_x), z(dim_x, dim_y), z(dim_y, dim_y) if with_yy else None)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add the pairs in the rows of x (N, dim_x) and y (N, dim_y)."""
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"expected row-aligned matrices, got {tuple(x.shape)} and {tuple(y.shape)}")
        x, y = x.double(), y.double()
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        if self.yy is not None:
            self.yy += y.T @ y

    def _check(self) -> None:
        if self.n < 2:
            raise DegenerateMomentsError(f"moments of {self.n} pairs: at least 2 are needed")

    @property
    def mean_x(self) -> torch.Tensor:
        return self.sum_x / self.n

    @property
    def mean_y(self) -> torch.Tensor:
        return self.sum_y / self.n

    def cov_xx(self) -> torch.Tensor:
        self._check()
        return self.xx / self.n - torch.outer(self.mean_x, self.mean_x)

    def cov_xy(self) -> torch.Tensor:
        self._check()
        return self.xy / self.n - torch.outer(self.mean_x, self.mean_y)

    def cov_yy(self) -> torch.Tensor:
        self._check()
        if self.yy is None:
            raise ValueError("these moments were accumulated without Y^T Y (with_yy=False)")
        return self.yy / self.n - torch.outer(self.mean_y, self.mean_y)


@dataclass
class AffineMap:
    """y = x W + b, with W of shape (dim_x, dim_y)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.weight.dtype) @ self.weight + self.bias).to(x.dtype)

    @property
    def n_parameters(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def to(self, device, dtype=None) -> AffineMap:
        return AffineMap(self.weight.to(device, dtype), self.bias.to(device, dtype))


def varying(cov: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the variables that vary: a variance above `RESOLUTION` times the
    mean square. The test is relative, so it does not depend on a variable's scale; a
    variable that fails it is constant as far as the moments can tell."""
    variance = torch.diagonal(cov)
    return variance > RESOLUTION * (variance + mean.square())


def ridge_scale(cov: torch.Tensor, ridge: float) -> float:
    """The ridge penalty in absolute units: `ridge` times the mean variance, so that one
    relative setting suits residual streams of any scale."""
    return ridge * float(torch.trace(cov)) / len(cov)


def ridge_regression(m: CrossMoments, ridge: float = 1e-4) -> AffineMap:
    """The least-squares affine map from x to y with a ridge penalty (relative to the mean
    variance of x), solved in closed form from the moments: W = (C_xx + lambda I)^-1 C_xy,
    b = mean_y - mean_x W."""
    cov = m.cov_xx()
    penalty = ridge_scale(cov, ridge)
    eye = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    weight = torch.linalg.solve(cov + penalty * eye, m.cov_xy())
    return AffineMap(weight, m.mean_y - m.mean_x @ weight)


def reduced_rank(fit: AffineMap, m: CrossMoments, rank: int) -> AffineMap:
    """The best rank-`rank` version of a fitted map (reduced-rank regression): project the
    fitted values onto their top principal directions, V_r, so W_r = W V_r V_r^T and
    storage is rank * (dim_x + dim_y) + dim_y numbers."""
    if not 1 <= rank <= min(fit.weight.shape):
        raise ValueError(f"rank must lie in [1, {min(fit.weight.shape)}], got {rank}")
    fitted_cov = fit.weight.T @ m.cov_xx() @ fit.weight
    _, vectors = torch.linalg.eigh(fitted_cov)
    top = vectors[:, -rank:]
    weight = fit.weight @ top @ top.T
    return AffineMap(weight, m.mean_y - m.mean_x @ weight)


def low_rank_parameters(fit: AffineMap, rank: int) -> int:
    """Numbers stored by a rank-`rank` factorisation of the map plus its bias."""
    dim_x, dim_y = fit.weight.shape
    return rank * (dim_x + dim_y) + dim_y


def token_batches(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    batch_sequences: int = 16,
    progress: bool = False,
    desc: str = "batches",
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(token ids, mask of the positions whose activations count, attention mask) per batch
    of sequences, on the model's device, with the model in eval mode while iterating."""
    device = devices.input_device(model)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(ids), batch_sequences)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
            chunk = ids[start : start + batch_sequences].to(device)
            attention = None if pad_token_id is None else (chunk != pad_token_id).long()
            yield chunk, token_mask(chunk, pad_token_id), attention
    finally:
        model.train(was_training)
