"""Model phase transitions under compression (Ma et al. 2026), our reconstruction of the fit.

Ma et al. describe perplexity as a function of the compression ratio s as gradual
(power-law) degradation up to a critical ratio s0 followed by exponential collapse. Their
exact parametrisation is not published; we fit, in log-perplexity y = log PPL,

    y(s) = y0 + a * s**b                    for s <= s0   (power law, a >= 0, b >= 1)
    y(s) = y0 + a * s0**b + lam * (s - s0)  for s >  s0   (exponential: PPL ~ e^(lam s))

continuous at s0. For fixed (s0, b) the model is linear in (y0, a, lam), so we profile
over a grid of s0 and b and solve each least-squares problem in closed form, with the
sign constraints enforced by an active-set enumeration. The global optimum on the grid is
found exactly and deterministically: no starting point, no local minima.

A transition counts only if the collapse is steeper than the gradual regime at s0
(lam > dy/ds just left of s0) and the two-regime model beats a single power law on the
Bayesian information criterion; otherwise the curve shows no phase transition within the
measured range and `s0` is None. With five or fewer points the exponent b is fixed at 1
(a two-segment fit), since five parameters cannot be identified from so few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

S0_STEP = 0.001
B_GRID = np.linspace(1.0, 8.0, 29)


class PhaseFitError(ValueError):
    """Input that cannot be fitted: too few points, non-finite or non-positive metric."""


@dataclass(frozen=True)
class PhaseFit:
    """The fitted curve and the critical ratio s0 (None: no transition in range)."""

    s0: float | None
    y0: float
    a: float
    b: float
    lam: float
    rss: float
    ratios: tuple[float, ...]
    bracket: tuple[float, float] | None

    def log_predict(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=float)
        if self.s0 is None:
            return self.y0 + self.a * s**self.b
        gradual = self.y0 + self.a * np.minimum(s, self.s0) ** self.b
        return gradual + self.lam * np.maximum(s - self.s0, 0.0)

    def predict(self, s) -> np.ndarray:
        """The fitted metric (e.g. perplexity) at ratios `s`."""
        return np.exp(self.log_predict(s))


def _validate(ratios, metric) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(ratios, dtype=float)
    m = np.asarray(metric, dtype=float)
    if s.ndim != 1 or s.shape != m.shape:
        raise PhaseFitError(f"ratios and metric must be 1-D of equal length, got {s.shape} and {m.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(s >= 1):
        raise PhaseFitError(f"compression ratios must lie in [0, 1), got {s.tolist()}")
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise PhaseFitError(
            f"the metric must be finite and positive (drop NaN or diverged points first), got {m.tolist()}"
        )
    if len(np.unique(s)) != len(s):
        raise PhaseFitError("compression ratios must be distinct")
    if len(s) < 4:
        raise PhaseFitError(f"a phase-transition fit needs at least 4 points, got {len(s)}")
    order = np.argsort(s)
    return s[order], m[order]


def _profile_rss(s: np.ndarray, y: np.ndarray, s0: np.ndarray, b: float):
    """Best (y0, a, lam) and RSS for each candidate s0 at exponent b, with a, lam >= 0.

    Columns: intercept, gradual term min(s, s0)^b, collapse term max(s - s0, 0).
    The sign constraints are handled by fitting every subset of the two constrained
    columns and keeping the best solution whose coefficients are feasible.
    """
    g = len(s0)
    gradual = np.minimum(s[None, :], s0[:, None]) ** b  # (g, n)
    collapse = np.maximum(s[None, :] - s0[:, None], 0.0)  # (g, n)
    ones = np.ones_like(gradual)
    design = np.stack([ones, gradual, collapse], axis=-1)  # (g, n, 3)
    best_rss = np.full(g, np.inf)
    best_coef = np.zeros((g, 3))
    for active in ((0, 1, 2), (0, 1), (0, 2), (0,)):
        X = design[:, :, active]
        XtX = X.transpose(0, 2, 1) @ X
        Xty = X.transpose(0, 2, 1) @ y
        # a tiny ridge keeps degenerate designs (e.g. s0 below every point) solvable
        coef = np.linalg.solve(XtX + 1e-12 * np.eye(len(active)), Xty[..., None])[..., 0]
        full = np.zeros((g, 3))
        full[:, active] = coef
        feasible = np.all(full[:, 1:] >= -1e-12, axis=1)
        resid = y[None, :] - np.einsum("gnk,gk->gn", design, full)
        rss = np.where(feasible, np.sum(resid**2, axis=1), np.inf)
        better = rss < best_rss - 1e-15
        best_rss[better] = rss[better]
        best_coef[better] = full[better]
    return best_rss, best_coef


def _best_over_b(s, y, s0_grid, b_grid):
    """(rss, s0, b, coef) minimising the RSS over the grids."""
    best = (np.inf, None, None, None)
    for b in b_grid:
        rss, coef = _profile_rss(s, y, s0_grid, b)
        i = int(np.argmin(rss))
        if rss[i] < best[0] - 1e-12:
            best = (float(rss[i]), float(s0_grid[i]), float(b), coef[i])
    return best


def _bic(rss: float, n: int, k: int, floor: float) -> float:
    return n * np.log(max(rss, floor) / n) + k * np.log(n)


def fit_phase_transition(ratios, metric) -> PhaseFit:
    """Fit the piecewise power-law + exponential model to a metric curve (e.g. perplexity
    against sparsity) and locate the critical ratio s0. See the module docstring.

    The piecewise model is preferred over a single power law (no transition) only when
    its collapse is steeper than the gradual regime at s0 and it wins on the Bayesian
    information criterion, so that a smooth curve is not cut in two by noise."""
    s, m = _validate(ratios, metric)
    y = np.log(m)
    n = len(s)
    b_grid = B_GRID if n > 5 else np.array([1.0])
    n_shape = 0 if n <= 5 else 1  # b is a fitted parameter only on the larger grid
    # each regime keeps at least two measured points
    s0_grid = np.arange(s[1], s[-2], S0_STEP)
    if len(s0_grid) == 0:
        s0_grid = np.array([s[1]])
    rss_p, s0, b_p, (y0_p, a_p, lam) = _best_over_b(s, y, s0_grid, b_grid)
    # no transition: the collapse column is zero everywhere when s0 is the largest ratio
    rss_1, _, b_1, (y0_1, a_1, _) = _best_over_b(s, y, np.array([s[-1]]), b_grid)

    floor = 1e-10 * max(float(np.sum((y - y.mean()) ** 2)), 1e-300)
    slope_left = a_p * b_p * s0 ** (b_p - 1)
    piecewise_wins = _bic(rss_p, n, 4 + n_shape, floor) < _bic(rss_1, n, 2 + n_shape, floor)
    if lam > slope_left and piecewise_wins:
        s0 = round(s0, 6)
        bracket = (float(s[s <= s0].max()), float(s[s > s0].min()))
        return PhaseFit(s0, float(y0_p), float(a_p), b_p, float(lam), rss_p, tuple(s.tolist()), bracket)
    return PhaseFit(None, float(y0_1), float(a_1), b_1, 0.0, rss_1, tuple(s.tolist()), None)


def bootstrap_s0(ratios, replicates: np.ndarray, level: float = 0.95) -> tuple[tuple[float, float] | None, float]:
    """Percentile interval of s0 over replicate curves (rows of `replicates`, e.g. the
    metric recomputed on bootstrap resamples of the evaluation set).

    Returns (interval or None, share of replicates that showed a transition)."""
    replicates = np.asarray(replicates, dtype=float)
    if replicates.ndim != 2 or replicates.shape[1] != len(ratios):
        raise PhaseFitError(f"replicates must have shape (B, {len(ratios)}), got {replicates.shape}")
    s0s = []
    for row in replicates:
        fit = fit_phase_transition(ratios, row)
        if fit.s0 is not None:
            s0s.append(fit.s0)
    share = len(s0s) / len(replicates)
    if len(s0s) < 2:
        return None, share
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(s0s, [tail, 100 - tail])
    return (float(lo), float(hi)), share
