"""Low-rank compression of a weight: truncated SVD, plain or activation-aware.

Algebraic redundancy (Ma et al. 2026) is removed by keeping fewer singular directions of
each weight. A rank-k weight is stored as two factors, out x k and k x in, so the
compression ratio is the share of the dense weight's parameters the factors save,
s = 1 - k (out + in) / (out in), as SVD-LLM and ASVD count it: below half the rank of a
square matrix nothing is saved at all. Plain truncation keeps
the directions of largest singular value, which is optimal for the weight in Frobenius
norm but blind to the inputs: a direction of W that only ever meets small inputs costs
little to drop. ASVD (Yuan et al. 2023) scales the input columns first, S = diag(s_j) with
s_j the mean absolute value of input feature x_j over the calibration tokens, to the power
alpha; it truncates W S and maps back with S^-1,
so that input channels that carry large activations are kept more faithfully. Its
reference (hahnyuan/ASVD4LLM) uses the absolute mean and alpha = 0.5 on its command line;
we do the same, with one compression ratio for every layer (the paper also allocates ranks
by each layer's sensitivity, which we leave out).
"""

from __future__ import annotations

import math

import torch

ASVD_ALPHA = 0.5


def kept_rank(shape: tuple[int, ...], params_removed: float) -> int:
    """The largest rank k whose factors store at most the share 1 - `params_removed` of the
    dense weight's parameters: k (out + in) <= (1 - s) out in, and at least 1."""
    if not 0 <= params_removed < 1:
        raise ValueError(f"the share of parameters removed must lie in [0, 1), got {params_removed!r}")
    out_features, in_features = shape
    budget = (1 - params_removed) * out_features * in_features / (out_features + in_features)
    return max(1, min(math.floor(budget + 1e-9), min(shape)))


def truncated(weight: torch.Tensor, params_removed: float) -> torch.Tensor:
    """The best approximation of `weight` in Frobenius norm (Eckart-Young) whose factors save
    the share `params_removed` of its parameters (`kept_rank`)."""
    rank = kept_rank(tuple(weight.shape), params_removed)
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(weight.dtype)


def activation_scales(abs_means: torch.Tensor, alpha: float = ASVD_ALPHA) -> torch.Tensor:
    """ASVD's input scaling from the mean absolute value of each input feature; features that
    never fire get the smallest positive scale instead of zero, so that S stays invertible."""
    scales = abs_means.detach().double().clamp(min=0) ** alpha
    positive = scales[scales > 0]
    floor = positive.min() if positive.numel() else torch.tensor(1.0, dtype=scales.dtype)
    return torch.where(scales > 0, scales, floor)


def activation_aware(weight: torch.Tensor, scales: torch.Tensor, params_removed: float) -> torch.Tensor:
    """ASVD: truncate W diag(scales), then undo the scaling of the input columns."""
    if scales.shape != (weight.shape[1],):
        raise ValueError(f"{weight.shape[1]} input columns need as many scales, got shape {tuple(scales.shape)}")
    scales = scales.to(weight.device, torch.float64)
    scaled = weight.detach().double() * scales[None, :]
    return (truncated(scaled, params_removed) / scales[None, :]).to(weight.dtype)
