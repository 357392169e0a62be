"""Weight quantization at a fixed bit budget: direct, or after factoring the weight.

`quantize_groups` is round-to-nearest with an asymmetric min-max grid (`group_grid`) per group
of `group_size` consecutive input weights of each output row (the usual INT4 / INT3 scheme),
storing a 16-bit scale and a 16-bit offset per group. A `Scheme` spends the budget of
direct quantization at `bits` in one of three ways:

- ``direct``: the weight itself, quantized at `bits`;
- ``svd``: the weight's truncated SVD W ~ A B with A = U sqrt(S), B = sqrt(S) V^T, both
  factors quantized at `bits`, with the largest rank the budget allows;
- ``lowrank_residual``: 8-bit factors of a low-rank part plus the residual W - A B quantized
  at `bits` - 1; the bit freed on the residual pays for the factors.

Every scheme's storage is counted and never exceeds the direct scheme's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from . import components, devices
from .hooks import linear_inputs
from .moments import token_batches

SCALE_BITS = 16
FACTOR_BITS = 8
SchemeKind = Literal["direct", "svd", "lowrank_residual"]
KINDS: tuple[SchemeKind, ...] = get_args(SchemeKind)


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in [1, 8], got {bits!r}")
    return bits


def group_grid(
    groups: torch.Tensor, levels: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The min-max grid of each group (the last dimension of `groups`, entries where `valid`
    is False left out): its lowest level and its step, `levels` levels spanning [min, max]
    (2^bits for a whole number of bits; 3 levels is the ternary grid of 1.58 bits)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 2**8:
        raise ValueError(f"a grid needs between 2 and 256 levels, got {levels!r}")
    groups = groups.float()
    if valid is None:
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    else:
        low = groups.masked_fill(~valid, float("inf")).amin(-1, keepdim=True)
        high = groups.masked_fill(~valid, float("-inf")).amax(-1, keepdim=True)
    step = ((high - low) / (levels - 1)).clamp(min=torch.finfo(torch.float32).tiny)
    return low, step


def on_grid(x: torch.Tensor, low: torch.Tensor, step: torch.Tensor, levels: int) -> torch.Tensor:
    """Round `x` to the nearest level of the grid (`group_grid`), clamped to its range."""
    return low + torch.round((x.float() - low) / step).clamp(0, levels - 1) * step


def quantize_groups(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Round-to-nearest onto 2^bits levels spanning each group's [min, max]; returns the
    dequantized (out, in) matrix. The last group of a row may be shorter."""
    return round_to_levels(w, 2 ** _check_bits(bits), group_size)


def round_to_levels(w: torch.Tensor, levels: int, group_size: int) -> torch.Tensor:
    """`quantize_groups` with any number of levels per group (`group_grid`)."""
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    out_features, in_features = w.shape
    pad = (-in_features) % group_size
    x = torch.nn.functional.pad(w.float(), (0, pad))
    groups = x.view(out_features, -1, group_size)
    valid = torch.nn.functional.pad(torch.ones_like(w, dtype=torch.bool), (0, pad)).view_as(groups)
    low, step = group_grid(groups, levels, valid)
    return on_grid(groups, low, step, levels).view(out_features, -1)[:, :in_features].to(w.dtype)


def storage_bits(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """Bits to store an (out, in) matrix quantized at `bits` with a scale and an offset per group."""
    groups = out_features * -(-in_features // group_size)
    return out_features * in_features * bits + groups * 2 * SCALE_BITS


@dataclass(frozen=True)
class Scheme:
    kind: SchemeKind
    bits: int
    group_size: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown scheme {self.kind!r}; choose from {KINDS}")
        _check_bits(self.bits)

    @property
    def name(self) -> str:
        return f"{self.kind} INT{self.bits}"


@dataclass(frozen=True)
class Compressed:
    weight: torch.Tensor  # the reconstructed (out, in) matrix
    bits: int  # storage used
    rank: int  # rank of the factored part (0 for direct)


def _factors(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def _factor_bits(out_features: int, in_features: int, rank: int, bits: int, group_size: int) -> int:
    return storage_bits(out_features, rank, bits, group_size) + storage_bits(rank, in_features, bits, group_size)


def _largest_rank(out_features: int, in_features: int, budget: int, bits: int, group_size: int) -> int:
    rank = 0
    while (
        rank < min(out_features, in_features)
        and _factor_bits(out_features, in_features, rank + 1, bits, group_size) <= budget
    ):
        rank += 1
    return rank


def compress(w: torch.Tensor, scheme: Scheme) -> Compressed:
    """The weight as `scheme` stores it, within the direct scheme's bit budget."""
    out_features, in_features = w.shape
    g = scheme.group_size
    budget = storage_bits(out_features, in_features, scheme.bits, g)
    if scheme.kind == "direct":
        return Compressed(quantize_groups(w, scheme.bits, g), budget, 0)
    if scheme.kind == "svd":
        rank = _largest_rank(out_features, in_features, budget, scheme.bits, g)
        if rank == 0:
            raise ValueError(f"a {out_features}x{in_features} weight cannot hold rank-1 factors within {budget} bits")
        a, b = _factors(w, rank)
        approx = quantize_groups(a, scheme.bits, g) @ quantize_groups(b, scheme.bits, g)
        return Compressed(approx.to(w.dtype), _factor_bits(out_features, in_features, rank, scheme.bits, g), rank)
    residual_bits = storage_bits(out_features, in_features, scheme.bits - 1, g)
    rank = _largest_rank(out_features, in_features, budget - residual_bits, FACTOR_BITS, g)
    a, b = _factors(w, rank) if rank else (w.new_zeros(out_features, 0).float(), w.new_zeros(0, in_features).float())
    low = (
        quantize_groups(a, FACTOR_BITS, g) @ quantize_groups(b, FACTOR_BITS, g)
        if rank
        else torch.zeros_like(w, dtype=torch.float32)
    )
    approx = low + quantize_groups(w.float() - low, scheme.bits - 1, g)
    used = residual_bits + (_factor_bits(out_features, in_features, rank, FACTOR_BITS, g) if rank else 0)
    return Compressed(approx.to(w.dtype), used, rank)


@torch.no_grad()
def input_second_moments(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    modules: Mapping[str, torch.nn.Module],
    batch_sequences: int = 16,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """X^T X / n over calibration tokens for the input of each module: what turns a weight
    error E into the expected output error, E[||E x||^2] = trace(E M E^T)."""
    device = devices.input_device(model)
    acc = {
        name: torch.zeros(components.in_features(m), components.in_features(m), dtype=torch.float64, device=device)
        for name, m in modules.items()
    }
    count = [0]
    state: dict[str, torch.Tensor] = {}

    def grab(name, x):
        rows = x[state["mask"]].double()
        acc[name] += rows.T @ rows

    with linear_inputs(model, modules, grab):
        for chunk, mask, attention in token_batches(
            model, ids, pad_token_id, batch_sequences, progress, "input moments"
        ):
            state["mask"] = mask
            count[0] += int(mask.sum())
            model(input_ids=chunk, attention_mask=attention)
    return {name: m / count[0] for name, m in acc.items()}


def relative_output_error(w: torch.Tensor, approx: torch.Tensor, second_moment: torch.Tensor) -> float:
    """sqrt(E||(W_hat - W) x||^2 / E||W x||^2) over the calibration inputs x."""
    w, e = w.double(), approx.double() - w.double()
    m = second_moment.to(w.device)
    return float(torch.sqrt(torch.trace(e @ m @ e.T) / torch.trace(w @ m @ w.T)))
