"""Each verdict rule, at and around its boundaries."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgclib.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    Describe,
    Equivalence,
    Exceeds,
    InRange,
    Measurement,
    Overlaps,
    Rule,
    RuleError,
    SignificantSign,
    WithinTolerance,
)

finite = st.floats(-1e6, 1e6, allow_nan=False)


def test_in_range_on_value():
    rule = InRange(0.63, 0.80)
    assert rule.judge(Measurement(0.7)) == HOLDS
    assert rule.judge(Measurement(0.63)) == HOLDS
    assert rule.judge(Measurement(0.81)) == FAILS


def test_in_range_on_ci():
    rule = InRange(0.0, 1.0, use_ci=True)
    assert rule.judge(Measurement(0.5, ci95=(0.2, 0.8))) == HOLDS
    assert rule.judge(Measurement(0.9, ci95=(0.8, 1.2))) == INCONCLUSIVE
    assert rule.judge(Measurement(1.5, ci95=(1.1, 1.9))) == FAILS
    with pytest.raises(RuleError, match="confidence interval"):
        rule.judge(Measurement(0.5))


def test_in_range_rejects_reversed_bounds():
    with pytest.raises(RuleError):
        InRange(1.0, 0.0)


def test_overlaps_on_the_ci():
    rule = Overlaps(0.55, 0.65)
    assert rule.judge(Measurement(0.66, ci95=(0.6, 0.7))) == HOLDS
    assert rule.judge(Measurement(0.75, ci95=(0.7, 0.8))) == FAILS
    with pytest.raises(RuleError, match="confidence interval"):
        rule.judge(Measurement(0.6))
    with pytest.raises(RuleError):
        Overlaps(1, 0)


def test_equivalence():
    rule = Equivalence(0.2)
    assert rule.judge(Measurement(0.0, ci95=(-0.1, 0.15))) == HOLDS
    assert rule.judge(Measurement(0.1, ci95=(-0.1, 0.3))) == INCONCLUSIVE
    assert rule.judge(Measurement(0.5, ci95=(0.3, 0.7))) == FAILS
    assert rule.judge(Measurement(-0.5, ci95=(-0.7, -0.2))) == FAILS
    with pytest.raises(RuleError):
        Equivalence(0.0)


@given(lo=finite, width=st.floats(0, 1e3), margin=st.floats(1e-3, 1e3))
def test_equivalence_verdicts_partition_the_intervals(lo, width, margin):
    hi = lo + width
    verdict = Equivalence(margin).judge(Measurement((lo + hi) / 2, ci95=(lo, hi)))
    inside = -margin < lo and hi < margin
    outside = lo >= margin or hi <= -margin
    assert verdict == (HOLDS if inside else FAILS if outside else INCONCLUSIVE)


def test_exceeds_both_directions():
    assert Exceeds(0.9).judge(Measurement(0.95)) == HOLDS
    assert Exceeds(0.9).judge(Measurement(0.85)) == FAILS
    assert Exceeds(0.9).judge(Measurement(0.92, ci95=(0.88, 0.95))) == INCONCLUSIVE
    assert Exceeds(0.0, "less").judge(Measurement(-0.3, ci95=(-0.5, -0.1))) == HOLDS
    assert Exceeds(0.0, "less").judge(Measurement(0.3, ci95=(0.1, 0.5))) == FAILS
    with pytest.raises(RuleError):
        Exceeds(0.0, "above")


def test_significant_sign():
    rule = SignificantSign(-1)
    assert rule.judge(Measurement(-0.4, p=0.001)) == HOLDS
    assert rule.judge(Measurement(0.4, p=0.001)) == FAILS
    assert rule.judge(Measurement(-0.4, p=0.2)) == INCONCLUSIVE
    with pytest.raises(RuleError, match="p-value"):
        rule.judge(Measurement(-0.4))


def test_within_tolerance():
    rule = WithinTolerance(26.68, 0.05)
    assert rule.judge(Measurement(27.5)) == HOLDS
    assert rule.judge(Measurement(30.0)) == FAILS


def test_descriptions_name_their_parameters():
    assert "0.55" in Overlaps(0.55, 0.65).describe()
    assert "0.2" in Equivalence(0.2).describe()


# Planted measurements on which each rule class must fail: a rule that cannot fail is a defect.
MUST_FAIL = {
    InRange: (InRange(0.55, 0.65, use_ci=True), Measurement(0.8, ci95=(0.75, 0.85))),
    Overlaps: (Overlaps(0.55, 0.65), Measurement(0.8, ci95=(0.75, 0.85))),
    Equivalence: (Equivalence(0.2), Measurement(0.5, ci95=(0.3, 0.7))),
    Exceeds: (Exceeds(0.0), Measurement(-0.3, ci95=(-0.5, -0.1))),
    SignificantSign: (SignificantSign(-1), Measurement(0.4, p=0.001)),
    WithinTolerance: (WithinTolerance(26.68, 0.05), Measurement(40.0)),
}


def test_every_verdict_rule_can_fail():
    verdict_rules = {cls for cls in Rule.__subclasses__() if cls is not Describe}
    assert verdict_rules == set(MUST_FAIL), "a rule class without a planted failure"
    for cls, (rule, measurement) in MUST_FAIL.items():
        assert rule.verdict(measurement) == FAILS, cls.__name__


def test_a_measurement_that_cannot_be_made_is_inconclusive_under_every_rule():
    for rule, _ in MUST_FAIL.values():
        assert rule.verdict(Measurement(None)) == INCONCLUSIVE


def test_describe_never_gives_a_verdict():
    rule = Describe("other model")
    assert rule.verdict(Measurement(0.5)) == rule.verdict(Measurement(None)) == "descriptive"
    with pytest.raises(RuleError):
        Describe(" ")
