import numpy as np
import pytest

from cgclib.replication import (
    SeedResult,
    family_difference,
    pool_proportions,
    proportion,
    random_effects,
    seed_verdicts,
    stratified_spearman,
)
from cgclib.verdicts import Exceeds


def _seeds(values, half_width=0.05, n=100):
    return [SeedResult(f"m{i}", v, (v - half_width, v + half_width), n) for i, v in enumerate(values)]


def test_agreeing_seeds_pool_to_their_common_value_with_no_between_seed_variance():
    pooled = random_effects(_seeds([0.5, 0.5, 0.5]))
    assert pooled.value == pytest.approx(0.5) and pooled.tau2 == 0.0 and pooled.k == 3
    lo, hi = pooled.ci95
    # the floor: never narrower than the random-effects standard error on t(2)
    assert hi - lo == pytest.approx(2 * 4.302653 * (0.05 / 1.959964) / np.sqrt(3), rel=1e-4)


def test_scattered_seeds_widen_the_interval_beyond_every_seed_s_own():
    pooled = random_effects(_seeds([0.2, 0.5, 0.8]))
    assert pooled.tau2 > 0.05 and pooled.value == pytest.approx(0.5)
    assert pooled.ci95[0] < 0.2 and pooled.ci95[1] > 0.8


def test_pooled_interval_covers_the_recipe_value_where_a_fixed_effect_pool_does_not():
    """Three seeds whose true values scatter (sd 0.1) around 0.5, each measured with
    sampling error 0.03: the pooled interval covers 0.5 at least at its nominal rate, while an
    interval from the sampling errors alone (a fixed-effect pool) misses it most of the time."""
    rng = np.random.default_rng(0)
    covered = fixed_covered = 0
    trials = 400
    for _ in range(trials):
        values = 0.5 + 0.1 * rng.standard_normal(3) + 0.03 * rng.standard_normal(3)
        seeds = _seeds(values, half_width=1.96 * 0.03)
        lo, hi = random_effects(seeds).ci95
        covered += lo <= 0.5 <= hi
        fixed_half = 1.96 * 0.03 / np.sqrt(3)
        fixed_covered += abs(values.mean() - 0.5) <= fixed_half
    assert covered / trials >= 0.93
    assert fixed_covered / trials < 0.5


def test_unestimable_seeds_are_left_out_and_one_seed_is_not_a_pool():
    seeds = _seeds([0.4, 0.6]) + [SeedResult("m2", None, None, 100)]
    assert random_effects(seeds).k == 2
    assert random_effects(seeds[:1]).value is None
    with pytest.raises(ValueError, match="needs its 95% interval"):
        random_effects([SeedResult("a", 0.1, None, 5), SeedResult("b", 0.2, None, 5)])


def test_each_seed_keeps_its_own_verdict():
    rule = Exceeds(threshold=0.45)
    assert seed_verdicts(_seeds([0.3, 0.5, 0.6], half_width=0.02), rule) == ["fails", "holds", "holds"]


def test_a_shift_between_seeds_is_not_a_correlation_over_heads():
    """x and y both larger in the second model, unrelated within each: pooling the raw
    values would find a strong correlation; ranking within seeds finds none."""
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=48) + shift for shift in (0, 5)]
    ys = [rng.normal(size=48) + shift for shift in (0, 5)]
    raw = np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1]
    result = stratified_spearman(xs, ys, n_permutations=499)
    assert raw > 0.8
    assert abs(result.rho) < 0.25 and result.p > 0.05 and result.n == 96


def test_a_planted_correlation_within_seeds_is_found_and_the_null_is_calibrated():
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=48) for _ in range(3)]
    planted = stratified_spearman(xs, [x + rng.normal(size=48) for x in xs], n_permutations=499)
    assert planted.rho > 0.4 and planted.p < 0.01 and len(planted.per_seed) == 3
    assert planted.ci95[0] < planted.rho < planted.ci95[1]
    p_null = [
        stratified_spearman(
            [rng.normal(size=20) for _ in range(3)], [rng.normal(size=20) for _ in range(3)], 99, seed=s
        ).p
        for s in range(200)
    ]
    assert 0.01 <= np.mean(np.array(p_null) <= 0.05) <= 0.10


def test_stratified_spearman_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same seeds"):
        stratified_spearman([np.arange(5)], [])
    with pytest.raises(ValueError, match="same length"):
        stratified_spearman([np.arange(5)], [np.arange(6)])


def test_a_family_difference_is_judged_against_the_seed_variation():
    tight = family_difference(random_effects(_seeds([0.50, 0.51, 0.52])), random_effects(_seeds([0.30, 0.31, 0.29])))
    assert tight.value == pytest.approx(0.21) and tight.p < 0.01 and tight.ci95[0] > 0
    # the same mean difference with seeds that scatter as much is not a difference
    loose = family_difference(random_effects(_seeds([0.2, 0.5, 0.83])), random_effects(_seeds([0.0, 0.3, 0.6])))
    assert loose.p > 0.3 and loose.ci95[0] < 0 < loose.ci95[1]
    with pytest.raises(ValueError, match="two seeds or more"):
        family_difference(random_effects(_seeds([0.5])), random_effects(_seeds([0.3, 0.4])))


def test_two_families_at_100_percent_do_not_differ():
    """Ties at the ceiling: every seed of both families answers every probe, or one family
    misses one probe in five hundred. Neither is a difference between recipes."""
    perfect = [proportion(f"m{i}", np.ones(500)) for i in range(3)]
    near = [proportion(f"m{i}", np.r_[np.ones(499), 0]) for i in range(3)]
    same = family_difference(pool_proportions(perfect), pool_proportions(perfect))
    assert same.value == 0 and same.p == 1.0
    close = family_difference(pool_proportions(perfect), pool_proportions(near))
    assert close.p > 0.2 and close.ci95[0] < 0 < close.ci95[1]


def test_a_proportion_carries_its_wilson_interval():
    from cgclib.replication import proportion

    seed = proportion("m", np.array([1, 1, 1, 0]))
    assert seed.value == 0.75 and seed.n == 4 and seed.ci95[0] < 0.75 < seed.ci95[1] <= 1.0
    with pytest.raises(ValueError, match="at least one answer"):
        proportion("m", np.array([]))


def _unequal():
    y, se = [0.1, 0.3, 0.35, 0.2], [0.05, 0.1, 0.2, 0.03]
    return [
        SeedResult(f"m{i}", v, (v - 1.959964 * s, v + 1.959964 * s), 100)
        for i, (v, s) in enumerate(zip(y, se, strict=True))
    ]


def test_pooling_matches_a_reference_hartung_knapp_computation():
    """Unequal standard errors, where the Hartung-Knapp variance differs from the plain
    random-effects one (reference: statsmodels' combine_effects, method_re="dl", use_t)."""
    pooled = random_effects(_unequal(), tau2_method="dersimonian-laird")
    assert pooled.tau2 == pytest.approx(0.0027550, rel=1e-3)
    assert pooled.ci95 == pytest.approx((0.050209, 0.322635), abs=2e-5)
    with pytest.raises(ValueError, match="tau2_method"):
        random_effects(_unequal(), tau2_method="reml")


def test_paule_mandel_sets_the_generalised_q_to_its_expectation():
    seeds = _unequal()
    pooled = random_effects(seeds)
    y = np.array([s.value for s in seeds])
    w = 1 / (np.array([s.standard_error() for s in seeds]) ** 2 + pooled.tau2)
    q = np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2)
    assert pooled.tau2 > 0 and q == pytest.approx(len(seeds) - 1, rel=1e-6)
    assert pooled.value == pytest.approx(np.sum(w * y) / w.sum())


def test_proportions_pool_inside_0_and_1_and_a_perfect_seed_does_not_dominate():
    """Two seeds at 100% and one at 85%: the one-step DerSimonian-Laird estimate lets the
    perfect seeds' tiny errors outweigh the third, Paule-Mandel's does much less."""
    seeds = [
        proportion("a", np.ones(500)),
        proportion("b", np.ones(500)),
        proportion("c", np.r_[np.ones(425), np.zeros(75)]),
    ]
    pooled = pool_proportions(seeds)
    assert 0 < pooled.ci95[0] < 0.85 < pooled.value < pooled.ci95[1] == 1.0
    one_step = random_effects(seeds, tau2_method="dersimonian-laird")
    assert np.sqrt(one_step.tau2) < 0.04 < 0.07 < np.sqrt(pooled.tau2)
    assert abs(pooled.value - 0.95) < 0.01 and abs(pooled.value - 0.95) < abs(one_step.value - 0.95)


def test_the_permutation_p_counts_the_observed_correlation():
    """Perfectly correlated heads: no within-seed shuffle reaches the observed correlation,
    so p is 1 / (permutations + 1), not 0."""
    xs = [np.arange(30.0) for _ in range(2)]
    assert stratified_spearman(xs, [x * 2 for x in xs], n_permutations=99).p == pytest.approx(0.01)


def test_constant_or_non_finite_inputs_are_refused():
    x = [np.arange(10.0), np.arange(10.0)]
    with pytest.raises(ValueError, match="constant"):
        stratified_spearman(x, [np.ones(10), np.arange(10.0)])
    with pytest.raises(ValueError, match="finite"):
        stratified_spearman(x, [np.r_[np.arange(9.0), np.nan], np.arange(10.0)])
    with pytest.raises(ValueError, match="finite"):
        random_effects([SeedResult("a", float("nan"), (0, 1), 5), SeedResult("b", 0.2, (0, 1), 5)])


def test_answers_in_correlated_groups_get_a_wider_interval_than_independent_ones():
    """Forty entities with four facts each, known or not as a whole: the group bootstrap's
    interval is about twice Wilson's over the 160 answers; all correct falls back to Wilson
    over the forty groups."""
    from cgclib.replication import clustered_proportion

    rng = np.random.default_rng(0)
    known = np.repeat(rng.random(40) < 0.7, 4)
    groups = np.repeat(np.arange(40), 4)
    grouped = clustered_proportion("m", known, groups)
    independent = proportion("m", known)
    width = lambda r: r.ci95[1] - r.ci95[0]  # noqa: E731
    assert grouped.value == independent.value and grouped.n == 160
    assert width(grouped) > 1.5 * width(independent)
    perfect = clustered_proportion("m", np.ones(160), groups)
    assert perfect.ci95 == pytest.approx(proportion("m", np.ones(40)).ci95)


def test_seed_mean_is_the_t_interval_over_the_seeds_values():
    from cgclib.replication import seed_mean

    values = [0.2, 0.4, 0.9]
    pooled = seed_mean([SeedResult(f"m{i}", v, None, 10) for i, v in enumerate(values)])
    se = np.std(values, ddof=1) / np.sqrt(3)
    assert pooled.value == pytest.approx(0.5) and pooled.se == pytest.approx(se)
    assert pooled.ci95 == pytest.approx((0.5 - 4.302653 * se, 0.5 + 4.302653 * se), rel=1e-5)
    from scipy import stats as sps

    assert pooled.p == pytest.approx(sps.ttest_1samp(values, 0.0).pvalue)


def test_pool_uses_random_effects_only_when_every_estimable_seed_has_an_interval():
    from cgclib.replication import pool, seed_mean

    with_intervals = _seeds([0.3, 0.5, 0.6])
    assert pool(with_intervals) == random_effects(with_intervals)
    mixed = [*with_intervals[:2], SeedResult("m2", 0.6, None, 100)]
    assert pool(mixed) == seed_mean(mixed)
    unestimable = [*with_intervals[:2], SeedResult("m2", None, None, 100)]
    assert pool(unestimable).k == 2 and pool(unestimable[1:]).value is None


def test_seeds_that_agree_exactly_have_no_p_value():
    from cgclib.replication import seed_mean

    pooled = seed_mean([SeedResult(f"m{i}", 0.2, None, 10) for i in range(3)])
    assert pooled.value == pytest.approx(0.2) and pooled.p is None


def test_an_asymmetric_interval_gives_the_error_of_its_longer_arm():
    assert SeedResult("a", 1.0, (0.96, 1.0), 100).standard_error() == pytest.approx(0.04 / 1.959964, rel=1e-5)
    assert SeedResult("a", 0.92, (0.86, 0.95), 100).standard_error() == pytest.approx(0.06 / 1.959964, rel=1e-5)


def test_stouffer_combines_signed_p_values():
    from scipy import stats as sps

    from cgclib.replication import stouffer

    results = [SeedResult("a", 0.3, None, 10, 0.05), SeedResult("b", 0.2, None, 10, 0.05)]
    z = sps.norm.isf(0.025)
    assert stouffer(results) == pytest.approx(2 * sps.norm.sf(2 * z / np.sqrt(2)))
    opposite = [results[0], SeedResult("b", -0.2, None, 10, 0.05)]
    assert stouffer(opposite) == pytest.approx(1.0)  # opposite signs cancel
    assert stouffer(results[:1]) is None


def test_a_zero_width_interval_does_not_take_all_the_weight():
    from cgclib.replication import pool, seed_mean

    seeds = [SeedResult("a", 0.0, (0.0, 0.0), 10), *_seeds([0.5, 0.9])]
    assert pool(seeds) == seed_mean(seeds)
    assert pool(seeds).ci95[0] < 0 < 0.9 < pool(seeds).ci95[1]
