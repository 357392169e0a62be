"""Adaptive sweeps: locate where a component's damage first crosses the collapse threshold
without evaluating every ratio of a fine grid.

A fine-grid sweep (`cgclib.component_phase.head_sweep`) evaluates the model once per
component and ratio, although locating a threshold crossing needs few of those points:
evaluate a coarse subset of the grid (every `stride`-th ratio) in ascending order until one
crosses, then bisect the fine grid inside the bracketing coarse interval. For n fine ratios
that takes about n / stride + log2(stride) evaluations instead of n.

The collapse threshold is the library's rise test: a metric has collapsed at a ratio where it
has risen by the share `min_rise` (`compression.MIN_RISE`) over the dense model, the test
by which `component_phase.critical_ratios` and `compression.critical_ratio` tell a curve
that rises from a flat one. A component's damage at a ratio is the largest such rise over
its metrics, so its crossing is the first grid ratio at which any of its metrics has risen
by `min_rise`: a threshold crossing, not the fitted critical ratio s0 of `cgclib.phase`
(which needs the whole curve and cannot be bisected).

`first_crossing` searches one damage function; `CrossingSearch` is the same search one step
at a time, so that `head_crossings` can advance the searches of every head of a block
together, evaluating their next ratios in one forward pass. `sweep_crossings` reads the
crossings from a complete fine-grid sweep table, the full scan the search replaces.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from . import components
from .component_phase import _check_grid, _metrics
from .compression import MIN_RISE
from .evaluation import EvaluationData, evaluate_variants, variants_per_pass
from .pruning import check_sparsity, input_square_sums, masked_by_variant, wanda_head_masks
from .resume import recorded_inputs, resumed_at


@dataclass(frozen=True)
class Crossing:
    """The outcome of a search: `ratio`, the grid ratio found where the damage crosses the
    threshold (None: no crossing found on the grid), and `evaluated`, the (ratio, damage)
    pairs the search evaluated, in the order it evaluated them."""

    ratio: float | None
    evaluated: tuple[tuple[float, float], ...]

    @property
    def evaluations(self) -> int:
        """How many times the damage was evaluated."""
        return len(self.evaluated)

    @property
    def dips(self) -> tuple[tuple[float, float], ...]:
        """The neighbouring evaluated ratios (lower, higher) between which the damage falls:
        evidence, from the points seen, that the curve is not monotone there. With dips, the
        single-crossing assumption of `first_crossing` may fail; a full scan (stride 1)
        settles where the first crossing is."""
        points = sorted(self.evaluated)
        return tuple((r0, r1) for (r0, d0), (r1, d1) in pairwise(points) if d1 < d0)


class CrossingSearch:
    """`first_crossing` one evaluation at a time: `ratio` is the next ratio to evaluate
    (None once the search is done), `tell` gives the search that ratio's damage, and
    `result` is the `Crossing` once done. Lets a caller evaluate the next ratios of several
    searches together (`head_crossings`)."""

    def __init__(self, grid: Sequence[float], threshold: float, stride: int):
        self._grid = _validated_grid(grid)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"the coarse stride must be an integer of at least 1, got {stride!r}")
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold must be finite, got {threshold!r}")
        self._threshold, self._stride = threshold, stride
        # invariant: grid indices <= below are known (or, for -1, taken) to be under the
        # threshold; the index `above`, once found, is at or above it
        self._below: int = -1
        self._above: int | None = None
        self._evaluated: list[tuple[float, float]] = []
        self._next: int | None = min(stride, len(self._grid)) - 1

    @property
    def ratio(self) -> float | None:
        """The next ratio to evaluate, or None when the search is done."""
        return None if self._next is None else self._grid[self._next]

    def tell(self, damage: float) -> None:
        """Record the damage at `ratio` and choose the next ratio."""
        if self._next is None:
            raise RuntimeError("the search is done: it needs no more evaluations")
        if math.isnan(damage):
            raise ValueError(f"the damage at ratio {self._grid[self._next]} is NaN; a search needs comparable values")
        index = self._next
        self._evaluated.append((self._grid[index], float(damage)))
        if damage >= self._threshold:
            self._above = index
        else:
            self._below = index
        if self._above is None:  # coarse stage: the next coarse ratio, the last of the grid included
            last = len(self._grid) - 1
            self._next = None if index == last else min(index + self._stride, last)
        elif self._above - self._below > 1:  # refinement: bisect the bracket (below, above]
            self._next = (self._below + self._above) // 2
        else:
            self._next = None

    @property
    def result(self) -> Crossing:
        """The crossing found, once the search is done."""
        if self._next is not None:
            raise RuntimeError(f"the search is not done: ratio {self.ratio} is still to be evaluated")
        ratio = None if self._above is None else self._grid[self._above]
        return Crossing(ratio, tuple(self._evaluated))


def _validated_grid(grid: Sequence[float]) -> list[float]:
    ratios = [check_sparsity(r, "every ratio of the grid") for r in grid]
    if not ratios:
        raise ValueError("the grid of ratios is empty")
    if any(b <= a for a, b in pairwise(ratios)):
        raise ValueError(f"the grid of ratios must be strictly increasing, got {ratios}")
    return ratios


def first_crossing(
    evaluate: Callable[[float], float], grid: Sequence[float], threshold: float, stride: int
) -> Crossing:
    """The first ratio of the fine `grid` at which `evaluate(ratio)` (a damage, e.g. the rise
    of perplexity with one component pruned at that ratio) is at or above `threshold`,
    found by evaluating every `stride`-th ratio (and the last) in ascending order until one
    crosses, then bisecting the grid between it and the coarse ratio before it.

    Assumption: the damage crosses the threshold once on the grid (below it, then at or
    above it from some ratio on), as a monotone damage does; then the result is exactly
    what scanning every ratio of the grid returns, None included when it never crosses.
    Otherwise the search still returns a crossing, a ratio at or above the threshold whose
    neighbour below on the grid is under it (or the first ratio of the grid), but maybe not
    the first: a rise that falls back under the threshold between two coarse ratios is
    missed. Where the evaluated points show the damage falling, `Crossing.dips` says so.

    Stride 1 is the plain scan, stopped at the first crossing; a stride at least as long as
    the grid evaluates its last ratio first and bisects the whole grid."""
    search = CrossingSearch(grid, threshold, stride)
    while (ratio := search.ratio) is not None:
        search.tell(evaluate(ratio))
    return search.result


def _rise(values: Mapping[str, float], dense: Mapping[str, float], metrics: Sequence[str]) -> float:
    """The largest relative rise of `metrics` over their dense values: a component's damage."""
    return max(values[m] / dense[m] - 1 for m in metrics)


def _row(key: dict, crossing: Crossing) -> dict:
    return {
        **key,
        "crossing": np.nan if crossing.ratio is None else crossing.ratio,
        "evaluations": crossing.evaluations,
        "dips": len(crossing.dips),
    }


def head_crossings(
    model: nn.Module,
    data: EvaluationData,
    calibration,
    pad_token_id: int | None,
    ratios: Iterable[float],
    stride: int,
    heads: list[tuple[int, int]] | None = None,
    metrics: Sequence[str] | None = None,
    min_rise: float = MIN_RISE,
    progress: bool = True,
) -> pd.DataFrame:
    """Per head pruned alone (Wanda, as in `component_phase.head_sweep`, with the same
    grid of `ratios`), the first ratio at which one of `metrics` (default all: the language
    perplexity and every capability's answer perplexity) has risen by `min_rise` over the
    dense model, found by `first_crossing` with the coarse `stride`. One row per head:
    `crossing` (NaN: no metric rises by `min_rise` on the grid), `evaluations` (pruned
    models evaluated) and `dips` (how many falls of the damage the search saw; see
    `Crossing.dips`). The searches of a block's heads advance together: each round
    evaluates every unfinished head at its next ratio, several heads per forward pass,
    resumed at the block (`cgclib.resume`)."""
    grid = _check_grid(ratios)
    lay = components.layout(model)
    heads = heads or [(l, h) for l in range(lay.n_layers) for h in range(lay.n_heads)]
    layers = sorted({l for l, _ in heads})
    modules = {f"{l}.{n}": m for l in layers for n, m in components.linear_layers(model, l).items()}
    sums = input_square_sums(model, calibration, pad_token_id, modules)
    group = variants_per_pass(model, data, max(Counter(l for l, _ in heads).values()))
    rows = []
    progress_bar = tqdm(total=len(heads), desc="heads searched", disable=not progress)
    for layer in layers:
        profile, recorded = recorded_inputs(
            model, layer, lambda: evaluate_variants(model, data, 1, batch_group=group)[0]
        )
        dense = _metrics(profile)
        chosen = list(dense) if metrics is None else list(metrics)
        searches = {head: CrossingSearch(grid, min_rise, stride) for l, head in heads if l == layer}
        while pending := [(head, ratio) for head, search in searches.items() if (ratio := search.ratio) is not None]:
            for start in range(0, len(pending), group):
                chunk = pending[start : start + group]
                masks = [wanda_head_masks(model, sums, layer, head, ratio) for head, ratio in chunk]
                with masked_by_variant(model, masks), resumed_at(model, recorded, len(chunk)):
                    profiles = evaluate_variants(model, data, len(chunk), batch_group=group)
                for (head, _), pruned in zip(chunk, profiles, strict=True):
                    searches[head].tell(_rise(_metrics(pruned), dense, chosen))
        for head, search in searches.items():
            rows.append(_row({"layer": layer, "head": head}, search.result))
            progress_bar.update()
    progress_bar.close()
    return pd.DataFrame(rows)


def sweep_crossings(
    sweep: pd.DataFrame, keys: list[str], metrics: Sequence[str] | None = None, min_rise: float = MIN_RISE
) -> pd.DataFrame:
    """The full scan that `head_crossings` replaces, read from a complete sweep table
    (`component_phase.head_sweep` or `block_sweep`, dense model at ratio 0): per component,
    the first ratio at which one of `metrics` (default every column but `keys` and ratio)
    has risen by `min_rise` over the dense model, with the same columns as
    `head_crossings`; `evaluations` counts every pruned ratio of the table, and `dips`
    every fall of the damage along the whole curve."""
    rows = []
    for key, curve in sweep.groupby(keys):
        curve = curve.sort_values("ratio")
        if curve["ratio"].iloc[0] != 0:
            raise ValueError(f"component {key}: the sweep must include the dense model at ratio 0")
        chosen = [c for c in curve.columns if c not in (*keys, "ratio")] if metrics is None else list(metrics)
        dense, *pruned = curve.to_dict("records")
        damage = [(row["ratio"], _rise(row, dense, chosen)) for row in pruned]
        ratio = next((r for r, d in damage if d >= min_rise), None)
        rows.append(_row(dict(zip(keys, key, strict=True)), Crossing(ratio, tuple(damage))))
    return pd.DataFrame(rows)
