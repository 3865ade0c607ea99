"""Tests for harness.stats: known answers, hand-built cases, hypothesis invariants and hostile inputs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from harness.metrics import wilson_interval
from harness.stats import (
    binomial_vs_constant,
    clopper_pearson,
    ece,
    mcnemar_exact,
    operating_point,
    paired,
    risk_coverage,
    wilson,
)

T, F = True, False

k_n = st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))


# --- intervals --------------------------------------------------------------------------------------


def test_wilson_14_of_20():
    lo, hi = wilson(14, 20)
    assert round(lo, 3) == 0.481
    assert round(hi, 3) == 0.855
    assert isinstance(lo, float) and isinstance(hi, float)


@settings(max_examples=300, deadline=None)
@given(k_n)
@example((0, 1))
@example((1, 1))
@example((0, 200))
@example((200, 200))
@example((14, 20))
def test_wilson_matches_hand_written_metrics_wilson(kn):
    k, n = kn
    lo, hi = wilson(k, n)
    ref_lo, ref_hi = wilson_interval(k, n)
    assert abs(lo - ref_lo) <= 1e-9
    assert abs(hi - ref_hi) <= 1e-9
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_confidence_controls_width():
    w80, w95, w99 = (wilson(5, 10, c) for c in (0.80, 0.95, 0.99))
    assert w99[0] < w95[0] < w80[0] < 0.5 < w80[1] < w95[1] < w99[1]


@pytest.mark.parametrize("n", [1, 7, 20])
def test_clopper_pearson_closed_forms_at_the_edges(n):
    alpha = 0.05
    assert clopper_pearson(0, n) == pytest.approx((0.0, 1 - (alpha / 2) ** (1 / n)), abs=1e-12)
    assert clopper_pearson(n, n) == pytest.approx(((alpha / 2) ** (1 / n), 1.0), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(k_n, st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_clopper_pearson_is_the_beta_quantile_interval(kn, confidence):
    k, n = kn
    lo, hi = clopper_pearson(k, n, confidence)
    a = 1 - confidence
    ref_lo = 0.0 if k == 0 else beta.ppf(a / 2, k, n - k + 1)
    ref_hi = 1.0 if k == n else beta.ppf(1 - a / 2, k + 1, n - k)
    assert lo == pytest.approx(ref_lo, abs=1e-9)
    assert hi == pytest.approx(ref_hi, abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    # (Not "wider than Wilson": at k = 0, n = 13, 99% Wilson's upper end 0.338 exceeds Clopper-Pearson's 0.335.)


# --- McNemar, paired, binomial vs constant ----------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "p"), [(1, 6, 0.125), (6, 1, 0.125), (0, 5, 0.0625), (3, 3, 1.0), (0, 0, 1.0)])
def test_mcnemar_known_answers(a, b, p):
    assert mcnemar_exact(a, b) == pytest.approx(p, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 80), st.integers(0, 80))
def test_mcnemar_is_the_two_sided_sign_test(a, b):
    n = a + b
    ref = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(min(a, b) + 1)) / 2**n)
    p = mcnemar_exact(a, b)
    assert p == pytest.approx(ref, rel=1e-9, abs=1e-300)
    assert p == mcnemar_exact(b, a)
    assert 0.0 < p <= 1.0


def test_paired_hand_case():
    a = [T, T, T, F, F, T, F]
    b = [T, F, F, T, F, F, F]
    # image 0 both right; 4, 6 neither; 1, 2, 5 A only; 3 B only; McNemar 3 vs 1 -> 2 * (1 + 4) / 16
    assert paired(a, b) == {"n": 7, "both": 1, "neither": 2, "a_only": 3, "b_only": 1, "p": 0.625}
    assert paired(np.array(a), np.array(b)) == paired(a, b)


def test_paired_one_vs_six():
    a = [T] * 10 + [T] + [F] * 6
    b = [T] * 10 + [F] + [T] * 6
    out = paired(a, b)
    assert (out["a_only"], out["b_only"], out["both"], out["neither"]) == (1, 6, 10, 0)
    assert out["p"] == pytest.approx(0.125)


def test_binomial_vs_constant_known_answers():
    assert binomial_vs_constant(20, 20, 0.7) == pytest.approx(0.7**20, rel=1e-12)
    assert binomial_vs_constant(20, 20, 0.7) == pytest.approx(7.98e-4, abs=5e-7)
    # P(X >= 15), X ~ Bin(20, 1/2) = (C(20,15) + ... + C(20,20)) / 2^20 = 21700 / 1048576
    assert binomial_vs_constant(15, 20, 0.5) == pytest.approx(21700 / 2**20, rel=1e-12)
    assert binomial_vs_constant(0, 20, 0.3) == 1.0
    assert binomial_vs_constant(20, 20, 1.0) == 1.0
    assert binomial_vs_constant(3, 20, 1.0) == 1.0
    assert binomial_vs_constant(1, 20, 0.0) == 0.0
    assert binomial_vs_constant(0, 20, 0.0) == 1.0


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.floats(0.01, 0.99))
def test_binomial_vs_constant_is_the_upper_tail(kn, p0):
    k, n = kn
    ref = sum(math.comb(n, i) * p0**i * (1 - p0) ** (n - i) for i in range(k, n + 1))
    p = binomial_vs_constant(k, n, p0)
    assert p == pytest.approx(min(1.0, ref), rel=1e-7, abs=1e-12)
    assert 0.0 <= p <= 1.0
    if k < n:
        assert binomial_vs_constant(k + 1, n, p0) <= p  # more right answers, stronger evidence


# --- ECE --------------------------------------------------------------------------------------------


def test_ece_all_correct_at_confidence_one_is_zero_and_in_the_top_bin():
    out = ece([1.0] * 15, [T] * 15)
    assert out["ece"] == 0.0
    assert (out["bins"], out["n"]) == (15, 15)
    counts = [b["count"] for b in out["reliability"]]
    assert counts == [0] * 14 + [15]
    top = out["reliability"][-1]
    assert (top["lo"], top["hi"], top["confidence"], top["accuracy"]) == (14 / 15, 1.0, 1.0, 1.0)
    assert out["reliability"][0]["confidence"] is None and out["reliability"][0]["accuracy"] is None


def test_ece_hand_case():
    out = ece([0.9, 0.9, 0.6, 0.6], [T, F, T, T])
    assert out["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert out["ece"] == pytest.approx(0.4)
    filled = [(i, b["count"], b["accuracy"]) for i, b in enumerate(out["reliability"]) if b["count"]]
    # 0.6 * 15 = 9 -> bin (8/15, 9/15]; 0.9 * 15 = 13.5 -> bin (13/15, 14/15]
    assert filled == [(8, 2, 1.0), (13, 2, 0.5)]


def test_ece_bin_boundaries():
    out = ece([0.0, 1 / 15, np.nextafter(1 / 15, 1.0), 2 / 15, 1.0], [T, T, T, T, T])
    counts = [b["count"] for b in out["reliability"]]
    # 0 and 1/15 in the first bin (0, 1/15] (0 included); just above 1/15 and 2/15 in the second; 1.0 in the top
    assert counts == [2, 2] + [0] * 12 + [1]
    assert out["reliability"][0]["confidence"] == pytest.approx(1 / 30)
    # with all right: ECE = mean(1 - confidence)
    assert out["ece"] == pytest.approx(np.mean([1.0, 14 / 15, 1 - np.nextafter(1 / 15, 1.0), 13 / 15, 0.0]))


def test_ece_other_bin_counts():
    out = ece([0.25, 0.5, 0.75], [F, T, T], bins=2)
    assert [b["count"] for b in out["reliability"]] == [2, 1]  # 0.5 is the edge: lower bin
    assert out["ece"] == pytest.approx((abs(0.5 - 0.375) * 2 + abs(1.0 - 0.75)) / 3)
    assert ece([0.3, 0.7], [T, F], bins=1)["ece"] == pytest.approx(0.0)


# --- risk-coverage and operating point --------------------------------------------------------------

CONF = [0.9, 0.8, 0.7, 0.6]
RIGHT = [T, T, F, T]


def test_risk_coverage_hand_case():
    out = risk_coverage(CONF, RIGHT)
    assert out["n"] == 4
    assert [p["threshold"] for p in out["points"]] == CONF
    assert [p["answered"] for p in out["points"]] == [1, 2, 3, 4]
    assert [p["right"] for p in out["points"]] == [1, 2, 2, 3]
    assert [p["coverage"] for p in out["points"]] == [0.25, 0.5, 0.75, 1.0]
    assert [p["risk"] for p in out["points"]] == pytest.approx([0, 0, 1 / 3, 1 / 4])
    assert out["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)
    assert out["full_risk"] == 0.25


def test_risk_coverage_ties_enter_together():
    out = risk_coverage([0.9, 0.7, 0.9, 0.7, 0.5], [T, F, F, T, T])
    assert [(p["threshold"], p["answered"], p["right"]) for p in out["points"]] == [
        (0.9, 2, 1),
        (0.7, 4, 2),
        (0.5, 5, 3),
    ]
    assert [p["coverage"] for p in out["points"]] == [0.4, 0.8, 1.0]
    # expected risk over random tie order: errors accrue 0.5 per image in each tied pair
    assert out["aurc"] == pytest.approx((0.5 / 1 + 1 / 2 + 1.5 / 3 + 2 / 4 + 2 / 5) / 5)


def test_risk_coverage_aurc_of_constant_confidence_is_the_error_rate():
    out = risk_coverage([0.5] * 4, [T, F, F, F])
    assert len(out["points"]) == 1
    assert out["aurc"] == pytest.approx(0.75)
    assert out["full_risk"] == 0.75


def test_operating_point_hand_case():
    assert operating_point(CONF, RIGHT, 1.0) == {
        "threshold": 0.8,
        "coverage": 0.5,
        "answered": 2,
        "right": 2,
        "accuracy": 1.0,
    }
    full = operating_point(CONF, RIGHT, 0.75)
    assert (full["threshold"], full["answered"], full["coverage"], full["accuracy"]) == (0.6, 4, 1.0, 0.75)
    # accuracies by coverage 1, 1, 2/3, 3/4: target 0.8 is met only down to threshold 0.8
    assert operating_point(CONF, RIGHT, 0.8)["answered"] == 2


def test_operating_point_is_the_largest_qualifying_coverage_not_the_first_failure():
    # accuracies by coverage: 1/1, 1/2, 2/3, 3/4 -> target 0.7 first met again at coverage 1
    op = operating_point([0.9, 0.8, 0.7, 0.6], [T, F, T, T], 0.7)
    assert (op["answered"], op["threshold"]) == (4, 0.6)


def test_operating_point_none_when_unreachable():
    assert operating_point([0.9, 0.8, 0.7], [F, T, T], 0.95) is None
    # the most confident images tie and one of them is wrong: ties enter together, so 1.0 is unreachable
    assert operating_point([0.9, 0.9, 0.1], [T, F, T], 1.0) is None


def test_operating_point_with_ties():
    # accuracies by threshold: 0.9 -> 2/2, 0.5 -> 3/4, 0.2 -> 3/5
    op = operating_point([0.9, 0.9, 0.5, 0.5, 0.2], [T, T, T, F, F], 0.75)
    assert (op["threshold"], op["answered"], op["right"]) == (0.5, 4, 3)


# --- hypothesis invariants --------------------------------------------------------------------------


@st.composite
def scored(draw, max_size=40):
    n = draw(st.integers(1, max_size))
    # a small grid of confidences makes ties and bin edges common
    value = st.one_of(st.sampled_from([0.0, 1 / 15, 0.5, 0.9, 1.0]), st.floats(0, 1))
    conf = draw(st.lists(value, min_size=n, max_size=n))
    right = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return conf, right


@settings(max_examples=120, deadline=None)
@given(scored(), st.integers(0, 2**32 - 1))
def test_ece_invariants(data, seed):
    conf, right = data
    out = ece(conf, right)
    assert 0.0 <= out["ece"] <= 1.0
    assert sum(b["count"] for b in out["reliability"]) == out["n"] == len(conf)
    for b in out["reliability"]:
        if b["count"]:
            assert b["lo"] <= b["confidence"] <= b["hi"]
    order = list(range(len(conf)))
    random.Random(seed).shuffle(order)
    shuffled = ece([conf[i] for i in order], [right[i] for i in order])
    assert shuffled["ece"] == pytest.approx(out["ece"], abs=1e-12)
    assert [b["count"] for b in shuffled["reliability"]] == [b["count"] for b in out["reliability"]]


@settings(max_examples=120, deadline=None)
@given(scored(), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_selective_invariants(data, target, seed):
    conf, right = data
    out = risk_coverage(conf, right)
    error_rate = 1 - sum(right) / len(right)
    assert 0.0 <= out["aurc"] <= 1.0
    assert out["full_risk"] == pytest.approx(error_rate)
    assert out["points"][-1]["coverage"] == 1.0
    thresholds = [p["threshold"] for p in out["points"]]
    assert thresholds == sorted(set(thresholds), reverse=True)
    assert all(0.0 <= p["risk"] <= 1.0 for p in out["points"])
    if all(right):
        assert out["aurc"] == 0.0
    if not any(right):
        assert out["aurc"] == pytest.approx(1.0)

    op = operating_point(conf, right, target)
    qualifying = [p for p in out["points"] if p["right"] / p["answered"] >= target]
    if op is None:
        assert not qualifying
    else:
        assert op["accuracy"] >= target
        assert op["answered"] == max(p["answered"] for p in qualifying)
        assert op["answered"] == sum(c >= op["threshold"] for c in conf)

    order = list(range(len(conf)))
    random.Random(seed).shuffle(order)
    conf2, right2 = [conf[i] for i in order], [right[i] for i in order]
    again = risk_coverage(conf2, right2)
    assert again["points"] == out["points"]
    assert again["aurc"] == pytest.approx(out["aurc"], abs=1e-12)
    assert operating_point(conf2, right2, target) == op


def test_aurc_without_ties_is_the_mean_of_the_prefix_risks():
    rng = np.random.default_rng(0)
    conf = rng.permutation(np.linspace(0.01, 0.99, 30))
    right = rng.random(30) < 0.6
    order = np.argsort(-conf)
    prefix_risk = np.cumsum(~right[order]) / np.arange(1, 31)
    assert risk_coverage(conf, right)["aurc"] == pytest.approx(prefix_risk.mean(), abs=1e-12)


# --- hostile inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: wilson(0, 0), "n=0"),
        (lambda: wilson(5, 4), "k=5"),
        (lambda: wilson(-1, 4), "k=-1"),
        (lambda: wilson(1.5, 4), "k must be an integer"),
        (lambda: wilson(True, 4), "k must be an integer count, got the bool"),
        (lambda: wilson(1, 4, 1.0), "confidence"),
        (lambda: wilson(1, 4, math.nan), "confidence"),
        (lambda: clopper_pearson(1, 4, 0.0), "confidence"),
        (lambda: clopper_pearson(1, "4"), "n must be an integer"),
        (lambda: mcnemar_exact(-1, 3), "a_only=-1"),
        (lambda: mcnemar_exact(1, -3), "b_only=-3"),
        (lambda: mcnemar_exact(1, 2.0), "b_only must be an integer"),
        (lambda: paired([T, F], [T]), r"len\(a_correct\)=2, len\(b_correct\)=1"),
        (lambda: paired([], []), "at least one image"),
        (lambda: paired([T, 1], [T, F]), r"a_correct\[1\] must be a bool"),
        (lambda: paired([T], ["False"]), r"b_correct\[0\] must be a bool"),
        (lambda: paired("TF", [T, F]), "a_correct must be a sequence of bools"),
        (lambda: binomial_vs_constant(3, 2, 0.5), "k=3"),
        (lambda: binomial_vs_constant(1, 2, 1.5), "p0=1.5"),
        (lambda: binomial_vs_constant(1, 2, -0.1), "p0=-0.1"),
        (lambda: binomial_vs_constant(1, 2, math.nan), "p0=nan"),
        (lambda: ece([0.5, math.nan], [T, F]), r"confidences\[1\]=nan"),
        (lambda: ece([0.5, 1.2], [T, F]), r"confidences\[1\]=1.2"),
        (lambda: ece([-0.01], [T]), r"confidences\[0\]=-0.01"),
        (lambda: ece([95.0], [T]), "not logits or percentages"),
        (lambda: ece([0.5, math.inf], [T, F]), r"confidences\[1\]=inf"),
        (lambda: ece([], []), "at least one image"),
        (lambda: ece([0.5], [T, F]), r"len\(confidences\)=1, len\(correct\)=2"),
        (lambda: ece([0.5], [T], bins=0), "bins=0"),
        (lambda: ece([0.5], [T], bins=2.5), "bins must be a positive integer"),
        (lambda: ece(["high"], [T]), "confidences must be a sequence of numbers"),
        (lambda: ece([[0.5]], [T]), "confidences must be 1-dimensional"),
        (lambda: ece([0.5], [0.5]), r"correct\[0\] must be a bool"),
        (lambda: risk_coverage([0.5, math.nan], [T, F]), r"confidences\[1\]=nan"),
        (lambda: risk_coverage([0.5], [T, T]), r"len\(confidences\)=1, len\(correct\)=2"),
        (lambda: risk_coverage([], []), "at least one image"),
        (lambda: operating_point([0.5], [T], 1.5), "target=1.5"),
        (lambda: operating_point([0.5], [T], math.nan), "target=nan"),
        (lambda: operating_point([0.5], [1], 0.9), r"correct\[0\] must be a bool"),
    ],
)
def test_hostile_inputs_name_the_argument(call, needle):
    with pytest.raises(ValueError, match=needle):
        call()
