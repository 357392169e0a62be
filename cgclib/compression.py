"""Compression operators applied to a whole model, and their curves: every block's linear
layers compressed at one level, the model evaluated, over a grid of levels.

Ma et al. (2026) sort compression by the redundancy it removes: structural (pruning),
numerical (quantization) and algebraic (low rank). One operator per standard method:

========================  ===========================  ====================================
operator                  level                        what each block loses
========================  ===========================  ====================================
magnitude                 sparsity                     lowest abs(W) of each layer
wanda                     sparsity                     lowest abs(W_ij) norm(X_j) of a row
sparsegpt                 sparsity                     second-order pruning (`second_order`)
wanda_2:4, sparsegpt_2:4  sparsity 0.5                 2 of every 4 consecutive weights
structured                share of heads and channels  whole heads and MLP channels
rtn                       bits                         round-to-nearest, groups of weights
gptq                      bits                         rounding with error feedback
svd                       share of parameters removed  smallest singular directions
asvd                      share of parameters removed  the same, after input scaling
========================  ===========================  ====================================

The compression ratio s that a phase-transition fit reads is the level itself, except for
quantization, where it is the share of a 16-bit weight's storage removed, 1 - bits / 16
(group scales not counted), so that 8 bits is s = 0.5 and 2 bits s = 0.875. Bits are
log2 of the number of grid levels, so grids of 3, 5 or 6 levels (1.58, 2.32, 2.58 bits,
as ternary weights are counted) fill the range between whole bits where models collapse.

Operators that read calibration inputs compress the blocks in order, each on the inputs
the already compressed blocks produce, as the references of Wanda, SparseGPT and GPTQ do
(ASVD's reference calibrates once on the dense model; we calibrate it like the others);
within a block every layer's statistics come from one pass over the block's inputs. Every
token counts, position 0 included (as in those references), padding never. A low-rank
weight is kept as the product of its factors, evaluated densely; its ratio is the share of
parameters the factors would save (`low_rank`).

Structured pruning scores a head by the Wanda scores of its columns of the attention output
projection, averaged over output rows and summed over the head's columns (the "Wanda-sp"
convention), and an MLP channel by the same score of its column of the MLP output
projection; each block loses the same share of its heads and of its channels (rounded to
whole ones). A removed head or channel is zeroed in every weight it owns (its rows of the
query, key, value or input projections, its columns of the output projection). Under
grouped-query attention a head's key and value rows are shared with its group and stay, so
the share of attention parameters removed is smaller than the share of heads.

A curve is read by the detector of `cgclib.phase` (`critical_ratio`), with one addition: a
metric that never rises by `MIN_RISE` over the dense model is *flat*, and its critical
ratio is censored beyond the grid, in (largest ratio, 1), rather than left unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from tqdm.auto import tqdm

from . import components, devices, low_rank, phase, second_order
from .evaluation import EvaluationData, Profile, evaluate
from .hooks import linear_inputs, stopped_after
from .pruning import block_linear_layers, check_sparsity, layer_mask, n_of_m_mask, row_mask, wanda_scores
from .quantization import round_to_levels
from .tokens import token_mask

DENSE_BITS = 16  # the storage a quantized weight is compared with
MIN_RISE = 0.05  # a curve that never rises by this share over the dense model is flat


@dataclass
class InputStatistics:
    """Streamed statistics of one linear layer's input over the calibration tokens."""

    tokens: int = 0
    square_sums: torch.Tensor | None = None  # sum of x_j^2
    abs_sums: torch.Tensor | None = None  # sum of |x_j|
    gram: torch.Tensor | None = None  # sum of x x^T

    def add(self, x: torch.Tensor, kinds: frozenset[str]) -> None:
        x = x.double()
        self.tokens += x.shape[0]
        if "square" in kinds:
            s = x.pow(2).sum(0)
            self.square_sums = s if self.square_sums is None else self.square_sums + s
        if "abs" in kinds:
            a = x.abs().sum(0)
            self.abs_sums = a if self.abs_sums is None else self.abs_sums + a
        if "gram" in kinds:
            g = x.T @ x
            self.gram = g if self.gram is None else self.gram + g


@torch.no_grad()
def block_input_statistics(
    model: nn.Module,
    ids: torch.Tensor,
    pad_token_id: int | None,
    layer: int,
    kinds: frozenset[str],
    batch_sequences: int = 16,
) -> dict[str, InputStatistics]:
    """The `kinds` of statistics ("square", "abs", "gram") of the input of every linear layer
    of block `layer`, over every real token of the calibration sequences `ids`; the forward
    passes stop after that block."""
    unknown = kinds - {"square", "abs", "gram"}
    if unknown:
        raise ValueError(f"unknown input statistics {sorted(unknown)}")
    modules = block_linear_layers(model, layer)
    stats = {name: InputStatistics() for name in modules}
    device = devices.input_device(model)
    was_training = model.training
    model.eval()
    try:
        with stopped_after(model, layer) as forward:
            for start in range(0, len(ids), batch_sequences):
                chunk = ids[start : start + batch_sequences].to(device)
                mask = token_mask(chunk, pad_token_id, first_token=True)

                def grab(name, x, mask=mask):
                    stats[name].add(x[mask], kinds)

                attention = None if pad_token_id is None else (chunk != pad_token_id).long()
                with linear_inputs(model, modules, grab):
                    forward(input_ids=chunk, attention_mask=attention)
    finally:
        model.train(was_training)
    return stats


# --- the operators -------------------------------------------------------------------------

Weights = dict[str, torch.Tensor]  # new (out, in) weights by linear-layer name


@dataclass(frozen=True)
class Setting:
    """What one compression run is: an operator at a level, with the options some read."""

    level: float
    group_size: int = 64  # quantization: consecutive input weights that share a grid


def _statistic(stats: Mapping[str, InputStatistics], name: str, kind: str) -> torch.Tensor:
    """One statistic of layer `name`'s input ("square_sums", "abs_sums" or "gram")."""
    value = getattr(stats[name], kind) if name in stats else None
    if value is None:
        raise ValueError(f"no {kind} were collected for the input of {name}")
    return value


def _unstructured(
    score: Callable[[torch.Tensor, Mapping[str, InputStatistics], str], torch.Tensor], mask_of
) -> Callable:
    def compress(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
        out = {}
        for name, module in block_linear_layers(model, layer).items():
            w = components.weight(module).detach()
            out[name] = w.masked_fill(mask_of(score(w, stats, name), setting.level).to(w.device), 0)
        return out

    return compress


def _wanda_score(w: torch.Tensor, stats: Mapping[str, InputStatistics], name: str) -> torch.Tensor:
    return wanda_scores(w, _statistic(stats, name, "square_sums"))


def _magnitude_score(w: torch.Tensor, stats: Mapping[str, InputStatistics], name: str) -> torch.Tensor:
    return w.abs()


def _two_of_four(scores: torch.Tensor, level: float) -> torch.Tensor:
    if level != 0.5:
        raise ValueError(f"2:4 sparsity is 0.5 by construction, got level {level}")
    return n_of_m_mask(scores, 2, 4)


def _sparsegpt(n_of_m: tuple[int, int] | None) -> Callable:
    def compress(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
        if n_of_m is not None and setting.level != n_of_m[0] / n_of_m[1]:
            raise ValueError(f"{n_of_m[0]}:{n_of_m[1]} sparsity is {n_of_m[0] / n_of_m[1]}, got {setting.level}")
        out = {}
        for name, module in block_linear_layers(model, layer).items():
            gram = _statistic(stats, name, "gram")
            w = components.weight(module)
            out[name] = second_order.sparsegpt(w, gram, 0.0 if n_of_m else setting.level, n_of_m)[0]
        return out

    return compress


def grid_levels(bits: float) -> int:
    """The number of levels of a grid of `bits` bits: 2^bits, which must be a whole number
    from 2 to 256 (1.58 bits is the ternary grid of 3 levels)."""
    levels = 2.0**bits
    if not math.isfinite(levels) or abs(levels - round(levels)) > 1e-6 * levels or not 2 <= round(levels) <= 256:
        raise ValueError(f"bits must be log2 of a whole number of levels from 2 to 256, got {bits!r}")
    return int(round(levels))


def _rtn(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
    levels = grid_levels(setting.level)
    return {
        name: round_to_levels(components.weight(m).detach(), levels, setting.group_size)
        for name, m in block_linear_layers(model, layer).items()
    }


def _gptq(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
    out = {}
    for name, module in block_linear_layers(model, layer).items():
        gram = _statistic(stats, name, "gram")
        out[name] = second_order.gptq(components.weight(module), gram, grid_levels(setting.level), setting.group_size)
    return out


def _svd(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
    return {
        name: low_rank.truncated(components.weight(m), setting.level)
        for name, m in block_linear_layers(model, layer).items()
    }


def _asvd(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
    out = {}
    for name, module in block_linear_layers(model, layer).items():
        abs_means = _statistic(stats, name, "abs_sums") / max(stats[name].tokens, 1)
        scales = low_rank.activation_scales(abs_means)
        out[name] = low_rank.activation_aware(components.weight(module), scales, setting.level)
    return out


def _column_scores(module: nn.Module, stats: Mapping[str, InputStatistics], name: str) -> torch.Tensor:
    """Wanda scores of an output projection, averaged over its rows: one per input column."""
    return wanda_scores(components.weight(module), _statistic(stats, name, "square_sums")).mean(0)


def structured_removal(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], share: float):
    """The heads and MLP channels of block `layer` that structured pruning at `share` removes
    (module docstring): (heads, channels), each sorted."""
    check_sparsity(share, "share of heads and channels")
    names = {id(m): n for n, m in block_linear_layers(model, layer).items()}
    lay = components.layout(model)
    attention = components.attention_output(model, layer)
    per_column = _column_scores(attention, stats, names[id(attention)])
    head_scores = per_column.view(lay.n_heads, lay.head_dim).sum(1)
    heads = torch.argsort(head_scores, stable=True)[: int(round(share * lay.n_heads))]
    mlp = components.mlp_output(model, layer)
    channel_scores = _column_scores(mlp, stats, names[id(mlp)])
    channels = torch.argsort(channel_scores, stable=True)[: int(round(share * len(channel_scores)))]
    return sorted(heads.tolist()), sorted(channels.tolist())


def _structured(model: nn.Module, layer: int, stats: Mapping[str, InputStatistics], setting: Setting) -> Weights:
    heads, channels = structured_removal(model, layer, stats, setting.level)
    names = {id(m): n for n, m in block_linear_layers(model, layer).items()}
    masks: dict[str, torch.Tensor] = {}

    def mask_of(module: nn.Module) -> torch.Tensor:
        name = names[id(module)]
        if name not in masks:
            masks[name] = torch.zeros_like(components.weight(module), dtype=torch.bool)
        return masks[name]

    lay = components.layout(model)
    grouped = components.kv_heads(model) != lay.n_heads  # shared key/value rows stay
    for head in heads:
        for module, rows in components.head_qkv_rows(model, layer, head)[: 1 if grouped else None]:
            mask_of(module)[rows] = True
        mask_of(components.attention_output(model, layer))[:, head * lay.head_dim : (head + 1) * lay.head_dim] = True
    if channels:
        index = torch.tensor(channels)
        for module in components.mlp_inputs(model, layer):
            mask_of(module)[index] = True
        mask_of(components.mlp_output(model, layer))[:, index] = True
    return {
        name: components.weight(module).detach().masked_fill(masks[name].to(components.weight(module).device), 0)
        for name, module in block_linear_layers(model, layer).items()
        if name in masks
    }


@dataclass(frozen=True)
class Operator:
    """A compression method: the redundancy it removes, what its level means, the input
    statistics it reads, and how it compresses one block."""

    redundancy: str
    level: str
    statistics: frozenset[str]
    compress: Callable[[nn.Module, int, Mapping[str, InputStatistics], Setting], Weights] = field(repr=False)

    def ratio(self, level: float) -> float:
        """The compression ratio s of a level (module docstring)."""
        return 1 - level / DENSE_BITS if self.level == "bits" else float(level)

    def dense_level(self) -> float:
        return float(DENSE_BITS) if self.level == "bits" else 0.0

    def check(self, level: float) -> float:
        if self.level == "bits":
            grid_levels(level)
            return float(level)
        return check_sparsity(level, self.level)


NONE: frozenset[str] = frozenset()
OPERATORS: dict[str, Operator] = {
    "magnitude": Operator("structural", "sparsity", NONE, _unstructured(_magnitude_score, layer_mask)),
    "wanda": Operator("structural", "sparsity", frozenset({"square"}), _unstructured(_wanda_score, row_mask)),
    "sparsegpt": Operator("structural", "sparsity", frozenset({"gram"}), _sparsegpt(None)),
    "wanda_2:4": Operator("structural", "sparsity", frozenset({"square"}), _unstructured(_wanda_score, _two_of_four)),
    "sparsegpt_2:4": Operator("structural", "sparsity", frozenset({"gram"}), _sparsegpt((2, 4))),
    "structured": Operator("structural", "share of heads and channels", frozenset({"square"}), _structured),
    "rtn": Operator("numerical", "bits", NONE, _rtn),
    "gptq": Operator("numerical", "bits", frozenset({"gram"}), _gptq),
    "svd": Operator("algebraic", "share of parameters removed", NONE, _svd),
    "asvd": Operator("algebraic", "share of parameters removed", frozenset({"abs"}), _asvd),
}


def operator(name: str) -> Operator:
    if name not in OPERATORS:
        raise KeyError(f"unknown compression operator {name!r}; known: {sorted(OPERATORS)}")
    return OPERATORS[name]


@contextmanager
def compressed(
    model: nn.Module,
    name: str,
    setting: Setting,
    calibration: torch.Tensor | None = None,
    pad_token_id: int | None = None,
) -> Iterator[None]:
    """Within the context every block's linear layers hold their compressed weights (blocks
    in order, each calibrated on the compressed blocks' outputs); on exit the original
    weights are back, whatever happened inside."""
    op = operator(name)
    op.check(setting.level)
    if op.statistics and calibration is None:
        raise ValueError(f"{name} reads calibration inputs: pass calibration token ids")
    modules = components.all_linear_layers(model)
    saved = {n: components.weight(m).detach().to("cpu", copy=True) for n, m in modules.items()}
    try:
        for layer in range(components.layout(model).n_layers):
            stats = (
                block_input_statistics(model, calibration, pad_token_id, layer, op.statistics)
                if op.statistics and calibration is not None
                else {}
            )
            new = op.compress(model, layer, stats, setting)
            with torch.no_grad():
                for n, w in new.items():
                    target = components.weight(modules[n])
                    target.copy_(w.to(target.device, target.dtype))
        yield
    finally:
        with torch.no_grad():
            for n, original in saved.items():
                target = components.weight(modules[n])
                target.copy_(original.to(target.device))


# --- curves ------------------------------------------------------------------------------


def metrics(profile: Profile) -> dict[str, float]:
    """One row of a curve: the language perplexity, the mixture perplexity, every
    capability's answer perplexity (exp of its mean answer NLL per token: positive and
    smooth, what the phase-transition detector reads), "capabilities" = exp of minus the
    capabilities' mean answer log-probability (`Profile.mean_graded`: each probe and each
    capability counting once), and every capability's exact-match accuracy."""
    row = {"language": profile.perplexity, "mixture": profile.mixture_perplexity}
    row.update({task: r.task_perplexity for task, r in profile.capabilities.items()})
    if profile.capabilities:
        row["capabilities"] = math.exp(-profile.mean_graded())
    row.update({f"accuracy:{task}": r.accuracy for task, r in profile.capabilities.items()})
    return row


def curves(
    model: nn.Module,
    data: EvaluationData,
    calibration: torch.Tensor,
    pad_token_id: int | None,
    grids: Mapping[str, Sequence[float]],
    group_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Every operator of `grids` at each of its levels: one row per (operator, level) with
    the ratio s and `metrics`; each operator's curve starts with the dense model (ratio 0),
    evaluated once."""
    for name, levels in grids.items():
        op = operator(name)
        for level in levels:
            op.check(level)
    dense = metrics(evaluate(model, data))
    rows = []
    total = sum(len(levels) for levels in grids.values())
    bar = tqdm(total=total, desc="compressed models", disable=not progress)
    for name, levels in grids.items():
        op = OPERATORS[name]
        rows.append({"operator": name, "level": op.dense_level(), "ratio": 0.0, **dense})
        for level in levels:
            with compressed(model, name, Setting(float(level), group_size), calibration, pad_token_id):
                rows.append(
                    {
                        "operator": name,
                        "level": float(level),
                        "ratio": op.ratio(level),
                        **metrics(evaluate(model, data)),
                    }
                )
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


# --- reading a curve -----------------------------------------------------------------------


@dataclass(frozen=True)
class CriticalRatio:
    """Where one metric's curve collapses: the detector's outcome ("transition", "smooth",
    "not identifiable", or "flat": censored beyond the grid), s0 and its interval (for a
    flat curve the largest measured ratio and (that ratio, 1))."""

    outcome: str
    s0: float | None
    interval: tuple[float, float] | None


def critical_ratio(ratios, metric, level: float = 0.95, min_rise: float = MIN_RISE) -> CriticalRatio:
    """Locate the collapse of one curve (the dense model at ratio 0 first) with the
    detector of `cgclib.phase`, its profile-likelihood interval taken at `level` (the
    detector's own is 95%; a difference of two critical ratios, bounded by the ends of two
    intervals, needs 97.5% each to cover 95%)."""
    s, m = np.asarray(ratios, dtype=float), np.asarray(metric, dtype=float)
    order = np.argsort(s)
    s, m = s[order], m[order]
    if s[0] != 0:
        raise ValueError("a curve starts with the dense model at ratio 0")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if m.max() < m[0] * (1 + min_rise):
        return CriticalRatio("flat", float(s[-1]), (float(s[-1]), 1.0))
    fit = phase.fit_phase_transition(s, m)
    if fit.outcome != "transition" or fit.s0 is None:
        return CriticalRatio(fit.outcome, None, None)
    grid = np.arange(s[1], s[-2] - phase.S0_STEP / 2, phase.S0_STEP)  # the detector's s0 grid
    _, profile = phase.transition_profile(s, m, grid)
    df = len(s) - 5
    inside = grid[profile <= profile.min() * (1 + stats.f.ppf(level, 1, df) / df)]
    low = float(s[0]) if inside.min() <= grid[0] else float(inside.min())
    high = float(s[-1]) if inside.max() >= grid[-1] else float(inside.max())
    return CriticalRatio("transition", fit.s0, (round(low, 6), round(high, 6)))


def difference(later: CriticalRatio, earlier: CriticalRatio) -> tuple[float | None, tuple[float, float] | None]:
    """s0 of `later` minus s0 of `earlier`, with the interval from the ends of theirs (lower
    end minus the other's upper end, and the reverse); None where either has no s0."""
    if later.s0 is None or earlier.s0 is None or later.interval is None or earlier.interval is None:
        return None, None
    return later.s0 - earlier.s0, (
        later.interval[0] - earlier.interval[1],
        later.interval[1] - earlier.interval[0],
    )
