"""SparseGPT and GPTQ: one linear layer compressed column by column, each column's error
spread over the columns not yet compressed, so that the layer's output on the calibration
inputs changes as little as possible.

Both minimise ||W X - W' X||^2 over the calibration inputs X (tokens as columns), whose
Hessian is H = X X^T (`gram`). Removing or rounding weight q of a row changes it by e_q, and
the Optimal Brain Surgeon update that best compensates on the remaining weights is
delta = -(e_q / [H^-1]_qq) [H^-1]_q,: . Processing the columns left to right, the inverse
Hessians of the remaining columns are the rows of the upper Cholesky factor of H^-1
(Frantar et al. 2023), so one factorisation serves the whole layer. Both algorithms follow
their references (IST-DASLab/sparsegpt `SparseGPT.fasterprune`, IST-DASLab/gptq
`GPTQ.fasterquant`) and their defaults:

- dampening: 1% of the mean diagonal of H added to the diagonal; columns whose input is
  always zero ("dead") get H_qq = 1 and weight 0;
- blocks of 128 columns: updates inside a block are applied column by column, the block's
  accumulated error is propagated to the later columns once, at its end (the "lazy batch"
  update). The weights come out as if every column's error were spread at once, except
  where a decision is taken at a block's start from weights not yet updated by the block:
  SparseGPT's mask, and a GPTQ group that starts inside a block;
- SparseGPT (unstructured) chooses the mask at the start of each block, from the weights as
  updated so far, over the whole block (rows x 128 columns): the lowest share of the OBS
  saliency w^2 / [H^-1]_qq, H^-1 being that of the columns not yet processed (the squared
  diagonal of the Cholesky factor; exactly floor(share x size) weights, where the
  reference's threshold takes one more); N:M masks are chosen per row, on each group of M
  columns as the group is reached;
- GPTQ fixes each group's quantization grid when the group's first column is reached, from
  the group's weights as updated by the earlier blocks (the reference's choice). The grid is
  this book's round-to-nearest grid (`quantization.group_grid`: asymmetric min-max per
  group), so GPTQ and round-to-nearest differ only by the error feedback. (The reference's
  grid also stretches each range to include zero; ours does not, for both methods.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .quantization import group_grid, on_grid

BLOCK_SIZE = 128
DAMPING = 0.01


class HessianError(ValueError):
    """A Hessian that does not fit the weight, or cannot be factorised even when damped."""


def _prepared(weight: torch.Tensor, hessian: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight in float64 with dead columns zeroed, and the upper Cholesky factor of the
    inverse of the damped Hessian."""
    columns = weight.shape[1]
    if hessian.shape != (columns, columns):
        raise HessianError(f"a Hessian of shape {tuple(hessian.shape)} for a weight with {columns} input columns")
    if not damping >= 0:
        raise HessianError(f"damping must be non-negative, got {damping}")
    w = weight.detach().double().clone(memory_format=torch.contiguous_format)  # GPT-2 weights are transposed views
    h = hessian.detach().double().to(w.device).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * torch.mean(torch.diag(h)) * torch.eye(columns, dtype=h.dtype, device=h.device)
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return w, torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as exc:
        raise HessianError(f"the damped Hessian is not positive definite (damping {damping}): {exc}") from exc


def _column_by_column(
    w: torch.Tensor,
    hinv: torch.Tensor,
    block_size: int,
    compressed_column: Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The loop both algorithms share: column `start + i` of `w` is replaced by
    `compressed_column(start, i, block, h_block)` (the block's columns as updated so far and
    the block's part of the Cholesky factor), and its error is spread over the columns after
    it: inside the block at once, beyond it when the block ends. Updates `w` in place."""
    columns = w.shape[1]
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        h_block = hinv[start:end, start:end]
        for i in range(end - start):
            new = compressed_column(start, i, block, h_block)
            error = (block[:, i] - new) / h_block[i, i]
            block[:, i:] -= error[:, None] * h_block[i, i:][None, :]
            block[:, i] = new
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float = 0.0,
    n_of_m: tuple[int, int] | None = None,
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on an (out, in) weight: the pruned and updated weight (in the weight's
    dtype) and its mask (True where removed). Unstructured at `sparsity` (a share of each
    block of columns), or N:M with `n_of_m` = (n, m)."""
    if n_of_m is None and not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    if n_of_m is not None and (not 0 < n_of_m[0] < n_of_m[1] or block_size % n_of_m[1] or weight.shape[1] % n_of_m[1]):
        raise ValueError(
            f"an N:M pattern needs 0 < n < m with m dividing the block size and the row length "
            f"{weight.shape[1]}, got {n_of_m}"
        )
    w, hinv = _prepared(weight, hessian, damping)
    mask = torch.zeros_like(w, dtype=torch.bool)

    def pruned_column(start: int, i: int, block: torch.Tensor, h_block: torch.Tensor) -> torch.Tensor:
        block_mask = mask[:, start : start + block.shape[1]]
        saliency_scale = torch.diag(h_block)[None, :] ** 2
        if i == 0 and n_of_m is None and sparsity > 0:  # the block's mask, from its weights as updated so far
            saliency = (block**2 / saliency_scale).flatten()
            lowest = torch.sort(saliency, stable=True).indices[: int(saliency.numel() * sparsity)]
            block_mask[lowest // block.shape[1], lowest % block.shape[1]] = True
        if n_of_m is not None and i % n_of_m[1] == 0:
            n, m = n_of_m
            group = block[:, i : i + m] ** 2 / saliency_scale[:, i : i + m]
            block_mask[:, i : i + m].scatter_(1, torch.topk(group, n, dim=1, largest=False).indices, True)
        return block[:, i].masked_fill(block_mask[:, i], 0.0)

    w = _column_by_column(w, hinv, block_size, pruned_column)
    return w.to(weight.dtype), mask


def gptq(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    levels: int,
    group_size: int,
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> torch.Tensor:
    """GPTQ on an (out, in) weight: the dequantized weight (in the weight's dtype), every
    group of `group_size` consecutive input weights of a row on its own grid of `levels`
    levels (2^bits)."""
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    w, hinv = _prepared(weight, hessian, damping)
    grid: dict[str, torch.Tensor] = {}

    def rounded_column(start: int, i: int, block: torch.Tensor, h_block: torch.Tensor) -> torch.Tensor:
        column = start + i
        if column % group_size == 0:
            # the reference reads the group from W, which holds the earlier blocks' updates
            grid["low"], grid["step"] = group_grid(w[:, column : column + group_size], levels)
        return on_grid(block[:, i : i + 1], grid["low"], grid["step"], levels)[:, 0].double()

    return _column_by_column(w, hinv, block_size, rounded_column).to(weight.dtype)
