"""Critical ratios of single components from sweep tables."""

import numpy as np
import pandas as pd
import pytest

from cgclib.component_phase import critical_ratios, first_collapse, s0_table, transition_table


def _sweep():
    ratios = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    rows = []
    for head, s0 in ((0, 0.55), (1, None)):
        for s in ratios:
            collapse = 0.0 if s0 is None else max(s - s0, 0.0) * 12
            rows.append({"layer": 0, "head": head, "ratio": s, "language": 10 * np.exp(0.05 * s**2 + collapse),
                         "copy": 1.0 + 1e-4 * np.sin(37 * s)})   # flat: never collapses
    return pd.DataFrame(rows)


def test_a_collapsing_head_gets_its_s0_and_flat_metrics_get_none():
    critical = critical_ratios(_sweep(), ["layer", "head"], ["language", "copy"])
    row = critical.query("head == 0 and metric == 'language'").iloc[0]
    assert row.bracket_low <= row.s0 < row.bracket_high and row.bracket_high - row.bracket_low == pytest.approx(0.1)
    s0 = s0_table(critical, ["layer", "head"])
    assert list(s0.columns) == ["language", "copy"]
    assert s0.loc[(0, 0), "language"] == pytest.approx(0.55, abs=0.01)
    assert np.isnan(s0.loc[(0, 1), "language"])
    assert s0["copy"].isna().all()
    first = first_collapse(s0, censor_at=0.9)
    assert first.loc[(0, 0)] == pytest.approx(0.55, abs=0.01) and first.loc[(0, 1)] == 0.9
    assert transition_table(s0).loc["language", "components with a transition"] == 1


def test_a_sweep_without_the_dense_point_is_refused():
    sweep = _sweep()
    with pytest.raises(ValueError, match="ratio 0"):
        critical_ratios(sweep[sweep.ratio > 0], ["layer", "head"], ["language"])
