"""Replication across training seeds: one claim measured on several models that differ only
in their training seed, pooled into one estimate whose interval includes the seed-to-seed
variance.

A single trained model answers "is this true of this model?"; a claim about a recipe needs
the spread between training runs as well. Each seed gives an estimate with its own 95%
interval (from the sampling of probes, heads or sequences within that model). We pool them
with a random-effects model: the seeds' true values scatter around the recipe's value with
a between-seed variance tau^2, estimated by Paule and Mandel's method (DerSimonian and
Laird's one-step estimator is the option; it understates tau^2 when the seeds' errors are
very unequal, as they are when one seed sits at 100% accuracy). The pooled interval uses
the Hartung-Knapp variance with a t distribution on k - 1 degrees of freedom, floored at
the plain random-effects variance (the "modified" Hartung-Knapp rule of Röver, Knapp and
Friede 2015), so seeds that agree by chance do not give an interval narrower than the
pooled sampling error.

Why not a hierarchical bootstrap (seeds, then probes within a seed)? With three seeds the
outer resampling has only ten distinct multisets of seeds, and percentile intervals from so
few clusters are known to be too narrow; the t interval on two degrees of freedom is wide,
as it should be when three training runs are all there is.

Correlations over heads pool the heads of every seed (`stratified_spearman`): ranks are
taken within each seed, so that a shift between models cannot create a correlation, and
the null distribution permutes within each seed. Its p-value is about the heads of these
models; its interval, pooled over the seeds' correlations, is about the recipe, and with three
seeds it is wide. Two families are compared against the seed variation (`family_difference`):
the difference of their pooled estimates, whose variance adds the two pooled variances, on
Welch-Satterthwaite degrees of freedom. (An exact permutation test of three seeds against
three cannot reach p < 0.05: only 20 relabellings exist.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .stats import cluster_bootstrap_interval, wilson_interval
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
        """The standard error implied by the 95% interval: the longer of its two arms over
        1.96. An asymmetric interval (a bootstrap percentile interval, Wilson's near 0% or
        100%) puts the value off its centre; the longer arm keeps the error from being
        understated on the side where the estimate can still move."""
        if self.ci95 is None:
            raise ValueError(f"{self.model}: a seed's estimate needs its 95% interval to be pooled")
        lo, hi = self.ci95
        if self.value is None:
            return (hi - lo) / (2 * Z95)
        return max(hi - self.value, self.value - lo, 0.0) / Z95


def proportion(model: str, correct: np.ndarray) -> SeedResult:
    """One seed's share of correct answers, with its Wilson 95% interval (the answers are
    treated as independent draws from the capability's probe distribution)."""
    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        raise ValueError(f"{model}: a proportion needs at least one answer")
    return SeedResult(model, float(correct.mean()), wilson_interval(int(correct.sum()), correct.size), correct.size)


def clustered_proportion(
    model: str, correct: np.ndarray, clusters: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> SeedResult:
    """A share of correct answers that come in correlated groups (the four facts of one
    entity), with a bootstrap interval over whole groups. When every answer is right (or
    every one wrong) the bootstrap has nothing to resample; the interval is then Wilson's
    with one draw per group, as if each group were a single answer."""
    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        raise ValueError(f"{model}: a proportion needs at least one answer")
    if correct.all() or not correct.any():
        n_groups = len(np.unique(clusters))
        interval = wilson_interval(n_groups if correct.all() else 0, n_groups)
    else:
        interval = cluster_bootstrap_interval(
            np.mean, correct.astype(float), clusters=clusters, n_resamples=n_resamples, seed=seed
        )
    return SeedResult(model, float(correct.mean()), interval, correct.size)


@dataclass(frozen=True)
class Pooled:
    """The random-effects estimate over seeds (value None: fewer than two seeds estimable)."""

    value: float | None
    ci95: tuple[float, float] | None
    p: float | None  # two-sided, of "the recipe's value is 0"
    tau2: float | None  # between-seed variance
    k: int  # seeds pooled
    se: float | None = None  # standard error of `value`, on t(k - 1)


def _paule_mandel(y: np.ndarray, v: np.ndarray) -> float:
    """The tau^2 at which the generalised Q statistic equals its expectation k - 1 (0 when
    the seeds scatter less than their own errors predict)."""
    k = len(y)

    def excess(tau2: float) -> float:
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / w.sum()
        return float(np.sum(w * (y - mu) ** 2)) - (k - 1)

    if excess(0.0) <= 0:
        return 0.0
    hi = float(np.var(y, ddof=1)) + 1e-12
    while excess(hi) > 0:  # Q falls as tau^2 grows; find a bracket
        hi *= 2
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def _dersimonian_laird(y: np.ndarray, v: np.ndarray) -> float:
    w = 1 / v
    fixed = np.sum(w * y) / w.sum()
    q = float(np.sum(w * (y - fixed) ** 2))
    return max(0.0, (q - (len(y) - 1)) / float(w.sum() - np.sum(w**2) / w.sum()))


TAU2_ESTIMATORS = {"paule-mandel": _paule_mandel, "dersimonian-laird": _dersimonian_laird}


def random_effects(results: Sequence[SeedResult], tau2_method: str = "paule-mandel") -> Pooled:
    """Pool per-seed estimates: tau^2 by `tau2_method` (see `TAU2_ESTIMATORS`), the modified
    Hartung-Knapp interval on t(k - 1)."""
    if tau2_method not in TAU2_ESTIMATORS:
        raise ValueError(f"tau2_method must be one of {sorted(TAU2_ESTIMATORS)}, got {tau2_method!r}")
    usable = [r for r in results if r.value is not None]
    k = len(usable)
    if k < 2:
        return Pooled(None, None, None, None, k)
    y = np.array([r.value for r in usable], dtype=float)
    se = np.array([r.standard_error() for r in usable])
    if not (np.isfinite(y).all() and np.isfinite(se).all()):
        raise ValueError(f"seed estimates must be finite, got values {y.tolist()} and standard errors {se.tolist()}")
    # a zero-width interval would get infinite weight; floor every variance at a tiny share
    # of the values' scale
    v = np.maximum(se**2, 1e-12 * max(1.0, float(np.abs(y).max())) ** 2)
    tau2 = TAU2_ESTIMATORS[tau2_method](y, v)
    w_star = 1 / (v + tau2)
    mu = float(np.sum(w_star * y) / w_star.sum())
    var_hk = float(np.sum(w_star * (y - mu) ** 2) / ((k - 1) * w_star.sum()))
    standard_error = math.sqrt(max(var_hk, float(1 / w_star.sum())))
    half = float(sps.t.ppf(0.975, k - 1)) * standard_error
    p = float(2 * sps.t.sf(abs(mu) / standard_error, k - 1))
    return Pooled(mu, (mu - half, mu + half), p, float(tau2), k, standard_error)


def pool_proportions(results: Sequence[SeedResult]) -> Pooled:
    """`random_effects` for proportions (accuracies), its interval cut to [0, 1], where a
    proportion lives: with three seeds the t(2) interval around an accuracy near 100% can
    reach past it. (`se` is left as pooled, for `family_difference`.)"""
    pooled = random_effects(results)
    if pooled.ci95 is None:
        return pooled
    lo, hi = pooled.ci95
    return Pooled(pooled.value, (max(0.0, lo), min(1.0, hi)), pooled.p, pooled.tau2, pooled.k, pooled.se)


def seed_mean(results: Sequence[SeedResult]) -> Pooled:
    """Pool per-seed values that carry no interval of their own (a point statistic): their
    mean, with a t(k - 1) interval from their spread. Without within-seed errors this is all
    the seeds can say; it is not floored at a sampling error, which is unknown."""
    usable = [r for r in results if r.value is not None]
    k = len(usable)
    if k < 2:
        return Pooled(None, None, None, None, k)
    y = np.array([r.value for r in usable], dtype=float)
    if not np.isfinite(y).all():
        raise ValueError(f"seed estimates must be finite, got {y.tolist()}")
    mu, spread = float(y.mean()), float(y.var(ddof=1))
    standard_error = math.sqrt(spread / k)
    half = float(sps.t.ppf(0.975, k - 1)) * standard_error
    # seeds that agree (to rounding) leave no spread to test against: no p-value
    agree = standard_error <= 1e-9 * max(1.0, abs(mu))
    p = None if agree else float(2 * sps.t.sf(abs(mu) / standard_error, k - 1))
    return Pooled(mu, (mu - half, mu + half), p, spread, k, standard_error)


def stouffer(results: Sequence[SeedResult]) -> float | None:
    """The seeds' two-sided p-values combined with their signs (Stouffer's z: each
    p turned into a z-score signed like its value, summed over sqrt(k)), two-sided. It tests
    whether the seeds together show an effect of one sign, for records that carry a p-value
    (a permutation test) and no interval; None with fewer than two estimable seeds."""
    usable = [r for r in results if r.value is not None and r.p is not None]
    if len(usable) < 2:
        return None
    z = [
        math.copysign(float(sps.norm.isf(max(float(r.p), 1e-300) / 2)), float(r.value))  # type: ignore[arg-type]
        for r in usable
    ]
    combined = sum(z) / math.sqrt(len(z))
    return float(min(1.0, 2 * sps.norm.sf(abs(combined))))


def has_interval(result: SeedResult) -> bool:
    """Whether a seed's interval says anything about its error: present and of positive width
    (a zero-width interval, from a statistic that is constant under resampling, would get
    infinite weight in a random-effects pool)."""
    return result.ci95 is not None and result.ci95[1] > result.ci95[0]


def pool(results: Sequence[SeedResult]) -> Pooled:
    """Pool a claim's per-seed measurements: `random_effects` when every estimable seed has
    an informative interval (`has_interval`), else `seed_mean`. Seeds whose value could not be
    estimated are left out; fewer than two estimable seeds give no pooled value."""
    usable = [r for r in results if r.value is not None]
    if all(has_interval(r) for r in usable):
        return random_effects(usable)
    return seed_mean(usable)


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
    p_recipe: float | None = None  # the same random-effects fit's test of rho = 0 (t on k - 1)


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
    if not all(np.isfinite(np.asarray(v, dtype=float)).all() for v in [*xs, *ys]):
        raise ValueError("x and y must be finite")
    rx = [_centred_ranks(np.asarray(x, dtype=float)) for x in xs]
    ry = [_centred_ranks(np.asarray(y, dtype=float)) for y in ys]
    if any(len(a) != len(b) or len(a) < 4 for a, b in zip(rx, ry, strict=True)):
        raise ValueError("each seed needs x and y of the same length, at least 4 units")
    if any(not np.any(r) for r in rx + ry):
        raise ValueError("a seed's x or y is constant (or not finite): its ranks carry no order to correlate")
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
    p_recipe = pooled.p if pooled is not None else None
    return StratifiedCorrelation(observed, p, (math.tanh(lo), math.tanh(hi)), per_seed, len(x_all), p_recipe)


def fisher_z(r: float) -> float:
    """A correlation on Fisher's z scale (atanh), a perfect one held just inside +-1."""
    return math.atanh(min(max(r, -0.999999), 0.999999))


def _fisher_z(model: str, rho: float, n: int) -> SeedResult:
    """A Spearman rho on Fisher's z scale, with its 95% interval."""
    z = fisher_z(rho)
    half = Z95 * 1.06 / math.sqrt(n - 3)
    return SeedResult(model, z, (z - half, z + half), n)


@dataclass(frozen=True)
class Difference:
    """Family a minus family b, tested against the seed-to-seed variation."""

    value: float
    ci95: tuple[float, float]
    p: float
    df: float


def family_difference(a: Pooled, b: Pooled) -> Difference:
    """The difference of two families' pooled estimates (from `random_effects` or
    `pool_proportions`). Each pooled standard error already holds the seeds' scatter and,
    through its floor, their sampling error; the difference's variance is the sum of the
    two, on Welch-Satterthwaite degrees of freedom."""
    for name, pooled in (("a", a), ("b", b)):
        if pooled.value is None or pooled.se is None or pooled.k < 2:
            raise ValueError(f"family {name}: a family comparison needs a pooled estimate over two seeds or more")
    se_a, se_b = float(a.se), float(b.se)  # type: ignore[arg-type]  # checked above
    diff = float(a.value - b.value)  # type: ignore[operator]  # checked above
    total = math.sqrt(se_a**2 + se_b**2)
    df = total**4 / (se_a**4 / (a.k - 1) + se_b**4 / (b.k - 1))
    t = float(sps.t.ppf(0.975, df))
    p = float(2 * sps.t.sf(abs(diff) / total, df))
    return Difference(diff, (diff - t * total, diff + t * total), p, float(df))
