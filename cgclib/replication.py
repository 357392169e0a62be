"""Replication across training seeds: one claim measured on several models that differ only
in their training seed, pooled into one estimate whose interval includes the seed-to-seed
variance.

A single trained model answers "is this true of this model?"; a claim about a recipe needs
the spread between training runs as well. Each seed gives an estimate with its own 95%
interval (from the sampling of probes, heads or sequences within that model). We pool them
with a random-effects model: the seeds' true values scatter around the recipe's value with
a between-seed variance tau^2, estimated by DerSimonian and Laird's moment estimator, and
the pooled interval uses the Hartung-Knapp variance with a t distribution on k - 1 degrees
of freedom, floored at the plain random-effects variance (the "modified" Hartung-Knapp rule
of Röver, Knapp and Friede 2015), so three seeds that agree by chance do not give an interval
narrower than their own sampling error.

Why not a hierarchical bootstrap (seeds, then probes within a seed)? With three seeds the
outer resampling has only ten distinct multisets of seeds, and percentile intervals from so
few clusters are known to be too narrow; the t interval on two degrees of freedom is wide,
as it should be when three training runs are all there is.

Correlations over heads pool the heads of every seed (`stratified_spearman`): ranks are
taken within each seed, so that a shift between models cannot create a correlation, and
the null distribution permutes within each seed. Two families are compared against the seed
variation (`family_difference`): Welch's t test on their per-seed estimates. (An exact
permutation test of three seeds against three cannot reach p < 0.05: only 20 relabellings
exist.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .verdicts import Measurement, Rule

Z95 = float(sps.norm.ppf(0.975))


@dataclass(frozen=True)
class SeedResult:
    """One seed's measurement of a claimed quantity: `model` names the trained model."""

    model: str
    value: float | None
    ci95: tuple[float, float] | None
    n: int
    p: float | None = None

    def measurement(self) -> Measurement:
        return Measurement(value=self.value, ci95=self.ci95, p=self.p)

    def standard_error(self) -> float:
        """The standard error implied by the 95% interval (half its width over 1.96)."""
        if self.ci95 is None:
            raise ValueError(f"{self.model}: a seed's estimate needs its 95% interval to be pooled")
        lo, hi = self.ci95
        return (hi - lo) / (2 * Z95)


@dataclass(frozen=True)
class Pooled:
    """The random-effects estimate over seeds (value None: fewer than two seeds estimable)."""

    value: float | None
    ci95: tuple[float, float] | None
    p: float | None  # two-sided, of "the recipe's value is 0"
    tau2: float | None  # between-seed variance
    k: int  # seeds pooled


def random_effects(results: Sequence[SeedResult]) -> Pooled:
    """Pool per-seed estimates (DerSimonian-Laird tau^2, modified Hartung-Knapp interval)."""
    usable = [r for r in results if r.value is not None]
    k = len(usable)
    if k < 2:
        return Pooled(None, None, None, None, k)
    y = np.array([r.value for r in usable], dtype=float)
    se = np.array([r.standard_error() for r in usable])
    # a zero-width interval (a proportion of 0 or 1 with a degenerate interval) would get
    # infinite weight; floor every variance at a millionth of the values' scale
    v = np.maximum(se**2, 1e-12 * max(1.0, float(np.abs(y).max())) ** 2)
    w = 1 / v
    fixed = float(np.sum(w * y) / w.sum())
    q = float(np.sum(w * (y - fixed) ** 2))
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - np.sum(w**2) / w.sum()))
    w_star = 1 / (v + tau2)
    mu = float(np.sum(w_star * y) / w_star.sum())
    var_hk = float(np.sum(w_star * (y - mu) ** 2) / ((k - 1) * w_star.sum()))
    var = max(var_hk, float(1 / w_star.sum()))
    t = float(sps.t.ppf(0.975, k - 1))
    half = t * math.sqrt(var)
    p = float(2 * sps.t.sf(abs(mu) / math.sqrt(var), k - 1)) if var > 0 else 0.0
    return Pooled(mu, (mu - half, mu + half), p, float(tau2), k)


def seed_verdicts(results: Sequence[SeedResult], rule: Rule) -> list[str]:
    """Each seed's own verdict under `rule`."""
    return [rule.verdict(r.measurement()) for r in results]


@dataclass(frozen=True)
class StratifiedCorrelation:
    """A Spearman correlation over the units (heads) of several seeds."""

    rho: float  # pooled: the Pearson correlation of within-seed ranks
    p: float  # permutations within each seed
    ci95: tuple[float, float]  # random effects over the seeds' Fisher-z correlations
    per_seed: tuple[float, ...]
    n: int


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    r = sps.rankdata(v) / (len(v) + 1)
    return r - r.mean()


def stratified_spearman(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], n_permutations: int = 999, seed: int = 0
) -> StratifiedCorrelation:
    """Correlation of x and y over the pooled units of all seeds, ranked within seed.

    p: the share of `n_permutations` within-seed shuffles of y (plus the observed one) whose
    correlation is at least as far from 0 as the observed. ci95: the seeds' Spearman rhos
    pooled on Fisher's z scale (standard error 1.06 / sqrt(n - 3), Fieller, Hartley and
    Pearson 1957) by `random_effects`, so that it includes the seed-to-seed variance."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("give x and y for the same seeds, at least one")
    rx = [_centred_ranks(np.asarray(x, dtype=float)) for x in xs]
    ry = [_centred_ranks(np.asarray(y, dtype=float)) for y in ys]
    if any(len(a) != len(b) or len(a) < 4 for a, b in zip(rx, ry, strict=True)):
        raise ValueError("each seed needs x and y of the same length, at least 4 units")
    x_all = np.concatenate(rx)
    norm_x = np.linalg.norm(x_all)

    def correlation(parts: list[np.ndarray]) -> float:
        y_all = np.concatenate(parts)
        return float(x_all @ y_all / (norm_x * np.linalg.norm(y_all)))

    observed = correlation(ry)
    rng = np.random.default_rng(seed)
    null = np.array([correlation([rng.permutation(r) for r in ry]) for _ in range(n_permutations)])
    p = float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (n_permutations + 1))
    per_seed = tuple(float(sps.spearmanr(a, b)[0]) for a, b in zip(rx, ry, strict=True))
    z = [_fisher_z(f"seed {i}", r, len(a)) for i, (r, a) in enumerate(zip(per_seed, rx, strict=True))]
    pooled = random_effects(z) if len(z) >= 2 else None
    lo, hi = pooled.ci95 if pooled is not None and pooled.ci95 is not None else z[0].ci95  # type: ignore[misc]
    return StratifiedCorrelation(observed, p, (math.tanh(lo), math.tanh(hi)), per_seed, len(x_all))


def _fisher_z(model: str, rho: float, n: int) -> SeedResult:
    """A Spearman rho on Fisher's z scale, with its 95% interval."""
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    half = Z95 * 1.06 / math.sqrt(n - 3)
    return SeedResult(model, z, (z - half, z + half), n)


@dataclass(frozen=True)
class Difference:
    """Family a minus family b, tested against the seed-to-seed variation."""

    value: float
    ci95: tuple[float, float]
    p: float
    k: tuple[int, int]


def family_difference(a: Sequence[SeedResult], b: Sequence[SeedResult]) -> Difference:
    """Welch's t test on the per-seed estimates of two families (two seeds each at least)."""
    va = [r.value for r in a if r.value is not None]
    vb = [r.value for r in b if r.value is not None]
    if len(va) < 2 or len(vb) < 2:
        raise ValueError(f"a family comparison needs two estimable seeds per family, got {len(va)} and {len(vb)}")
    test = sps.ttest_ind(va, vb, equal_var=False)
    ci = test.confidence_interval(0.95)
    return Difference(
        float(np.mean(va) - np.mean(vb)), (float(ci.low), float(ci.high)), float(test.pvalue), (len(va), len(vb))
    )
