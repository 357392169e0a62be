import numpy as np
import pytest

from cgclib.replication import (
    SeedResult,
    family_difference,
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
    tight = family_difference(_seeds([0.50, 0.51, 0.52]), _seeds([0.30, 0.31, 0.29]))
    assert tight.value == pytest.approx(0.21) and tight.p < 0.001 and tight.ci95[0] > 0
    # the same mean difference with seeds that scatter as much is not a difference
    loose = family_difference(_seeds([0.2, 0.5, 0.83]), _seeds([0.0, 0.3, 0.6]))
    assert loose.p > 0.3 and loose.ci95[0] < 0 < loose.ci95[1]
    with pytest.raises(ValueError, match="two estimable seeds per family"):
        family_difference(_seeds([0.5]), _seeds([0.3, 0.4]))
