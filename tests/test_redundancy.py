"""Numerical checks of the density chapter's theorems on random and adversarial usage
distributions (hypothesis), and the counterexamples the chapter states."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cgclib.density import FeatureStats, combine, feature_breadth
from cgclib.redundancy import (
    binary_entropy,
    breadth_of,
    critical_ratio,
    features_needed,
    pointwise_counterexamples,
    redundancy_bound,
    structural_redundancy,
    typical_change,
)
from cgclib.verdicts import FAILS, HOLDS, InRange, Measurement

sizes = st.sampled_from([4, 16, 64, 128, 512])
eps_values = st.floats(0.0, 0.5)


@st.composite
def usage(draw):
    """Usage masses from several families, including adversarial ones: one dominant
    feature, dead features, power laws, near-uniform, Dirichlet with tiny concentration."""
    m = draw(sizes)
    kind = draw(st.sampled_from(["dirichlet", "spike", "dead", "power", "uniform", "two_level"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "dirichlet":
        mass = rng.dirichlet(np.full(m, draw(st.floats(0.01, 10.0))))
    elif kind == "spike":
        mass = np.full(m, draw(st.floats(1e-6, 1.0)))
        mass[rng.integers(m)] = 1.0
    elif kind == "dead":
        mass = rng.random(m) * (rng.random(m) < draw(st.floats(0.05, 1.0)))
        mass[rng.integers(m)] += 1.0
    elif kind == "power":
        mass = np.arange(1, m + 1, dtype=float) ** -draw(st.floats(0.0, 4.0))
    elif kind == "uniform":
        mass = np.ones(m)
    else:
        n_high = draw(st.integers(1, m))
        mass = np.where(np.arange(m) < n_high, 1.0, draw(st.floats(0.0, 1.0)))
    return mass


@settings(max_examples=300, deadline=None)
@given(mass=usage(), eps=eps_values)
def test_theorem_breadth_bounds_redundancy(mass, eps):
    m = len(mass)
    r = structural_redundancy(mass, eps)
    assert 0.0 <= r <= 1.0 - 1.0 / m + 1e-12
    assert r <= redundancy_bound(breadth_of(mass), m, eps) + 1e-9


@settings(max_examples=200, deadline=None)
@given(mass=usage(), tau=st.floats(0.0, 0.99))
def test_lemma_informed_critical_ratio_is_the_redundancy(mass, tau):
    # Both functions allow 1e-12 of rounding in their partial sums, which they add up in
    # opposite orders; a share of 1e-12 (found by Hypothesis: [1, 1e-12, 1e-12, 1e-12] at
    # tau = 0) sits on that tolerance and may fall either side. Shares that small are left out.
    usage = mass / mass.sum()
    assume(not np.any((usage > 0) & (usage < 1e-9)))
    assert critical_ratio(mass, tau, "informed") == pytest.approx(structural_redundancy(mass, tau))


@settings(max_examples=200, deadline=None)
@given(mass=usage(), eps=eps_values, e=st.floats(0.0, 1.0), c=st.floats(0.0, 1.0))
def test_corollary_density_bounds_the_critical_ratio(mass, eps, e, c):
    """Geometric density D satisfies B >= D^3, so s0 <= 1 - kappa * D^3."""
    m = len(mass)
    d = combine(breadth_of(mass), e, c, "geometric")
    kappa = math.exp(-binary_entropy(eps)) * m ** (-eps)
    assert critical_ratio(mass, eps, "informed") <= 1 - kappa * d**3 + 1e-9


@settings(max_examples=100, deadline=None)
@given(mass=usage())
def test_breadth_definitions_agree_with_the_density_module(mass):
    assert breadth_of(mass) == pytest.approx(feature_breadth(torch.tensor(mass), method="entropy"))
    assert 1.0 / len(mass) - 1e-12 <= breadth_of(mass) <= 1.0 + 1e-12


def test_counterexample_higher_density_with_higher_redundancy():
    """Density is not monotone in redundancy: component A is denser than B yet more
    redundant, because density also rewards per-input spread, which redundancy ignores."""
    m, eps = 128, 0.1
    a = np.where(np.arange(m) < m // 2, 1.0, 0.0)  # half the features, used evenly
    b = np.ones(m)  # every feature, used evenly
    d_a = combine(breadth_of(a), 1.0, 1.0)  # each input spreads over k features
    d_b = combine(breadth_of(b), 0.3, 1.0)  # each input is carried by one or two
    assert d_a > d_b
    assert structural_redundancy(a, eps) > structural_redundancy(b, eps)


@settings(max_examples=50, deadline=None)
@given(mass=usage(), tau=st.floats(0.0, 0.5))
def test_no_removal_order_outlasts_the_informed_one(mass, tau):
    """The critical-ratio bound holds for random removal too: s0(random) <= R_tau."""
    informed = critical_ratio(mass, tau, "informed")
    assert critical_ratio(mass, tau, "random", rng=np.random.default_rng(0), n_draws=20) <= informed + 1e-12


def test_random_removal_collapses_early_on_concentrated_usage():
    tau = 0.2
    spike = np.full(128, 0.1 / 127)
    spike[0] = 0.9
    uniform = np.ones(128)
    s_spike = critical_ratio(spike, tau, "random", rng=np.random.default_rng(0), n_draws=400)
    assert critical_ratio(spike, tau) > 0.95 and s_spike < 0.6
    assert critical_ratio(uniform, tau, "random", rng=np.random.default_rng(0)) == pytest.approx(
        critical_ratio(uniform, tau), abs=1e-9
    )


def test_low_breadth_does_not_force_high_redundancy():
    """The bound is one-sided: one dominant feature and a flat tail gives low breadth and
    still low redundancy."""
    mass = np.concatenate([[0.5], np.full(127, 0.5 / 127)])
    assert breadth_of(mass) < 0.2
    assert structural_redundancy(mass, 0.1) < 0.25


def test_features_needed_edge_cases():
    assert features_needed([1, 0, 0, 0], 0.0) == 1
    assert features_needed([1, 1, 1, 1], 0.0) == 4
    assert features_needed([1, 1, 1, 1], 0.25) == 3
    with pytest.raises(ValueError):
        features_needed([0, 0], 0.1)
    with pytest.raises(ValueError):
        redundancy_bound(0.5, 16, 0.6)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.sampled_from([8, 32, 128]), k=st.integers(2, 8), n=st.integers(2, 300))
def test_density_terms_lie_in_the_unit_interval_for_any_codes(seed, m, k, n):
    assume(k <= m)
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, m))
    for row in codes:
        active = rng.choice(m, size=rng.integers(1, k + 1), replace=False)
        row[active] = rng.exponential(size=len(active)) ** rng.uniform(0.1, 5)
    stats = FeatureStats(m, k)
    stats.update(torch.tensor(codes[: n // 2]))
    stats.update(torch.tensor(codes[n // 2 :]))
    for consistency in ("split_half", "code_overlap"):
        from cgclib.density import DensityOptions

        terms = stats.terms(DensityOptions(consistency=consistency))
        assert all(0.0 <= v <= 1.0 for v in terms.values()), terms


def test_consistency_compares_whole_batches_of_sequences():
    """Halves are batches, not interleaved tokens: two batches that use disjoint features
    are fully inconsistent, and a single batch cannot be split."""
    first, second = torch.zeros(6, 8), torch.zeros(6, 8)
    first[:, 0:2], second[:, 4:6] = 1.0, 1.0
    stats = FeatureStats(8, 2)
    stats.update(first)
    with pytest.raises(ValueError, match="at least two batches"):
        stats.terms()
    stats.update(second)
    assert stats.terms()["consistency"] == pytest.approx(0.0, abs=1e-12)
    stats.update(first)
    stats.update(second)
    assert stats.terms()["consistency"] == pytest.approx(0.0, abs=1e-12)


def _pointwise_verdict(density, redundancy, d_margin=0.0, r_margin=0.0):
    """The chapter's test of the pointwise claim on measured heads: the share of contradicting
    pairs, judged by InRange(0, 0)."""
    n = np.shape(density)[-1]
    share = len(pointwise_counterexamples(density, redundancy, d_margin, r_margin)) / (n * (n - 1) / 2)
    return InRange(0.0, 0.0).judge(Measurement(share))


def test_pointwise_test_holds_when_density_orders_redundancy_and_fails_on_a_planted_pair():
    density = np.array([[0.40, 0.50, 0.60, 0.70], [0.41, 0.52, 0.59, 0.71]])
    redundancy = np.array([[0.90, 0.85, 0.80, 0.75], [0.91, 0.84, 0.80, 0.74]])
    assert len(pointwise_counterexamples(density, redundancy)) == 0
    assert _pointwise_verdict(density, redundancy) == HOLDS
    planted = redundancy.copy()
    planted[:, 3] = 0.95  # the densest head is also the most redundant, in every training
    pairs = pointwise_counterexamples(density, planted, 0.02, 0.02)
    assert sorted(map(tuple, pairs)) == [(3, 0), (3, 1), (3, 2)]  # denser head first
    assert _pointwise_verdict(density, planted, 0.02, 0.02) == FAILS


def test_pointwise_counterexamples_need_every_measurement_and_the_margins():
    density = np.array([[0.5, 0.6], [0.5, 0.6]])
    redundancy = np.array([[0.80, 0.90], [0.80, 0.70]])  # contradicts in one training only
    assert len(pointwise_counterexamples(density[:1], redundancy[:1])) == 1
    assert len(pointwise_counterexamples(density, redundancy)) == 0
    both = np.array([[0.80, 0.90], [0.80, 0.85]])
    assert len(pointwise_counterexamples(density, both)) == 1
    assert len(pointwise_counterexamples(density, both, redundancy_margin=0.05)) == 0  # 0.05 is not > 0.05
    assert len(pointwise_counterexamples(density, both, density_margin=0.1)) == 0
    ties = np.array([[0.8, 0.8], [0.8, 0.8]])
    assert len(pointwise_counterexamples(density, ties)) == 0  # equal redundancy contradicts nothing
    assert pointwise_counterexamples([0.5, 0.6], [0.8, 0.9]).tolist() == [[1, 0]]  # one measurement, 1-D
    with pytest.raises(ValueError, match="same shape"):
        pointwise_counterexamples(density, redundancy[:1])
    with pytest.raises(ValueError, match="non-negative"):
        pointwise_counterexamples(density, redundancy, density_margin=-0.1)


def test_typical_change_is_the_median_absolute_change():
    assert typical_change([0.0, 1.0, 2.0], [[0.1, 1.0, 2.5]]) == pytest.approx(0.1)
    assert typical_change([0.0, 0.0], [[1.0, 1.0], [0.0, 0.0]]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        typical_change([0.0, 1.0], [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError):
        typical_change([0.0, 1.0], np.empty((0, 2)))
