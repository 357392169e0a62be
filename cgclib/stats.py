"""Uncertainty for the numbers the book reports: confidence intervals, permutation tests,
equivalence bounds and power. Thin wrappers over `scipy.stats`, with the seed explicit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (exact-match accuracy over n probes)."""
    if n < 1:
        raise ValueError("a proportion needs at least one trial")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(
    statistic,
    *samples,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    paired: bool = True,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*samples)`, resampling observations
    (jointly across samples when `paired`). A `vectorized` statistic takes an `axis`
    argument and is computed for all resamples at once (the resamples are the same)."""
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        paired=paired,
        vectorized=vectorized,
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def cluster_bootstrap_interval(
    statistic,
    *samples,
    clusters,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(*samples)` that resamples whole clusters:
    `clusters` labels each observation (e.g. the sequence a token belongs to), a resample
    draws as many clusters as there are, with replacement, and keeps every observation of
    each drawn cluster (rows of all samples jointly). Observations of one cluster are
    correlated (the tokens of one text), so resampling them one by one understates the
    variance; this does not. With one observation per cluster, labelled 0..n-1 in order,
    it draws the same resamples as `bootstrap_interval` with the same seed."""
    clusters = np.asarray(clusters)
    samples = tuple(np.asarray(s) for s in samples)
    if clusters.ndim != 1 or not samples or any(len(s) != len(clusters) for s in samples):
        raise ValueError("give one cluster label per observation, for samples of equal length")
    labels, inverse = np.unique(clusters, return_inverse=True)
    if len(labels) < 2:
        raise ValueError("a cluster bootstrap needs at least two clusters")
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])

    def resampled(chosen: np.ndarray) -> float:
        rows = np.concatenate([members[c] for c in chosen.astype(int)])
        return statistic(*(s[rows] for s in samples))

    return bootstrap_interval(resampled, np.arange(len(labels)), n_resamples=n_resamples, seed=seed, level=level)


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its bootstrap interval and permutation p-value."""

    rho: float
    ci95: tuple[float, float]
    p: float
    n: int


def spearman(x, y, n_resamples: int = 2000, seed: int = 0) -> Correlation:
    """Spearman's rho, a 95% percentile-bootstrap CI over pairs, and a two-sided
    permutation p-value (no assumption of normality or of large n)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) < 4:
        raise ValueError(f"a rank correlation needs at least 4 pairs, got {len(x)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("a rank correlation is undefined when one variable is constant")

    rho = float(stats.spearmanr(x, y).statistic)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample can be constant; its rho counts as 0
        ci = bootstrap_interval(
            lambda a, b, axis=-1: np.nan_to_num(_spearman_rows(a, b)),
            x,
            y,
            n_resamples=n_resamples,
            seed=seed,
            vectorized=True,
        )
        perm = stats.permutation_test(
            (x, y),
            lambda a, b, axis=-1: _spearman_rows(a, b),
            permutation_type="pairings",
            n_resamples=n_resamples,
            vectorized=True,
            alternative="two-sided",
            random_state=np.random.default_rng(seed + 1),
        )
    return Correlation(rho, ci, float(perm.pvalue), len(x))


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis (average ranks for ties): the Pearson correlation
    of the ranks, for every resample at once."""
    ra, rb = stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    return (ra * rb).sum(-1) / np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))


def permutation_p(
    observed: float, null, alternative: Literal["greater", "less", "two-sided", "doubled"] = "two-sided"
) -> float:
    """Monte-Carlo permutation p-value (1 + k) / (1 + n) of a statistic `observed` given n
    values of it under permutation, `null`, of which k are at least as extreme: at least
    `observed` ("greater"), at most ("less"), or at least as large in absolute value
    ("two-sided", for a statistic whose null is symmetric about 0, such as a correlation).
    "doubled" is twice the smaller one-sided p-value, capped at 1: the two-sided test for a
    null of any shape (a skewed null makes distance from its centre the wrong measure).
    Counting the observed arrangement as one of the permutations keeps the test exact and
    the p-value above 0 (Phipson & Smyth 2010). Values within rounding (1e-12 relative) of
    `observed` count as ties, hence as extreme."""
    if alternative == "doubled":
        one_sided = min(permutation_p(observed, null, "greater"), permutation_p(observed, null, "less"))
        return min(1.0, 2 * one_sided)
    null = np.asarray(null, dtype=float).reshape(-1)
    tolerance = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        extreme = null >= observed - tolerance
    elif alternative == "less":
        extreme = null <= observed + tolerance
    elif alternative == "two-sided":
        extreme = np.abs(null) >= abs(observed) - tolerance
    else:
        raise ValueError(f"alternative must be 'greater', 'less', 'two-sided' or 'doubled', got {alternative!r}")
    return float((1 + extreme.sum()) / (1 + len(null)))


def partial_spearman(x, y, z, n_resamples: int = 2000, seed: int = 0) -> Correlation:
    """Spearman's rho of x and y controlling for z (one covariate, or one per column of a
    2-D z): the Pearson correlation of the residuals of rank(x) and rank(y) after a least
    squares fit on the ranks of the covariates, with an intercept.

    The 95% CI is a percentile bootstrap over items: each resample draws rows with
    replacement and ranks and fits them anew. The two-sided p-value permutes the residuals
    of rank(y) (Freedman & Lane 1983): under no partial association they are exchangeable,
    each permutation is fitted on the covariates again, and its correlation with the
    residuals of rank(x) is one draw of the null (`permutation_p`). Seeds as in `spearman`.
    A resample in which a residual is constant counts as rho = 0."""
    x, y, z = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(z, dtype=float)
    z = z[:, None] if z.ndim == 1 else z
    if x.shape != y.shape or x.ndim != 1 or z.ndim != 2 or len(z) != len(x):
        raise ValueError(
            f"x and y must be 1-D of equal length n and z (n,) or (n, k), got {x.shape}, {y.shape}, {z.shape}"
        )
    if len(x) < z.shape[1] + 4:
        raise ValueError(
            f"a partial rank correlation on {z.shape[1]} covariate(s) needs at least {z.shape[1] + 4} items"
        )
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("a rank correlation is undefined when one variable is constant")
    rx, ry = _rank_residuals(x, z), _rank_residuals(y, z)
    if not (np.abs(rx).max() > 1e-9 * len(x) and np.abs(ry).max() > 1e-9 * len(x)):
        raise ValueError("a partial rank correlation is undefined when x or y is a function of the ranks of z")
    rho = float(_pearson_rows(rx, ry))

    def resampled(rows: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = rows.astype(int)
        return np.nan_to_num(_pearson_rows(_rank_residuals(x[rows], z[rows]), _rank_residuals(y[rows], z[rows])))

    n = len(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ci = bootstrap_interval(resampled, np.arange(n), n_resamples=n_resamples, seed=seed, vectorized=True)
    rng = np.random.default_rng(seed + 1)
    permuted = ry[rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)]
    null = _pearson_rows(rx, permuted - _fitted(permuted, stats.rankdata(z, axis=0)))
    return Correlation(rho, ci, permutation_p(rho, null, "two-sided"), n)


def _rank_residuals(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of the ranks of v (..., n) after least squares on the ranks of the
    covariates z (..., n, k) and an intercept, for every resample at once."""
    ranks = stats.rankdata(v, axis=-1)
    return ranks - _fitted(ranks, stats.rankdata(z, axis=-2))


def _fitted(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Least-squares fitted values of v (..., n) on z (..., n, k) and an intercept (the
    pseudo-inverse copes with a covariate that a resample leaves constant)."""
    design = np.concatenate([np.ones((*z.shape[:-1], 1)), z], axis=-1)
    coef = np.linalg.pinv(design, rtol=1e-10) @ v[..., None]
    return (design @ coef)[..., 0]


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's correlation along the last axis."""
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def correlation_power(rho: float, n: int, alpha: float = 0.05) -> float:
    """Approximate power of a two-sided test of zero correlation to detect a true
    correlation `rho` with n pairs (Fisher z; for Spearman the variance is inflated by the
    usual factor 1.06)."""
    if n < 5:
        raise ValueError("power needs at least 5 pairs")
    se = np.sqrt(1.06 / (n - 3))
    z = np.arctanh(abs(rho)) / se
    crit = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.sf(crit - z) + stats.norm.cdf(-crit - z))


def pairs_for_power(rho: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """The fewest pairs with which that test reaches `power` against a true correlation `rho`
    (the inverse of `correlation_power` in n)."""
    if not 0 < abs(rho) < 1:
        raise ValueError(f"rho must lie strictly between -1 and 1 and differ from 0, got {rho}")
    if not alpha < power < 1:
        raise ValueError(f"power must lie in ({alpha}, 1), got {power}")
    if correlation_power(rho, 5, alpha) >= power:
        return 5
    return int(np.ceil(optimize.brentq(lambda n: correlation_power(rho, n, alpha) - power, 5, 1e9)))
