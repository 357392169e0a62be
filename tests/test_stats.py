"""Intervals and tests: coverage on known distributions, agreement with closed forms."""

import numpy as np
import pytest

from cgclib.stats import (
    bootstrap_interval,
    cluster_bootstrap_interval,
    correlation_power,
    pairs_for_power,
    partial_spearman,
    permutation_p,
    spearman,
    wilson_interval,
)


def test_wilson_interval_matches_the_closed_form():
    k, n, z = 45, 50, 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0)


def test_spearman_detects_a_monotone_relation_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    strong = spearman(x, np.exp(x) + 0.01 * rng.normal(size=60), n_resamples=500)
    assert strong.rho > 0.95 and strong.p < 0.01 and strong.ci95[0] > 0.8
    null = spearman(x, rng.normal(size=60), n_resamples=500)
    assert null.ci95[0] < 0 < null.ci95[1] or abs(null.rho) < 0.3
    assert null.p > 0.01


def test_spearman_refuses_degenerate_input():
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 2, 3, 4], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="at least 4"):
        spearman([1, 2, 3], [3, 2, 1])


def test_bootstrap_interval_covers_the_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, size=400)
    lo, hi = bootstrap_interval(np.mean, x, n_resamples=1000)
    assert lo < 3.0 < hi and hi - lo < 0.3


def test_cluster_bootstrap_is_the_ordinary_one_for_clusters_of_one():
    x = np.random.default_rng(2).normal(size=50)
    ordinary = bootstrap_interval(np.mean, x, n_resamples=500, seed=3)
    assert cluster_bootstrap_interval(np.mean, x, clusters=np.arange(50), n_resamples=500, seed=3) == ordinary


def test_cluster_bootstrap_widens_with_correlation_within_clusters():
    """20 sequences of 30 tokens that share their sequence's value: the token bootstrap
    treats 600 observations as independent, the cluster bootstrap sees 20, and only its
    interval covers the true mean (0) at a width of about 4 / sqrt(20)."""
    rng = np.random.default_rng(4)
    clusters = np.repeat(np.arange(20), 30)
    x = rng.normal(size=20)[clusters] + 0.1 * rng.normal(size=600)
    lo_t, hi_t = bootstrap_interval(np.mean, x, n_resamples=1000)
    lo_c, hi_c = cluster_bootstrap_interval(np.mean, x, clusters=clusters, n_resamples=1000)
    assert hi_c - lo_c > 3 * (hi_t - lo_t)
    assert lo_c < 0 < hi_c and 0.5 < hi_c - lo_c < 1.3


def test_cluster_bootstrap_resamples_samples_jointly_and_checks_its_input():
    clusters = np.repeat(np.arange(10), 3)
    x = np.arange(30.0)
    lo, hi = cluster_bootstrap_interval(lambda a, b: float(np.mean(a - b)), x, x, clusters=clusters, n_resamples=50)
    assert lo == hi == 0  # paired rows: the difference is zero in every resample
    with pytest.raises(ValueError, match="one cluster label"):
        cluster_bootstrap_interval(np.mean, x, clusters=clusters[:-1])
    with pytest.raises(ValueError, match="two clusters"):
        cluster_bootstrap_interval(np.mean, x, clusters=np.zeros(30))


def test_power_grows_with_n_and_effect():
    assert correlation_power(0.3, 384) > 0.99
    assert correlation_power(0.3, 48) < correlation_power(0.3, 96) < correlation_power(0.5, 96)
    assert correlation_power(0.0, 100) == pytest.approx(0.05, abs=1e-3)


def test_pairs_for_power_inverts_the_power():
    n = pairs_for_power(0.3)
    assert correlation_power(0.3, n) >= 0.8 > correlation_power(0.3, n - 1)
    assert pairs_for_power(0.99) == 5  # the smallest sample the approximation allows
    with pytest.raises(ValueError, match="between -1 and 1"):
        pairs_for_power(0.0)


def test_permutation_p_counts_the_observed_arrangement():
    null = [-3.0, -1.0, 0.0, 1.0, 2.0]
    assert permutation_p(2.0, null, "greater") == pytest.approx(2 / 6)
    assert permutation_p(-1.0, null, "less") == pytest.approx(3 / 6)
    assert permutation_p(2.0, null, "two-sided") == pytest.approx(3 / 6)  # abs: 2, 3
    assert permutation_p(5.0, null, "greater") == pytest.approx(1 / 6)  # never 0
    assert permutation_p(0.1 + 0.2, [0.3], "greater") == pytest.approx(1.0)  # a tie within rounding
    skewed = [0.0] * 30 + [10.0] * 9  # a skewed null: far from its median on one side only
    assert permutation_p(-1.0, skewed, "doubled") == pytest.approx(2 / 40)  # below every draw
    assert permutation_p(-1.0, np.subtract(skewed, 0.0), "two-sided") > 0.2  # distance misreads it
    assert permutation_p(10.0, skewed, "doubled") == pytest.approx(min(1, 2 * 10 / 40))
    assert permutation_p(0.0, skewed, "doubled") == 1.0
    with pytest.raises(ValueError, match="alternative"):
        permutation_p(1.0, null, "both")  # type: ignore[arg-type]


def test_partial_spearman_without_confounding_is_spearman():
    rng = np.random.default_rng(5)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    z = rng.normal(size=80)
    plain, partial = spearman(x, y, n_resamples=500), partial_spearman(x, y, z, n_resamples=500)
    assert partial.rho == pytest.approx(plain.rho, abs=0.03)
    assert partial.p < 0.01 and partial.ci95[0] < partial.rho < partial.ci95[1] and partial.n == 80
    two = partial_spearman(x, y, np.column_stack([z, rng.normal(size=80)]), n_resamples=500)
    assert two.rho == pytest.approx(plain.rho, abs=0.05)


def test_partial_spearman_removes_a_common_cause():
    rng = np.random.default_rng(6)
    z = rng.normal(size=100)
    x, y = z + 0.3 * rng.normal(size=100), z + 0.3 * rng.normal(size=100)
    assert spearman(x, y, n_resamples=500).rho > 0.8
    partial = partial_spearman(x, y, z, n_resamples=500)
    assert abs(partial.rho) < 0.25 and partial.p > 0.05 and partial.ci95[0] < 0 < partial.ci95[1]


def test_partial_spearman_is_deterministic_in_the_seed_and_checks_its_input():
    rng = np.random.default_rng(7)
    x, y, z = rng.normal(size=(3, 30))
    assert partial_spearman(x, y, z, n_resamples=200, seed=3) == partial_spearman(x, y, z, n_resamples=200, seed=3)
    assert partial_spearman(x, y, z, n_resamples=200, seed=3) != partial_spearman(x, y, z, n_resamples=200, seed=4)
    with pytest.raises(ValueError, match="constant"):
        partial_spearman(x, np.ones(30), z)
    with pytest.raises(ValueError, match="function of the ranks"):
        partial_spearman(np.exp(z), y, z)
    with pytest.raises(ValueError, match="at least 6"):
        partial_spearman(x[:5], y[:5], np.column_stack([z, z])[:5])
