"""Allocating one global sparsity budget across components.

Every layer-wise strategy here is the same map applied to a different score per block,
the map OWL (Yin et al. 2023) uses for its outlier ratios: with x_l the block scores,

    r_l = 2 * lam * (x_l - min x) / (max x - min x),      s_l = S - (r_l - mean r),

so that blocks with a higher score are pruned less, sparsities span 2 * lam at most (less
near the edges of [0, 1), where the spread is narrowed), and their mean is exactly S (blocks
of a transformer have equal parameter counts, so the mean is also the parameter-weighted
mean). Only the score changes between strategies, which is what makes them comparable:

- uniform: every block at S;
- density (CGC-L, our reconstruction): x_l = mean capability density of the block's heads;
- inverted: x_l = minus that (the control: denser blocks pruned more);
- wanda: x_l = mean Wanda score of the block's linear layers;
- owl: x_l = the block's outlier ratio, the share of its Wanda scores above M times their
  mean (M = 5, lam = 0.08 by default, the OWL paper's values for 70% sparsity);
- depth: x_l = -l, earlier blocks pruned less (a control for any score that varies with depth).

The Wanda and OWL scores come from `pruning.input_square_sums`, which by default counts
every calibration token, position 0 included, as the reference Wanda code does (OWL reuses
Wanda's statistics).

AlphaPruning (Lu et al. 2024) maps its own block metric, the heavy-tail exponent of the
weights' eigenvalue spectra (`block_alphas`, by default its ``alpha_peak``), with its own
map (`alphapruning_sparsities`), and
`absorption_corrected` shifts any allocation toward the blocks whose perturbations are
absorbed downstream (our reconstruction of Jing et al. 2026).

For heads, allocation is the choice of which heads a structured budget removes:
`heads_to_prune` takes the lowest-scoring share of heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
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
    if np.ptp(x) == 0:
        return np.full_like(x, sparsity)
    return _shifted(np.full_like(x, sparsity), -_centred_unit_scores(x), lam)


def _centred_unit_scores(x: np.ndarray) -> np.ndarray:
    """q - mean(q) with q = 2 (x - min x) / (max x - min x) in [0, 2]."""
    q = 2 * (x - x.min()) / np.ptp(x)
    return q - q.mean()


def _shifted(base: np.ndarray, direction: np.ndarray, lam: float) -> np.ndarray:
    """base + lam' * direction, lam' the largest value <= lam that keeps every entry within
    [0, MAX_BLOCK_SPARSITY]; `direction` sums to zero, so the mean of `base` is kept."""
    for d, room in ((direction, MAX_BLOCK_SPARSITY - base), (-direction, base)):
        up = d > 0
        if up.any():
            lam = min(lam, float(np.min(room[up] / d[up])))
    return np.clip(base + max(lam, 0.0) * direction, 0.0, MAX_BLOCK_SPARSITY)


def outlier_ratios(model: nn.Module, square_sums: Mapping[str, torch.Tensor], m: float = OWL_M) -> np.ndarray:
    """OWL's layerwise outlier density: per block, the share of the Wanda scores of all its
    linear layers (taken together) that exceed m times their mean."""
    ratios = []
    for block in range(components.layout(model).n_layers):
        scores = torch.cat(
            [
                wanda_scores(components.weight(mod), square_sums[f"{block}.{name}"]).flatten()
                for name, mod in components.linear_layers(model, block).items()
            ]
        )
        ratios.append(float((scores > m * scores.mean()).double().mean()))
    return np.array(ratios)


def mean_wanda_scores(model: nn.Module, square_sums: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Per block, the mean Wanda score over all weights of its linear layers."""
    out = []
    for block in range(components.layout(model).n_layers):
        layers = components.linear_layers(model, block).items()
        total = sum(
            float(wanda_scores(components.weight(mod), square_sums[f"{block}.{name}"]).sum()) for name, mod in layers
        )
        out.append(total / sum(components.weight(mod).numel() for _, mod in layers))
    return np.array(out)


def block_scores(
    model: nn.Module, square_sums: Mapping[str, torch.Tensor], head_density: pd.Series, owl_m: float = OWL_M
) -> dict[str, np.ndarray]:
    """The score each layer-wise strategy ranks blocks by (see the module docstring).
    `head_density` is indexed by (layer, head)."""
    n = components.layout(model).n_layers
    density = head_density.groupby(level="layer").mean().reindex(range(n)).to_numpy()
    if np.isnan(density).any():
        raise ValueError("head_density must cover every layer of the model")
    return {
        "uniform": np.zeros(n),
        "density": density,
        "inverted": -density,
        "wanda": mean_wanda_scores(model, square_sums),
        "owl": outlier_ratios(model, square_sums, owl_m),
        "depth": -np.arange(n, dtype=float),
    }


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
    return [(int(layer), int(head)) for layer, head in (scores.index[i] for i in order)]


def evaluate_block_allocations(
    model: nn.Module,
    data: EvaluationData,
    calibration,
    pad_token_id: int | None,
    scores: Mapping[str, np.ndarray],
    sparsities,
    lam: float = OWL_LAMBDA,
    progress: bool = True,
    first_token: bool = True,
) -> dict[tuple[str, float], Profile]:
    """Prune with Wanda at every global sparsity under every strategy's block allocation
    and evaluate: {(strategy, sparsity): profile}. `first_token` as in `evaluate_allocation`."""
    jobs = [(name, float(s)) for s in sparsities for name in scores]
    return {
        (name, s): evaluate_allocation(
            model, data, calibration, pad_token_id, spread(scores[name], s, lam), first_token=first_token
        )
        for name, s in tqdm(jobs, desc="allocations", disable=not progress)
    }


def evaluate_allocation(
    model: nn.Module,
    data: EvaluationData,
    calibration,
    pad_token_id: int | None,
    block_sparsity,
    first_token: bool = True,
) -> Profile:
    """Prune every block b with Wanda at `block_sparsity[b]` (blocks in order) and evaluate.
    By default Wanda's input norms count every calibration token, position 0 included, as the
    reference `prune_wanda` does (and OWL, which reuses Wanda's statistics); `first_token=False`
    leaves position 0 out, to measure the effect of its outlier activations
    (`pruning.input_square_sums`)."""
    masks = wanda_block_masks(
        model, calibration, pad_token_id, dict(enumerate(block_sparsity)), first_token=first_token
    )
    with masked(model, masks):
        return evaluate(model, data)


def evaluate_head_pruning(
    model: nn.Module, data: EvaluationData, scores: Mapping[str, pd.Series], fractions, progress: bool = True
) -> dict[tuple[str, float], Profile]:
    """Remove the lowest-scoring share of heads under every ranking and evaluate:
    {(ranking, fraction): profile}."""
    profiles: dict[tuple[str, float], Profile] = {}
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
        rows.append(
            {
                "strategy": name,
                "sparsity": s,
                "perplexity": p.perplexity,
                **p.accuracy(),
                "mean accuracy": p.mean_accuracy(),
            }
        )
    return pd.DataFrame(rows).set_index(["strategy", "sparsity"])


def hill_alpha(eigenvalues, xmin: Literal["peak", "scan"] = "peak") -> float:
    """Heavy-tail exponent of an eigenvalue spectrum as AlphaPruning computes it
    (`net_esd_estimator` in haiquanlu/AlphaPruning, lib/esd_utils.py): for candidate values
    x_min among the ascending eigenvalues, the Hill estimate
    alpha = 1 + n / sum_{i: lambda_i >= x_min} log(lambda_i / x_min) over the n eigenvalues in
    the tail, and the Kolmogorov-Smirnov distance between the tail's empirical CDF and the
    power law's; the alpha with the smallest distance is returned.

    `xmin` picks the candidates. "peak" (the reference's default, ``fix_fingers='xmin_peak'``,
    its metric ``alpha_peak``): only those near the peak of the 100-bin histogram of
    log10(eigenvalues), as `_peak_window` defines it; every positive eigenvalue is kept, as the
    reference does with its default ``filter_zeros=False``. "scan" (weightwatcher's full scan):
    every eigenvalue above 1e-5 is a candidate.

    Three edge cases differ from the reference on purpose: the fit runs in float64 where the
    reference computes in float32 (on a borderline spectrum the histogram's peak bin can
    move); a candidate whose tail is all ties (zero Hill denominator) is skipped, where the
    reference divides by zero; and an eigenvalue of exactly 0 is dropped, where the
    reference's log would fail."""
    eig = np.sort(np.asarray(eigenvalues, dtype=float))
    if xmin == "peak":
        eig = eig[eig > 0]  # the reference takes the log of every eigenvalue: a zero would fail there
    elif xmin == "scan":
        eig = eig[eig > 1e-5]  # near-zero eigenvalues carry no tail information
    else:
        raise ValueError(f'xmin must be "peak" or "scan", got {xmin!r}')
    if len(eig) < 3:
        raise ValueError(f"a tail exponent needs at least 3 positive eigenvalues, got {len(eig)}")
    if xmin == "peak":
        return _peak_alpha(eig)
    logs = np.log(eig)
    best_alpha, best_d = np.nan, np.inf
    for i in range(len(eig) - 1):
        n = len(eig) - i
        denominator = logs[i:].sum() - n * logs[i]
        if denominator <= 0:
            continue
        alpha = 1 + n / denominator
        cdf = 1 - (eig[i:] / eig[i]) ** (1 - alpha)
        d = float(np.max(np.abs(cdf - np.arange(n) / n))) if alpha > 1 else 1.0
        if d < best_d:
            best_alpha, best_d = alpha, d
    return float(best_alpha)


def _peak_window(eig: np.ndarray, bins: int = 100) -> tuple[float, float]:
    """The reference's bounds on x_min for ``xmin_peak``: with p the left edge of the fullest
    bin of the histogram of log10(eigenvalues) (first fullest on ties), back in eigenvalue
    units, candidates below log10(0.95 p) are skipped and the scan stops above 1.5 p.

    The lower bound is a quirk of the reference (lib/esd_utils.py, ``xmin_min``): a logarithm
    compared with eigenvalues, so it lies far below 0.95 p; when p < 1 / 0.95 it is negative
    and excludes nothing, so the window is in effect every eigenvalue up to 1.5 p. It is kept
    as the reference has it, since `hill_alpha` is meant to reproduce the reference's metric."""
    counts, edges = np.histogram(np.log10(eig), bins=bins)
    peak = 10 ** edges[np.argmax(counts)]
    return float(np.log10(0.95 * peak)), 1.5 * peak


def _peak_alpha(eig: np.ndarray) -> float:
    """`hill_alpha` with ``xmin="peak"`` on ascending positive eigenvalues. As in the reference,
    a skipped candidate counts as alpha 0 at distance 1 and a candidate with alpha <= 1 keeps
    its alpha at distance 1, and the first smallest distance wins, so a spectrum with no
    better fit returns the first entry (0 when the first candidate was skipped)."""
    low, high = _peak_window(eig)
    logs = np.log(eig)
    alphas = np.zeros(len(eig) - 1)
    distances = np.ones(len(eig) - 1)
    for i in range(len(eig) - 1):
        if eig[i] < low:
            continue
        if eig[i] > high:
            break
        n = len(eig) - i
        denominator = logs[i:].sum() - n * logs[i]
        if denominator <= 0:  # ties at the top of the spectrum: no finite fit (the reference divides by 0)
            continue
        alphas[i] = 1 + n / denominator
        if alphas[i] > 1:
            cdf = 1 - (eig[i:] / eig[i]) ** (1 - alphas[i])
            distances[i] = np.max(np.abs(cdf - np.arange(n) / n))
    return float(alphas[np.argmin(distances)])


def block_alphas(model: nn.Module, xmin: Literal["peak", "scan"] = "peak") -> np.ndarray:
    """AlphaPruning's per-block metric: the mean heavy-tail exponent (`hill_alpha` with `xmin`)
    of the eigenvalues of W^T W (the squared singular values of W) over the block's linear
    layers, as the reference averages its per-layer alphas per block (``block_wise`` mapping)."""
    out = []
    for block in range(components.layout(model).n_layers):
        alphas = [
            hill_alpha(torch.linalg.svdvals(components.weight(m).detach().float()).double().cpu().numpy() ** 2, xmin)
            for m in components.linear_layers(model, block).values()
        ]
        out.append(float(np.mean(alphas)))
    return np.array(out)


def alphapruning_sparsities(alphas, sparsity: float, eps: float = 0.3, block_params=None) -> np.ndarray:
    """AlphaPruning's map (`ww_sparsity` in haiquanlu/AlphaPruning, lib/prune.py, with its
    default eps 0.3): block metric mapped linearly onto [1 - eps, 1 + eps] (higher alpha,
    a less trained block, is pruned more), then scaled so that the parameter-weighted mean
    sparsity is `sparsity`. Two cases the reference does not handle: equal metrics give the
    uniform allocation (the reference divides by zero), and where the map would ask more than
    MAX_BLOCK_SPARSITY of a block (high budgets), eps is narrowed to the largest value that
    does not."""
    check_sparsity(sparsity, "global sparsity")
    if sparsity > MAX_BLOCK_SPARSITY:
        raise SparsityError(f"global sparsity {sparsity} exceeds the largest block sparsity {MAX_BLOCK_SPARSITY}")
    a = np.asarray(alphas, dtype=float)
    if not 0 <= eps < 1:
        raise ValueError(f"eps must lie in [0, 1), got {eps}")
    params = np.ones_like(a) if block_params is None else np.asarray(block_params, dtype=float)
    unit = np.zeros_like(a) if np.ptp(a) == 0 else (a - a.min()) / np.ptp(a)

    def at(e):
        ratios = (1 - e) + 2 * e * unit
        return ratios * sparsity * params.sum() / (ratios * params).sum()

    if at(eps).max() > MAX_BLOCK_SPARSITY:  # the largest block sparsity grows with eps: bisect
        low, high = 0.0, eps
        for _ in range(60):
            low, high = (
                ((low + high) / 2, high)
                if at((low + high) / 2).max() <= MAX_BLOCK_SPARSITY
                else (low, (low + high) / 2)
            )
        eps = low
    return at(eps)


def absorption_corrected(base, absorption, strength: float) -> np.ndarray:
    """Our absorption-aware correction: shift sparsity toward the blocks whose perturbation
    the later blocks absorb most, s_l + strength * (q_l - mean q) with q the absorption
    coefficients scaled to [0, 2] (OWL's normalisation), narrowed near the edges like
    `spread`. A NaN coefficient (the last block) counts as the mean of the others. The mean
    sparsity is unchanged; strength 0 returns `base`."""
    base = np.asarray(base, dtype=float)
    a = np.asarray(absorption, dtype=float)
    if np.isnan(a).all():
        raise ValueError("every absorption coefficient is NaN")
    a = np.where(np.isnan(a), np.nanmean(a), a)  # a block without a coefficient is left neutral
    if a.shape != base.shape:
        raise ValueError(f"one absorption coefficient per block is needed, got {a.shape} for {base.shape}")
    if strength < 0:
        raise ValueError(f"strength must be non-negative, got {strength}")
    if np.ptp(a) == 0 or strength == 0:
        return base.copy()
    return _shifted(base, _centred_unit_scores(a), strength)
