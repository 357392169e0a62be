"""Allocating one global sparsity budget across components.

Every layer-wise strategy here is the same map applied to a different score per block,
the map OWL (Yin et al. 2023) uses for its outlier ratios: with x_l the block scores,

    r_l = 2 * lam * (x_l - min x) / (max x - min x),      s_l = S - (r_l - mean r),

so that blocks with a higher score are pruned less, sparsities span 2 * lam at most (less
near the edges of [0, 1), where the spread is narrowed), and their mean is exactly S (blocks of a transformer have equal parameter counts, so
the mean is also the parameter-weighted mean). Only the score changes between strategies,
which is what makes them comparable:

- uniform: every block at S;
- density (CGC-L, our reconstruction): x_l = mean capability density of the block's heads;
- inverted: x_l = minus that (the control: denser blocks pruned more);
- wanda: x_l = mean Wanda score of the block's linear layers;
- owl: x_l = the block's outlier ratio, the share of its Wanda scores above M times their
  mean (M = 5, lam = 0.08 by default, the OWL paper's values for 70% sparsity);
- depth: x_l = -l, earlier blocks pruned less (a control for any score that varies with depth).

For heads, allocation is the choice of which heads a structured budget removes:
`heads_to_prune` takes the lowest-scoring share of heads.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import components
from .evaluation import EvaluationData, Profile, evaluate
from .hooks import ablated_heads
from .pruning import SparsityError, check_sparsity, masked, wanda_block_masks, wanda_scores

OWL_M = 5.0
OWL_LAMBDA = 0.08
MAX_BLOCK_SPARSITY = 0.99


def spread(scores, sparsity: float, lam: float) -> np.ndarray:
    """OWL's map from block scores to block sparsities (module docstring); higher score,
    lower sparsity. Constant scores give the uniform allocation. Near the edges of [0, 1)
    the half-width is narrowed to the largest one that keeps every block sparsity within
    [0, MAX_BLOCK_SPARSITY], so the mean stays exactly `sparsity`."""
    check_sparsity(sparsity, "global sparsity")
    if sparsity > MAX_BLOCK_SPARSITY:
        raise SparsityError(f"global sparsity {sparsity} exceeds the largest block sparsity {MAX_BLOCK_SPARSITY}")
    x = np.asarray(scores, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"block scores must be a non-empty 1-D finite array, got {x!r}")
    if lam < 0:
        raise ValueError(f"lam must be non-negative, got {lam}")
    width = np.ptp(x)
    if width == 0:
        return np.full_like(x, sparsity)
    q = 2 * (x - x.min()) / width                     # in [0, 2]; r = lam * q
    centred = q - q.mean()
    if centred.max() > 0:
        lam = min(lam, sparsity / centred.max())
    if centred.min() < 0:
        lam = min(lam, (MAX_BLOCK_SPARSITY - sparsity) / -centred.min())
    return np.clip(sparsity - lam * centred, 0.0, MAX_BLOCK_SPARSITY)


def outlier_ratios(model, square_sums: Mapping[str, torch.Tensor], m: float = OWL_M) -> np.ndarray:
    """OWL's layerwise outlier density: per block, the share of the Wanda scores of all its
    linear layers (taken together) that exceed m times their mean."""
    ratios = []
    for block in range(components.layout(model).n_layers):
        scores = torch.cat([wanda_scores(components.weight(mod), square_sums[f"{block}.{name}"]).flatten()
                            for name, mod in components.linear_layers(model, block).items()])
        ratios.append(float((scores > m * scores.mean()).double().mean()))
    return np.array(ratios)


def mean_wanda_scores(model, square_sums: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Per block, the mean Wanda score over all weights of its linear layers."""
    out = []
    for block in range(components.layout(model).n_layers):
        layers = components.linear_layers(model, block).items()
        total = sum(float(wanda_scores(components.weight(mod), square_sums[f"{block}.{name}"]).sum())
                    for name, mod in layers)
        out.append(total / sum(components.weight(mod).numel() for _, mod in layers))
    return np.array(out)


def block_scores(model, square_sums: Mapping[str, torch.Tensor], head_density: pd.Series,
                 owl_m: float = OWL_M) -> dict[str, np.ndarray]:
    """The score each layer-wise strategy ranks blocks by (see the module docstring).
    `head_density` is indexed by (layer, head)."""
    n = components.layout(model).n_layers
    density = head_density.groupby(level="layer").mean().reindex(range(n)).to_numpy()
    if np.isnan(density).any():
        raise ValueError("head_density must cover every layer of the model")
    return {"uniform": np.zeros(n), "density": density, "inverted": -density,
            "wanda": mean_wanda_scores(model, square_sums), "owl": outlier_ratios(model, square_sums, owl_m),
            "depth": -np.arange(n, dtype=float)}


def block_sparsities(scores: Mapping[str, np.ndarray], sparsity: float, lam: float = OWL_LAMBDA) -> pd.DataFrame:
    """One column per strategy, one row per block: the sparsity of each block."""
    frame = pd.DataFrame({name: spread(x, sparsity, lam) for name, x in scores.items()})
    frame.index.name = "layer"
    return frame


def heads_to_prune(scores: pd.Series, fraction: float) -> list[tuple[int, int]]:
    """The round(fraction * n) heads with the lowest scores (ties broken by position)."""
    check_sparsity(fraction, "fraction of heads")
    k = int(round(fraction * len(scores)))
    order = scores.reset_index(drop=True).sort_values(kind="stable").index[:k]
    return [tuple(int(v) for v in scores.index[i]) for i in order]


def evaluate_block_allocations(model, data: EvaluationData, calibration, pad_token_id: int | None,
                               scores: Mapping[str, np.ndarray], sparsities, lam: float = OWL_LAMBDA,
                               progress: bool = True) -> dict[tuple[str, float], Profile]:
    """Prune with Wanda at every global sparsity under every strategy's block allocation
    and evaluate: {(strategy, sparsity): profile}."""
    profiles = {}
    jobs = [(name, float(s)) for s in sparsities for name in scores]
    for name, s in tqdm(jobs, desc="allocations", disable=not progress):
        per_block = dict(enumerate(spread(scores[name], s, lam)))
        with masked(model, wanda_block_masks(model, calibration, pad_token_id, per_block)):
            profiles[(name, s)] = evaluate(model, data)
    return profiles


def evaluate_head_pruning(model, data: EvaluationData, scores: Mapping[str, pd.Series], fractions,
                          progress: bool = True) -> dict[tuple[str, float], Profile]:
    """Remove the lowest-scoring share of heads under every ranking and evaluate:
    {(ranking, fraction): profile}."""
    profiles = {}
    jobs = [(name, float(f)) for f in fractions for name in scores]
    for name, f in tqdm(jobs, desc="head pruning", disable=not progress):
        with ablated_heads(model, heads_to_prune(scores[name], f)):
            profiles[(name, f)] = evaluate(model, data)
    return profiles


def profile_table(profiles: Mapping[tuple[str, float], Profile], dense: Profile | None = None) -> pd.DataFrame:
    """One row per (strategy, sparsity): perplexity, every capability's accuracy and their
    mean; with `dense`, a row ("dense", 0.0) first."""
    items = ([(("dense", 0.0), dense)] if dense is not None else []) + list(profiles.items())
    rows = []
    for (name, s), p in items:
        acc = p.accuracy()
        rows.append({"strategy": name, "sparsity": s, "perplexity": p.perplexity, **acc,
                     "mean accuracy": float(np.mean(list(acc.values()))) if acc else float("nan")})
    return pd.DataFrame(rows).set_index(["strategy", "sparsity"])
