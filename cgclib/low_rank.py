"""Low-rank compression of a weight: truncated SVD, plain or activation-aware.

Algebraic redundancy (Ma et al. 2026) is removed by keeping fewer singular directions of
each weight; the compression ratio is the share of the rank removed. Plain truncation keeps
the directions of largest singular value, which is optimal for the weight in Frobenius
norm but blind to the inputs: a direction of W that only ever meets small inputs costs
little to drop. ASVD (Yuan et al. 2023) scales the input columns first, S = diag(s_j) with
s_j = (mean over calibration tokens of |x_j|)^alpha, truncates W S, and maps back with S^-1,
so that input channels that carry large activations are kept more faithfully. Its
reference (hahnyuan/ASVD4LLM) uses the absolute mean and alpha = 0.5 on its command line;
we do the same.
"""

from __future__ import annotations

import torch

ASVD_ALPHA = 0.5


def kept_rank(shape: tuple[int, ...], rank_removed: float) -> int:
    """The rank kept when the share `rank_removed` of the full rank min(out, in) goes."""
    if not 0 <= rank_removed < 1:
        raise ValueError(f"the share of rank removed must lie in [0, 1), got {rank_removed!r}")
    full = min(shape)
    return full - int(round(rank_removed * full))


def truncated(weight: torch.Tensor, rank_removed: float) -> torch.Tensor:
    """The best approximation of `weight` in Frobenius norm with the share `rank_removed` of
    its rank gone (Eckart-Young)."""
    rank = kept_rank(tuple(weight.shape), rank_removed)
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(weight.dtype)


def activation_scales(abs_means: torch.Tensor, alpha: float = ASVD_ALPHA) -> torch.Tensor:
    """ASVD's input scaling from the mean absolute value of each input feature; features that
    never fire get the smallest positive scale instead of zero, so that S stays invertible."""
    scales = abs_means.detach().double().clamp(min=0) ** alpha
    positive = scales[scales > 0]
    floor = positive.min() if positive.numel() else torch.tensor(1.0, dtype=scales.dtype)
    return torch.where(scales > 0, scales, floor)


def activation_aware(weight: torch.Tensor, scales: torch.Tensor, rank_removed: float) -> torch.Tensor:
    """ASVD: truncate W diag(scales), then undo the scaling of the input columns."""
    if scales.shape != (weight.shape[1],):
        raise ValueError(f"{weight.shape[1]} input columns need as many scales, got shape {tuple(scales.shape)}")
    scales = scales.to(weight.device, torch.float64)
    return (truncated(weight.detach().double() * scales[None, :], rank_removed) / scales[None, :]).to(weight.dtype)
