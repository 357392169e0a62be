"""Phase transitions of single components: compress one head (or one block) alone over a
grid of ratios, evaluate the whole model each time, and locate where each metric collapses.

The compression is Wanda pruning of the component's own weights (`pruning.wanda_head_masks`,
`pruning.wanda_masks` of the whole block), all other components dense. The metrics are
the language perplexity and, per capability, the answer perplexity (exp of the mean NLL of
the answer tokens): a smooth companion of exact match that is positive everywhere, as the
phase-transition detector of `cgclib.phase` needs. Each metric's curve, the dense model at
ratio 0 included, is tested separately; a component's critical ratio for a metric is the
located s0 where the detector finds a transition, and none otherwise. The ratios of one
component share forward passes, each in its own copy of a stacked batch
(`pruning.masked_by_variant`), and the blocks before it are computed once (`cgclib.resume`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from . import components
from .evaluation import EvaluationData, Profile, evaluate_variants, variants_per_pass
from .phase import fit_phase_transition
from .pruning import (
    Masks,
    block_linear_layers,
    check_sparsity,
    input_square_sums,
    masked_by_variant,
    wanda_head_masks,
    wanda_masks,
)
from .resume import BlockInputs, recorded_inputs, resumed_at


def _metrics(profile: Profile) -> dict[str, float]:
    row = {"language": profile.perplexity}
    row.update({task: r.task_perplexity for task, r in profile.capabilities.items()})
    return row


def _check_grid(ratios: Iterable[float]) -> list[float]:
    grid = sorted(check_sparsity(r, "compression ratio") for r in ratios)
    if len(grid) < 3 or grid[0] == 0:
        raise ValueError("give at least three positive compression ratios; the dense model is added as ratio 0")
    return grid


def head_sweep(
    model: nn.Module,
    data: EvaluationData,
    calibration,
    pad_token_id: int | None,
    ratios: Iterable[float],
    heads: list[tuple[int, int]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every metric for every head pruned alone at every ratio: one row per (layer, head,
    ratio), ratio 0 being the dense model."""
    grid = _check_grid(ratios)
    lay = components.layout(model)
    heads = heads or [(l, h) for l in range(lay.n_layers) for h in range(lay.n_heads)]
    modules = {f"{l}.{n}": m for l in {l for l, _ in heads} for n, m in components.linear_layers(model, l).items()}
    sums = input_square_sums(model, calibration, pad_token_id, modules)
    group = variants_per_pass(model, data, len(grid))
    rows = []
    progress_bar = tqdm(total=len(heads), desc="heads pruned alone", disable=not progress)
    for layer in sorted({l for l, _ in heads}):  # blocks before `layer` computed once (cgclib.resume)
        profile, recorded = recorded_inputs(
            model, layer, lambda: evaluate_variants(model, data, 1, batch_group=group)[0]
        )
        dense = _metrics(profile)
        for head in [h for l, h in heads if l == layer]:
            rows.append({"layer": layer, "head": head, "ratio": 0.0, **dense})
            for ratio, metrics in _ratios_at_once(
                model, data, recorded, grid, group, partial(wanda_head_masks, model, sums, layer, head)
            ):
                rows.append({"layer": layer, "head": head, "ratio": ratio, **metrics})
            progress_bar.update()
    progress_bar.close()
    return pd.DataFrame(rows)


def _ratios_at_once(
    model: nn.Module,
    data: EvaluationData,
    recorded: BlockInputs,
    grid: list[float],
    group: int,
    masks_at: Callable[[float], Masks],
) -> Iterator[tuple[float, dict[str, float]]]:
    """The metrics of the model pruned by `masks_at(ratio)` at every ratio of the grid,
    `group` ratios per forward pass (each in its own copy of the batch), resumed at the
    recorded block."""
    for start in range(0, len(grid), group):
        chunk = grid[start : start + group]
        with masked_by_variant(model, [masks_at(r) for r in chunk]), resumed_at(model, recorded, len(chunk)):
            profiles = evaluate_variants(model, data, len(chunk), batch_group=group)
        yield from zip(chunk, map(_metrics, profiles), strict=True)


def block_sweep(
    model: nn.Module,
    data: EvaluationData,
    calibration,
    pad_token_id: int | None,
    ratios: Iterable[float],
    progress: bool = True,
) -> pd.DataFrame:
    """Every metric for every block pruned alone (all its linear layers, Wanda) at every
    ratio: one row per (layer, ratio)."""
    grid = _check_grid(ratios)
    group = variants_per_pass(model, data, len(grid))
    rows = []
    for layer in tqdm(range(components.layout(model).n_layers), desc="blocks pruned alone", disable=not progress):
        profile, recorded = recorded_inputs(  # blocks before: once
            model, layer, lambda: evaluate_variants(model, data, 1, batch_group=group)[0]
        )
        rows.append({"layer": layer, "ratio": 0.0, **_metrics(profile)})
        layers = block_linear_layers(model, layer)
        sums = input_square_sums(model, calibration, pad_token_id, layers)  # the block's inputs are dense
        for ratio, metrics in _ratios_at_once(model, data, recorded, grid, group, partial(wanda_masks, layers, sums)):
            rows.append({"layer": layer, "ratio": ratio, **metrics})
    return pd.DataFrame(rows)


def critical_ratios(sweep: pd.DataFrame, keys: list[str], metrics: list[str], min_rise: float = 0.05) -> pd.DataFrame:
    """One row per (component, metric): the detector's outcome (`cgclib.phase`), the
    critical ratio s0 with its 95% interval where a transition is detected, and the test's
    p-value. A metric that never rises above its dense value by the factor 1 + `min_rise`
    is "flat" and not fitted (a curve that stays flat has nothing to locate). `keys` name
    the component columns of the sweep (e.g. layer and head)."""
    rows = []
    for key, curve in sweep.groupby(keys):
        curve = curve.sort_values("ratio")
        if curve["ratio"].iloc[0] != 0:
            raise ValueError(f"component {key}: the sweep must include the dense model at ratio 0")
        for m in metrics:
            y = curve[m].to_numpy()
            fit = fit_phase_transition(curve["ratio"].to_numpy(), y) if y.max() >= y[0] * (1 + min_rise) else None
            interval = fit.interval if fit is not None and fit.interval is not None else (None, None)
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "metric": m,
                    "outcome": "flat" if fit is None else fit.outcome,
                    "s0": None if fit is None else fit.s0,
                    "interval_low": interval[0],
                    "interval_high": interval[1],
                    "p": None if fit is None else fit.p,
                }
            )
    return pd.DataFrame(rows).astype({"s0": float, "interval_low": float, "interval_high": float, "p": float})


def s0_table(critical: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The s0 column of `critical_ratios` as a table: components by metrics."""
    return critical.pivot(index=keys, columns="metric", values="s0")[critical["metric"].unique()]


def first_collapse(s0: pd.DataFrame, censor_at: float) -> pd.Series:
    """Per component, the smallest critical ratio over its metrics: the ratio at which its
    first function collapses. Components with no transition are set to `censor_at` (the top
    of the grid), which a rank correlation treats as tied beyond every s0. That is censoring
    in the strict sense only for components whose metrics all stay flat (`outcomes`); one
    whose curves rise smoothly, or too early in the grid for the detector, is not known to
    collapse later, so a correlation on this column is about "a transition located, and
    where", not about the critical ratio itself."""
    return s0.min(axis=1, skipna=True).fillna(censor_at).clip(upper=censor_at).rename("first_collapse")


def outcomes(critical: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per component, what the detector found over its metrics: "transition" (at least one
    metric), "flat" (every metric stays within its `min_rise` of dense: censored at the
    top of the grid in the strict sense) or "no transition located" (some metric rises,
    but smoothly or not identifiably)."""

    def verdict(found: pd.Series) -> str:
        if (found == "transition").any():
            return "transition"
        return "flat" if (found == "flat").all() else "no transition located"

    return critical.groupby(keys)["outcome"].apply(verdict).rename("outcome")


def transition_table(s0: pd.DataFrame) -> pd.DataFrame:
    """Per metric: how many components show a transition and the spread of their s0."""
    return pd.DataFrame(
        {
            "components with a transition": s0.notna().sum(),
            "median s0": s0.median(),
            "min s0": s0.min(),
            "max s0": s0.max(),
        }
    )
