"""Adaptive sweeps: the coarse-then-bisect search returns what a scan of every ratio of the
fine grid returns, with fewer evaluations, on synthetic curves and on the trained test beds."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cgclib.adaptive_sweep import CrossingSearch, first_crossing, head_crossings, sweep_crossings
from cgclib.component_phase import critical_ratios, head_sweep
from cgclib.evaluation import EvaluationData
from cgclib.subjects import load_subject

from .tiny_models import TINY

GRID = [round(0.05 * i, 2) for i in range(1, 20)]  # 0.05 ... 0.95: 19 ratios


def scan(damage, grid, threshold):
    """The brute-force answer: every ratio in order, the first at or above the threshold."""
    return next((r for r in grid if damage(r) >= threshold), None)


def counted(damage):
    """`damage`, and the list of the ratios it was called at."""
    calls: list[float] = []

    def evaluate(ratio):
        calls.append(ratio)
        return damage(ratio)

    return evaluate, calls


def step_at(index):
    """A damage 0 below GRID[index] and 1 from it on (never 1 for index None)."""
    edge = math.inf if index is None else GRID[index]
    return lambda r: float(r >= edge)


@pytest.mark.parametrize("stride", [1, 2, 3, 4, 5, 9, 18, 19, 40])
def test_a_step_is_found_where_the_scan_finds_it_wherever_it_is(stride):
    for index in [None, *range(len(GRID))]:
        evaluate, calls = counted(step_at(index))
        found = first_crossing(evaluate, GRID, 0.5, stride)
        assert found.ratio == scan(step_at(index), GRID, 0.5), (index, stride)
        assert found.evaluations == len(calls) == len(set(calls))  # each ratio at most once
        assert found.dips == ()


def test_monotone_curves_and_thresholds_agree_with_the_scan():
    rng = np.random.default_rng(0)
    for _ in range(200):
        power, scale = rng.uniform(0.5, 6), rng.uniform(0.1, 3)
        grid = sorted(set(np.round(rng.uniform(0, 0.99, rng.integers(1, 40)), 3).tolist()))

        def damage(r, power=power, scale=scale):
            return scale * r**power

        threshold, stride = rng.uniform(0, scale), int(rng.integers(1, 12))
        assert first_crossing(damage, grid, threshold, stride).ratio == scan(damage, grid, threshold)


def test_the_search_evaluates_the_coarse_grid_then_bisects_the_bracket():
    """GRID has 19 ratios; stride 4 puts the coarse ratios at indices 3, 7, 11, 15 and 18."""
    evaluate, calls = counted(step_at(6))
    found = first_crossing(evaluate, GRID, 0.5, 4)
    assert found.ratio == GRID[6]
    assert calls == [GRID[3], GRID[7], GRID[5], GRID[6]]  # below, above; then bisect (3, 7]
    assert found.evaluated == tuple((r, float(r >= GRID[6])) for r in calls)


def test_edge_cases_never_crossing_crossing_at_the_first_and_at_the_last_ratio():
    never, calls = counted(step_at(None))
    assert first_crossing(never, GRID, 0.5, 4).ratio is None
    assert calls == [GRID[i] for i in (3, 7, 11, 15, 18)]  # the coarse grid, its last ratio included

    first, calls = counted(step_at(0))
    assert first_crossing(first, GRID, 0.5, 4).ratio == GRID[0]
    assert calls == [GRID[3], GRID[1], GRID[0]]

    last, calls = counted(step_at(18))
    assert first_crossing(last, GRID, 0.5, 4).ratio == GRID[18]
    assert calls == [GRID[i] for i in (3, 7, 11, 15, 18, 16, 17)]

    assert first_crossing(lambda r: 1.0, [0.3], 0.5, 4).ratio == 0.3
    assert first_crossing(lambda r: 0.0, [0.3], 0.5, 4).ratio is None
    assert first_crossing(lambda r: 0.5, [0.3], 0.5, 4).ratio == 0.3  # at the threshold is a crossing


@pytest.mark.parametrize("stride", [2, 3, 4, 5, 8])
def test_evaluations_stay_within_the_coarse_grid_plus_a_bisection(stride):
    coarse = math.ceil(len(GRID) / stride) + 1  # every stride-th ratio, and the last
    bound = coarse + math.ceil(math.log2(stride))
    counts = [first_crossing(step_at(i), GRID, 0.5, stride).evaluations for i in [None, *range(len(GRID))]]
    assert max(counts) <= bound
    assert sum(counts) / len(counts) < len(GRID) / 2  # a scan of the fine grid evaluates all 19


def test_a_curve_that_falls_back_gives_a_crossing_maybe_not_the_first_and_shows_its_dips():
    """Above the threshold at 0.10 and 0.15, then falling, then rising across it at 0.60:
    the coarse ratios (0.20, 0.40, 0.60) miss the first crossing, and see the fall."""
    values = dict(zip(GRID, [0.0, 1.0, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.3, 0.4, 0.6, 0.9, *[1.0] * 7], strict=True))
    found = first_crossing(values.__getitem__, GRID, 0.75, 4)
    assert scan(values.__getitem__, GRID, 0.75) == 0.10
    assert found.ratio == 0.60  # a crossing: at or above the threshold, its neighbour below under it
    assert values[0.60] >= 0.75 > values[0.55]
    assert (0.2, 0.4) in found.dips  # 0.7 at 0.20, 0.2 at 0.40: the search saw the fall
    assert first_crossing(values.__getitem__, GRID, 0.75, 1).ratio == 0.10  # stride 1 is the scan


def test_the_stepwise_search_is_the_same_search():
    search = CrossingSearch(GRID, 0.5, 4)
    with pytest.raises(RuntimeError, match="not done"):
        _ = search.result
    while (ratio := search.ratio) is not None:
        search.tell(step_at(9)(ratio))
    assert search.result == first_crossing(step_at(9), GRID, 0.5, 4)
    with pytest.raises(RuntimeError, match="done"):
        search.tell(1.0)


@pytest.mark.parametrize(
    ("grid", "threshold", "stride", "message"),
    [
        ([], 0.5, 2, "empty"),
        ([0.2, 0.1, 0.3], 0.5, 2, "strictly increasing"),
        ([0.1, 0.1, 0.3], 0.5, 2, "strictly increasing"),
        ([0.1, 1.0], 0.5, 2, r"\[0, 1\)"),
        ([-0.1, 0.5], 0.5, 2, r"\[0, 1\)"),
        ([0.1, 0.2], 0.5, 0, "stride"),
        ([0.1, 0.2], 0.5, 1.5, "stride"),
        ([0.1, 0.2], float("nan"), 2, "threshold"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(grid, threshold, stride, message):
    with pytest.raises(ValueError, match=message):
        first_crossing(lambda r: r, grid, threshold, stride)


def test_a_nan_damage_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        first_crossing(lambda r: float("nan"), GRID, 0.5, 4)


def test_no_crossing_exactly_when_critical_ratios_calls_every_metric_flat():
    """The collapse threshold is the rise test of `component_phase.critical_ratios`: a
    component crosses on the grid if and only if some metric is not "flat" there."""
    rng = np.random.default_rng(1)
    ratios = np.round(np.arange(0, 0.91, 0.1), 2)
    rows = []
    for head, top in enumerate([0.0, 0.02, 0.04, 0.06, 0.2, 1.0]):  # how far the steeper metric rises
        for s in ratios:
            rows.append(
                {
                    "layer": 0,
                    "head": head,
                    "ratio": s,
                    "language": 10 * (1 + top * (s / 0.9) ** 3),
                    "copy": 2 * (1 + 0.01 * rng.random()),  # never rises by 5%
                }
            )
    sweep = pd.DataFrame(rows)
    crossings = sweep_crossings(sweep, ["layer", "head"]).set_index(["layer", "head"])
    flat = critical_ratios(sweep, ["layer", "head"], ["language", "copy"]).groupby(["layer", "head"])["outcome"]
    never = crossings["crossing"].isna()
    all_flat = flat.apply(lambda outcome: (outcome == "flat").all())
    pd.testing.assert_series_equal(never, all_flat, check_names=False)
    assert never.tolist() == [True, True, True, False, False, False]
    # the first ratio at which language has risen by 5%: (s / 0.9)^3 >= 0.05 / top
    assert crossings["crossing"].iloc[3:].tolist() == [0.9, 0.6, 0.4]
    assert (crossings["evaluations"] == len(ratios) - 1).all()


def test_a_sweep_without_the_dense_point_is_refused():
    sweep = pd.DataFrame({"layer": 0, "head": 0, "ratio": [0.5, 0.7], "language": [1.0, 2.0]})
    with pytest.raises(ValueError, match="ratio 0"):
        sweep_crossings(sweep, ["layer", "head"])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_head_searches_are_the_same_however_many_heads_share_a_pass(family, monkeypatch):
    """The searches of a block's heads advance together, as many heads per forward pass as
    fit; two at a time must give every head the same search (a tiny random model, whose
    damage is small: crossings at a rise of 1e-4)."""
    from cgclib import adaptive_sweep

    model = TINY[family]()
    ids = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(0))
    data = EvaluationData(torch.randint(3, 64, (5, 12), generator=torch.Generator().manual_seed(1)))
    heads = [(1, h) for h in range(4)] + [(2, 0)]
    together = head_crossings(model, data, ids, None, GRID, 4, heads, min_rise=1e-4, progress=False)
    monkeypatch.setattr(adaptive_sweep, "variants_per_pass", lambda *args: 2)
    two_at_a_time = head_crossings(model, data, ids, None, GRID, 4, heads, min_rise=1e-4, progress=False)
    assert together["crossing"].notna().sum() >= 3
    columns = ["layer", "head", "crossing", "evaluations"]
    pd.testing.assert_frame_equal(two_at_a_time[columns], together[columns])


@pytest.mark.parametrize(("name", "layer"), [("testbed-gpt2", 2), ("testbed-llama", 1)])
def test_on_a_trained_test_bed_heads_cross_where_the_fine_grid_says_with_fewer_evaluations(name, layer):
    """The first four heads of a block, each searched with stride 4 on the 19-ratio grid and
    swept over all of it (`component_phase.head_sweep`): the same crossings, found with
    fewer evaluations. (Every head of both test beds agrees; four keep the test short.)"""
    subject = load_subject(name, "cpu", n_probes=4, n_paragraphs=4, n_mixture=0)
    ids, pad = subject.calibration(4, 64), subject.tokenizer.pad_token_id
    heads = [(layer, h) for h in range(4)]
    sweep = head_sweep(subject.model, subject.data, ids, pad, GRID, heads, progress=False)
    fine = sweep_crossings(sweep, ["layer", "head"])
    adaptive = head_crossings(subject.model, subject.data, ids, pad, GRID, 4, heads, progress=False)
    assert fine["crossing"].notna().sum() >= 2 and fine["crossing"].isna().sum() >= 1  # both kinds of head
    pd.testing.assert_series_equal(adaptive["crossing"], fine["crossing"])
    assert (adaptive["evaluations"] < fine["evaluations"]).all()
    assert adaptive["evaluations"].sum() <= 0.4 * fine["evaluations"].sum()


def test_the_benchmark_counts_each_variants_evaluations_and_finds_the_same_crossings():
    from cgclib.book import bench

    chosen = [b for b in bench.BENCHMARKS if "first collapse" in b.name]
    axes = {"tokens": [bench.Size(n_sequences=n, n_layers=1, n_heads=2, head_dim=8) for n in (2, 3)]}
    results = bench.run("cpu", benchmarks=[bench.BENCHMARKS[0], *chosen], axes=axes, repeats=1)
    row = bench.summary(results).loc[chosen[0].name]
    assert (row["evaluations"], row["evaluations, naive"]) == ("8", "20")  # 2 heads: 4 coarse ratios, or all 10
    assert bench.summary(results).iloc[0]["evaluations"] == ""  # a benchmark that counts none

    size = bench.Size(n_sequences=2, n_layers=2, n_heads=2, head_dim=8)
    model, ids = bench.make_model(size, "cpu"), bench.make_ids(size)
    data = bench.evaluation_data(size)
    adaptive = bench.head_crossings_adaptive(model, data, ids)
    fine = bench.head_crossings_fine_grid(model, data, ids)
    pd.testing.assert_series_equal(adaptive["crossing"], fine["crossing"])
    assert bench.evaluations_made(adaptive) < bench.evaluations_made(fine) == 4 * 10
