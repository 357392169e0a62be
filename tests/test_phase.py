"""The phase-transition fit: it recovers known transitions, declines what it cannot fit,
and places the transition of Ma et al.'s own LLaMA-2-7B table where they place it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cgclib.paper_values import paper_table, paper_value
from cgclib.phase import S0_STEP, PhaseFitError, bootstrap_s0, fit_phase_transition

GRID = np.round(np.linspace(0.0, 0.9, 19), 3)


def _curve(s, y0=1.5, a=1.0, b=2.0, lam=30.0, s0=0.6):
    return np.exp(y0 + a * np.minimum(s, s0) ** b + lam * np.maximum(s - s0, 0))


@settings(max_examples=25, deadline=None)
@given(s0=st.floats(0.15, 0.75), b=st.floats(1.0, 6.0), lam=st.floats(8.0, 60.0), a=st.floats(0.0, 2.0))
def test_recovers_a_noise_free_transition(s0, b, lam, a):
    fit = fit_phase_transition(GRID, _curve(GRID, a=a, b=b, lam=lam, s0=s0))
    assert fit.s0 is not None
    assert abs(fit.s0 - s0) < 0.02
    assert fit.bracket[0] <= fit.s0 <= fit.bracket[1]
    np.testing.assert_allclose(fit.predict(GRID), _curve(GRID, a=a, b=b, lam=lam, s0=s0), rtol=0.05)


def test_a_smooth_curve_has_no_transition():
    fit = fit_phase_transition(GRID, np.exp(1.0 + 0.5 * GRID))
    assert fit.s0 is None and fit.bracket is None


def test_noise_moves_s0_by_little():
    rng = np.random.default_rng(0)
    fits = [fit_phase_transition(GRID, _curve(GRID) * np.exp(rng.normal(0, 0.05, GRID.size))).s0 for _ in range(10)]
    assert np.all(np.abs(np.array(fits) - 0.6) < 0.05)


def test_bootstrap_interval_covers_the_truth():
    rng = np.random.default_rng(1)
    replicates = _curve(GRID)[None, :] * np.exp(rng.normal(0, 0.05, (40, GRID.size)))
    interval, share = bootstrap_s0(GRID, replicates)
    assert share == 1.0
    assert interval[0] <= 0.6 <= interval[1]


@pytest.mark.parametrize(
    "ratios, metric, message",
    [
        ([0.1, 0.2, 0.3], [1, 2, 3], "at least 4"),
        ([0.1, 0.2, 0.3, 1.2], [1, 2, 3, 4], r"\[0, 1\)"),
        ([0.1, 0.2, 0.3, 0.4], [1, 2, np.nan, 4], "finite and positive"),
        ([0.1, 0.2, 0.3, 0.4], [1, 2, -3, 4], "finite and positive"),
        ([0.1, 0.1, 0.3, 0.4], [1, 2, 3, 4], "distinct"),
    ],
)
def test_bad_input_is_named(ratios, metric, message):
    with pytest.raises(PhaseFitError, match=message):
        fit_phase_transition(ratios, metric)


def test_ma_et_al_wanda_table_lands_in_their_unstructured_range():
    """Fitted to the LLaMA-2-7B Wanda perplexities they report, the transition must land in
    the 55-65% range Ma et al. give for unstructured pruning, up to the resolution of the
    table: half its 10-point spacing on either side."""
    frame = paper_table("ma.llama2_7b_unstructured_ppl").frame
    low, high = paper_value("ma.s0_unstructured").value
    half_spacing = np.diff(frame.index).min() / 2
    for method in ("wanda", "sparsegpt"):
        curve = frame[method].dropna()
        fit = fit_phase_transition(curve.index, curve.values)
        assert fit.s0 is not None, method
        assert low - half_spacing - S0_STEP <= fit.s0 <= high + half_spacing, (method, fit.s0)
        assert fit.bracket[0] <= high and fit.bracket[1] >= low
