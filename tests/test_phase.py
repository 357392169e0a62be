"""The phase-transition detector: it finds planted kinks where they are, flags smooth curves
no more often than its level, says "not identifiable" when the points are too few, and the
verdict rule built on it can fail."""

import numpy as np
import pytest
from scipy import stats

from cgclib.ledger import Ours
from cgclib.paper_values import paper_table, paper_value
from cgclib.phase import (
    ALPHA,
    MIN_POINTS,
    SMOOTH_FAMILIES,
    PhaseFitError,
    fit_phase_transition,
    flagged_share,
    kinked,
    noisy_curves,
)
from cgclib.verdicts import FAILS, HOLDS, INCONCLUSIVE, InRange

FINE = np.round(np.arange(0.30, 0.91, 0.05), 3)  # 13 points, 5% apart
HEAD_GRID = np.array([0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])  # the per-head sweeps' grid


def _kink(s, s0, lam=8.0):
    return np.exp(kinked(s, s0, lam))


@pytest.mark.parametrize("s0", [0.52, 0.58, 0.75, 0.78])
def test_planted_kinks_are_found_within_the_grid_resolution(s0):
    noise = np.exp(np.random.default_rng(int(s0 * 100)).normal(0, 0.01, FINE.size))
    fit = fit_phase_transition(FINE, _kink(FINE, s0) * noise)
    assert fit.outcome == "transition" and fit.p < ALPHA
    spacing = 0.05
    assert abs(fit.s0 - s0) <= spacing
    low, high = fit.interval
    assert low - spacing <= s0 <= high + spacing
    np.testing.assert_allclose(fit.predict(FINE), _kink(FINE, s0), rtol=0.05)


@pytest.mark.parametrize("grid", [FINE, HEAD_GRID], ids=["13 points", "7 points"])
def test_smooth_curves_are_flagged_no_more_often_than_the_level(grid):
    """Across smooth families with 1% noise, the share flagged may exceed the 5% level only
    by what chance allows (the 99th percentile of Binomial(n, 0.05)); the detector this one
    replaced flagged about half of such curves."""
    rng = np.random.default_rng(7)
    curves = np.concatenate([noisy_curves(f, grid, 25, 0.01, rng) for f in SMOOTH_FAMILIES.values()])
    rate = flagged_share(curves, grid)
    allowed = stats.binom.ppf(0.99, len(curves), ALPHA) / len(curves)
    assert rate <= allowed, f"{rate:.0%} of smooth curves flagged; allowed {allowed:.0%}"


def test_a_smooth_curve_without_noise_has_no_transition():
    fit = fit_phase_transition(FINE, np.exp(3 * FINE**2))
    assert fit.outcome == "smooth" and fit.s0 is None and fit.interval is None
    np.testing.assert_allclose(fit.predict(FINE), np.exp(3 * FINE**2), rtol=1e-6)


def test_four_points_cannot_identify_a_transition():
    """Ma et al.'s tables have four points: five parameters cannot be identified from them,
    whatever the curve looks like."""
    for curve in ([5, 6, 8, 20], np.exp(3 * np.array([0.5, 0.6, 0.7, 0.8]) ** 2)):
        fit = fit_phase_transition([0.5, 0.6, 0.7, 0.8], curve)
        assert fit.outcome == "not identifiable" and fit.s0 is None and fit.p is None
    assert MIN_POINTS > 4


def test_the_same_curve_gives_the_same_answer():
    curve = _kink(HEAD_GRID, 0.8) * np.exp(np.random.default_rng(3).normal(0, 0.02, HEAD_GRID.size))
    assert fit_phase_transition(HEAD_GRID, curve) == fit_phase_transition(HEAD_GRID, curve)


def _verdict(fit, low=0.55, high=0.65):
    ours = Ours(value=fit.s0, n=len(fit.ratios), setting="planted", ci95=fit.interval)
    return InRange(low, high, use_ci=True).verdict(ours.measurement())


def test_the_s0_rule_holds_fails_and_abstains():
    rng = np.random.default_rng(11)
    inside = fit_phase_transition(FINE, _kink(FINE, 0.60, lam=20) * np.exp(rng.normal(0, 0.005, FINE.size)))
    outside = fit_phase_transition(FINE, _kink(FINE, 0.78, lam=20) * np.exp(rng.normal(0, 0.005, FINE.size)))
    smooth = fit_phase_transition(FINE, np.exp(3 * FINE**2 + rng.normal(0, 0.01, FINE.size)))
    table = fit_phase_transition([0.5, 0.6, 0.7, 0.8], [5, 6, 8, 20])
    assert _verdict(inside) == HOLDS
    assert _verdict(outside) == FAILS  # a rule that must fail does
    assert _verdict(smooth) == INCONCLUSIVE
    assert _verdict(table) == INCONCLUSIVE


def test_ma_et_al_tables_are_too_short_to_locate_a_transition():
    frame = paper_table("ma.llama2_7b_unstructured_ppl").frame
    assert tuple(paper_value("ma.s0_unstructured").value) == (0.55, 0.65)
    for method in frame.columns:
        curve = frame[method].dropna()
        assert fit_phase_transition(curve.index, curve.values).outcome == "not identifiable", method


@pytest.mark.parametrize(
    "ratios, metric, message",
    [
        ([0.1, 0.2, 0.3, 1.2], [1, 2, 3, 4], r"\[0, 1\)"),
        ([0.1, 0.2, 0.3, 0.4], [1, 2, np.nan, 4], "finite and positive"),
        ([0.1, 0.2, 0.3, 0.4], [1, 2, -3, 4], "finite and positive"),
        ([0.1, 0.1, 0.3, 0.4], [1, 2, 3, 4], "distinct"),
        ([0.1, 0.2], [1, 2, 3], "equal length"),
    ],
)
def test_bad_input_is_named(ratios, metric, message):
    with pytest.raises(PhaseFitError, match=message):
        fit_phase_transition(ratios, metric)


@pytest.mark.parametrize("s0", [0.52, 0.78])
def test_a_kink_beside_an_end_of_the_grid_is_not_placed_inside_it(s0):
    """With one measured point on one side of the kink, the data cannot bound s0 there: the
    interval reaches the measured ratio beyond instead of stopping at the searched range's
    edge, or (one point after the kink) no transition is claimed; either way a claim of
    55-65% cannot hold."""
    grid = np.round(np.arange(0.50, 0.81, 0.05), 3)  # 0.50 ... 0.80
    noise = np.exp(np.random.default_rng(5).normal(0, 0.005, grid.size))
    fit = fit_phase_transition(grid, _kink(grid, s0, lam=20) * noise)
    if fit.outcome == "transition":
        low, high = fit.interval
        assert low <= s0 <= high
    else:
        assert s0 > grid[-2]  # only a kink with a single point after it may go unseen
    assert _verdict(fit) != HOLDS


def test_contiguous_runs_report_the_pieces_not_the_hull():
    from cgclib.phase import contiguous_runs

    grid = np.round(np.arange(0.5, 0.7, 0.01), 2)
    selected = (grid == 0.55) | ((grid >= 0.60) & (grid <= 0.62)) | (grid == 0.69)
    assert contiguous_runs(grid, selected) == [(0.55, 0.55), (0.6, 0.62), (0.69, 0.69)]
    assert contiguous_runs(grid, np.zeros_like(grid, dtype=bool)) == []
