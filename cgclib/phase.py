"""Model phase transitions under compression (Ma et al. 2026): a calibrated detector.

Ma et al. describe a metric (perplexity) against the compression ratio s as gradual
degradation up to a critical ratio s0, then collapse. Their fitting procedure is not
published; this is our reconstruction, built so that its verdicts can fail and its error
rates are known. In log-metric y = log P we compare two models:

    smooth (no transition):  y = c0 + c1 h(s)
    transition at s0:        y = c0 + c1 h(s) + lam (s - s0)_+        (lam > 0)

where h ranges over a dictionary of smooth increasing shapes (power laws s^b, exponentials
e^(ks), the divergence (1 - s)^-p and -log(1 - s)), c1 >= 0, and (x)_+ = max(x, 0). A
transition is a kink: the slope of log P jumps by lam at s0, which no smooth shape of the
dictionary can imitate. For a fixed shape and s0 both models are linear in their
coefficients, so they are fitted exactly by least squares over a grid of shapes and s0.

Detection is a likelihood-ratio test: F = (RSS_smooth - RSS_transition) / RSS_transition,
whose null distribution (the best smooth fit plus Gaussian noise of the residual variance)
is simulated by a parametric bootstrap; a transition is reported when p < alpha. The
simulation plugs in the fitted curve and noise level, so the level is approximate; the
false-positive rate is measured in the tests and the chapter (below alpha in our checks,
also on smooth curves outside the dictionary).

s0 is located by profile likelihood: the 95% interval spans every s0 whose best transition
fit is not worse than the optimum by more than the F(1, n - 5) quantile allows (five
parameters: c0, c1, lam, the shape and s0), from the smallest such s0 to the largest. s0 is
searched in [s_2, s_{n-1}), so that each regime keeps two measured points; an interval that
reaches either end of that range extends to the measured ratio beyond it, where the data
can no longer bound it. With fewer than `MIN_POINTS` points the transition model has
no residual degrees of freedom and s0 is reported as not identifiable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

S0_STEP = 0.01
MIN_POINTS = 6  # five parameters, and at least one residual degree of freedom
ALPHA = 0.05
N_NULL_SIMULATIONS = 99
Outcome = Literal["transition", "smooth", "not identifiable"]


class PhaseFitError(ValueError):
    """Input that cannot be fitted: non-finite or non-positive metric, ratios outside [0, 1)."""


def _power(b: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: s**b


def _exponential(k: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: np.expm1(k * s)


def _divergence(p: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: (1 - s) ** -p - 1


# The smooth dictionary: increasing shapes that are 0 at s = 0.
SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{f"s^{b:g}": _power(b) for b in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)},
    **{f"exp({k:g}s)": _exponential(k) for k in (2.0, 4.0, 8.0, 16.0, 32.0)},
    "-log(1-s)": lambda s: -np.log1p(-s),
    **{f"(1-s)^-{p:g}": _divergence(p) for p in (0.5, 1.0, 2.0, 4.0)},
}


def _shape(name: str, s: np.ndarray, top: float) -> np.ndarray:
    """Shape `name` at s, scaled to 1 at the ratio `top` (for conditioning only)."""
    return SHAPES[name](s) / max(float(SHAPES[name](np.array(top))), 1e-300)


def _shapes(s: np.ndarray) -> np.ndarray:
    """Every shape of the dictionary at s, scaled to 1 at the largest ratio: (shapes, n)."""
    return np.array([_shape(name, s, s.max()) for name in SHAPES])


def _least_squares(design: np.ndarray, y: np.ndarray, constrained: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Best coefficients (..., k, r) and RSS (..., r) of the r curves in the columns of y
    (n, r) on each design (..., n, k), with the columns in `constrained` held >= 0: every
    subset of them is tried and the best feasible solution kept (exact for so few
    constrained columns). All designs and curves are solved together through the normal
    equations: RSS = y'y - (X'y)' b."""
    *batch, n, k = design.shape
    flat = design.reshape(-1, n, k)
    r = y.shape[1]
    yy = np.sum(y**2, axis=0)
    best_rss = np.full((len(flat), r), np.inf)
    best_coef = np.zeros((len(flat), k, r))
    for dropped in range(2 ** len(constrained)):
        gone = {c for i, c in enumerate(constrained) if dropped >> i & 1}
        active = [j for j in range(k) if j not in gone]
        x = flat[..., active]  # (d, n, a)
        inverse = np.linalg.inv(np.swapaxes(x, 1, 2) @ x + 1e-12 * np.eye(len(active)))
        xty = (np.swapaxes(x, 1, 2).reshape(-1, n) @ y).reshape(len(flat), len(active), r)
        coef_active = inverse @ xty
        rss = np.maximum(yy - np.sum(xty * coef_active, axis=1), 0.0)
        coef = np.zeros((len(flat), k, r))
        coef[:, active] = coef_active
        feasible = np.all(coef[:, list(constrained)] >= -1e-12, axis=1)
        better = feasible & (rss < best_rss)
        best_rss = np.where(better, rss, best_rss)
        best_coef = np.where(better[:, None, :], coef, best_coef)
    return best_coef.reshape(*batch, k, r), best_rss.reshape(*batch, r)


def _smooth_designs(s: np.ndarray) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The smooth model's designs: an intercept and one shape, or a non-negative mixture
    of two (so that s^2.5 or e^(5s), between the dictionary's entries, is smooth too).
    Returns the shape names of each design and the designs (d, n, 3); a single shape has a
    zero third column."""
    names = list(SHAPES)
    shapes = _shapes(s)
    zero = np.zeros_like(s)
    terms: list[tuple[str, ...]] = []
    designs = []
    for i, first in enumerate(names):
        terms.append((first,))
        designs.append(np.stack([np.ones_like(s), shapes[i], zero], axis=-1))
        for j in range(i + 1, len(names)):
            terms.append((first, names[j]))
            designs.append(np.stack([np.ones_like(s), shapes[i], shapes[j]], axis=-1))
    return terms, np.array(designs)


@dataclass(frozen=True)
class _Fits:
    """Both models fitted to r curves at once (the observed one and simulated ones)."""

    smooth_rss: np.ndarray  # (r,)
    smooth_fitted: np.ndarray  # (n, r)
    smooth_best: tuple[np.ndarray, np.ndarray]  # per curve: design index, coefficients (r, 3)
    transition_rss: np.ndarray  # (r,) best over shapes and s0
    profile: np.ndarray  # (g, r): best transition RSS at each s0 of the grid
    transition_best: tuple[np.ndarray, np.ndarray, np.ndarray]  # per curve: shape, s0 index, coefficients (r, 3)


def _fit_both(s: np.ndarray, y: np.ndarray, s0_grid: np.ndarray) -> _Fits:
    """The smooth model (mixtures of up to two shapes) and the transition model (one shape
    and a hinge at each s0 of the grid) fitted to every column of y."""
    n, pick = len(s), np.arange(y.shape[1])
    _, smooth_designs = _smooth_designs(s)
    coef, rss = _least_squares(smooth_designs, y, constrained=(1, 2))  # (d, 3, r), (d, r)
    best = np.argmin(rss, axis=0)
    smooth_coef = coef[best, :, pick]  # (r, 3)
    smooth_fitted = np.einsum("rnk,rk->nr", smooth_designs[best], smooth_coef)

    shapes = _shapes(s)
    hinge = np.maximum(s[None, :] - s0_grid[:, None], 0.0)  # (g, n)
    design = np.stack(
        [
            np.ones((len(shapes), len(s0_grid), n)),
            np.broadcast_to(shapes[:, None, :], (len(shapes), len(s0_grid), n)),
            np.broadcast_to(hinge[None], (len(shapes), len(s0_grid), n)),
        ],
        axis=-1,
    )  # (h, g, n, 3)
    t_coef, t_rss = _least_squares(design, y, constrained=(1, 2))  # (h, g, 3, r), (h, g, r)
    profile = t_rss.min(axis=0)  # (g, r)
    shape_index, s0_index = np.unravel_index(t_rss.reshape(-1, y.shape[1]).argmin(axis=0), t_rss.shape[:2])
    return _Fits(
        rss.min(axis=0),
        smooth_fitted,
        (best, smooth_coef),
        profile.min(axis=0),
        profile,
        (shape_index, s0_index, t_coef[shape_index, s0_index, :, pick]),
    )


def _statistic(fits: _Fits, floor: float) -> np.ndarray:
    return (fits.smooth_rss - fits.transition_rss) / np.maximum(fits.transition_rss, floor)


@dataclass(frozen=True)
class PhaseFit:
    """The detector's answer for one curve.

    outcome: "transition", "smooth" (no transition detected at level alpha), or "not
    identifiable" (too few points to tell). For a transition, s0 is the best-fitting
    critical ratio and `interval` its 95% profile-likelihood interval; `p` is the
    bootstrap p-value of the test for a transition (None when not identifiable). The
    fitted curve is c0 + sum_i c_i shape_i(s) (+ lam (s - s0)_+ for a transition), with
    `terms` the shapes' names and `coefficients` (c0, c_1, ..., lam)."""

    outcome: Outcome
    s0: float | None
    interval: tuple[float, float] | None
    p: float | None
    ratios: tuple[float, ...]
    terms: tuple[str, ...] = ()
    coefficients: tuple[float, ...] = ()

    def log_predict(self, s) -> np.ndarray:
        """The fitted log-metric at ratios `s`."""
        if not self.coefficients:
            raise PhaseFitError("a curve that was not identifiable has no fitted model")
        s = np.asarray(s, dtype=float)
        c0, *weights, lam = self.coefficients
        y = np.full_like(s, c0)
        for term, weight in zip(self.terms, weights, strict=True):
            y += weight * _shape(term, s, max(self.ratios))
        return y if self.s0 is None else y + lam * np.maximum(s - self.s0, 0.0)

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
    order = np.argsort(s)
    return s[order], m[order]


def fit_phase_transition(
    ratios, metric, alpha: float = ALPHA, simulations: int = N_NULL_SIMULATIONS, seed: int = 0
) -> PhaseFit:
    """Test a metric curve (e.g. perplexity against sparsity) for a phase transition and
    locate it; see the module docstring. `simulations` null curves calibrate the test
    (seeded: the same curve always gives the same answer)."""
    s, m = _validate(ratios, metric)
    names = list(SHAPES)
    if len(s) < MIN_POINTS:
        return PhaseFit("not identifiable", None, None, None, tuple(s.tolist()))
    y = np.log(m)
    # each regime keeps at least two measured points (s0 in [s[1], s[-2])): a kink with one
    # point on a side cannot be told from curvature at that point
    s0_grid = np.arange(s[1], s[-2] - S0_STEP / 2, S0_STEP)
    observed = _fit_both(s, y[:, None], s0_grid)
    floor = 1e-12 * max(float(np.sum((y - y.mean()) ** 2)), 1e-300)
    statistic = float(_statistic(observed, floor)[0])

    # the null: the best smooth fit plus Gaussian noise with the smooth fit's residual variance
    n = len(s)
    sigma = np.sqrt(max(float(observed.smooth_rss[0]), floor) / (n - 3))
    rng = np.random.default_rng(seed)
    null_curves = observed.smooth_fitted + sigma * rng.standard_normal((n, simulations))
    null_statistics = _statistic(_fit_both(s, null_curves, s0_grid), floor)
    p = float((1 + np.sum(null_statistics >= statistic)) / (simulations + 1))

    ratios = tuple(s.tolist())
    shape_index, s0_index, coefs = observed.transition_best
    c0, c1, lam = (float(c) for c in coefs[0])
    if p >= alpha or lam <= 0:
        terms, _ = _smooth_designs(s)
        design_index, smooth_coef = observed.smooth_best
        chosen = terms[design_index[0]]
        weights = [float(w) for w in smooth_coef[0, 1 : 1 + len(chosen)]]
        return PhaseFit("smooth", None, None, p, ratios, chosen, (float(smooth_coef[0, 0]), *weights, 0.0))
    s0 = float(s0_grid[s0_index[0]])
    profile = observed.profile[:, 0]
    df = n - 5
    inside = s0_grid[profile <= profile.min() * (1 + stats.f.ppf(0.95, 1, df) / df)]
    # where the interval reaches the edge of the identifiable range the data cannot bound it:
    # it extends to the next measured ratio, beyond which a kink would have one point
    low = float(s[0]) if inside.min() <= s0_grid[0] else float(inside.min())
    high = float(s[-1]) if inside.max() >= s0_grid[-1] else float(inside.max())
    interval = (round(low, 6), round(high, 6))
    return PhaseFit("transition", round(s0, 6), interval, p, ratios, (names[shape_index[0]],), (c0, c1, lam))


def flagged_share(curves: np.ndarray, ratios, alpha: float = ALPHA) -> float:
    """Share of curves (rows: metric values at `ratios`) in which a transition is detected:
    on curves without one, the false-positive rate; on curves with one, the power."""
    outcomes = [fit_phase_transition(ratios, row, alpha=alpha, seed=i).outcome for i, row in enumerate(curves)]
    return float(np.mean([o == "transition" for o in outcomes]))


# Log-metric curves without a transition, for measuring the false-positive rate: smooth rises
# of the kinds the literature fits, two of them between the dictionary's entries.
SMOOTH_FAMILIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "power law 3 s^2": lambda s: 3 * s**2,
    "power law 1 + 2 s^2.5": lambda s: 1 + 2 * s**2.5,
    "exponential 1 + 0.05 e^(5s)": lambda s: 1 + 0.05 * np.exp(5 * s),
    "divergence 2 + 0.05 / (1 - s)": lambda s: 2 + 0.05 / (1 - s),
}


def kinked(s, s0: float, lam: float) -> np.ndarray:
    """A log-metric with a planted transition: 2 + s^2, whose slope jumps by `lam` at s0."""
    s = np.asarray(s, dtype=float)
    return 2 + s**2 + lam * np.maximum(s - s0, 0.0)


def noisy_curves(log_metric, ratios, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """n metric curves exp(log_metric(s) + e) at `ratios`, e Gaussian with sd `noise`: (n, len(ratios))."""
    s = np.asarray(ratios, dtype=float)
    return np.exp(log_metric(s)[None, :] + rng.normal(0.0, noise, (n, len(s))))


def smooth_rss(ratios, metric) -> float:
    """The residual sum of squares (in log-metric) of the best smooth fit: how well a curve
    without any transition explains the points."""
    s, m = _validate(ratios, metric)
    return float(_fit_both(s, np.log(m)[:, None], np.array([s[-1]])).smooth_rss[0])


def transition_profile(ratios, metric, s0_grid=None) -> tuple[np.ndarray, np.ndarray]:
    """The best residual sum of squares (in log-metric) of the transition model with its
    kink at each s0 of `s0_grid` (default: every step strictly inside the measured range).
    Where the profile is flat, the points cannot tell those critical ratios apart."""
    s, m = _validate(ratios, metric)
    grid = np.arange(s[0] + S0_STEP, s[-1], S0_STEP) if s0_grid is None else np.asarray(s0_grid, dtype=float)
    return grid, _fit_both(s, np.log(m)[:, None], grid).profile[:, 0]


def contiguous_runs(grid, selected) -> list[tuple[float, float]]:
    """The runs of consecutive selected grid points, as (first, last) pairs: a set of s0
    values with gaps is reported as its pieces, not as its hull."""
    grid, selected = np.asarray(grid, dtype=float), np.asarray(selected, dtype=bool)
    runs, start = [], None
    for i, chosen in enumerate(selected):
        if chosen and start is None:
            start = i
        if start is not None and (not chosen or i == len(grid) - 1):
            end = i if chosen else i - 1
            runs.append((round(float(grid[start]), 6), round(float(grid[end]), 6)))
            start = None
    return runs
