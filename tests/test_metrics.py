"""Tests for harness.metrics: known answers, the real test-set baselines, and hypothesis properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.metrics import (
    accuracy_summary,
    baselines,
    confusion_matrix,
    per_class_recall,
    soft_accuracy,
    strict_accuracy,
    wilson_interval,
)

CLASSES = ["background", "bayes", "geeks", "keras", "nlp", "technium"]
ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "small-book-images" / "annotations"


def load_labels(name: str) -> tuple[list[set[str]], list[str]]:
    """Acceptable sets and primary labels straight from the COCO file (independent of the data loader)."""
    with open(ANNOTATIONS / name, encoding="utf-8") as f:
        images = json.load(f)["images"]
    acceptable = [
        set(im["acceptable_labels"]) | ({"background"} if im["background_acceptable"] else set()) for im in images
    ]
    primary = [im["primary_label"] for im in images]
    return acceptable, primary


# --- soft / strict accuracy -------------------------------------------------------------------------


def test_soft_and_strict_known_values():
    preds = ["bayes", "nlp", "keras", "background"]
    acceptable = [{"bayes", "nlp"}, {"bayes", "nlp"}, {"geeks"}, {"background", "keras"}]
    primary = ["bayes", "bayes", "geeks", "keras"]
    assert soft_accuracy(preds, acceptable) == 0.75
    assert strict_accuracy(preds, primary) == 0.25


def test_accuracy_input_errors():
    with pytest.raises(ValueError, match="same length"):
        soft_accuracy(["bayes"], [{"bayes"}, {"nlp"}])
    with pytest.raises(ValueError, match="same length"):
        strict_accuracy(["bayes", "nlp"], ["bayes"])
    with pytest.raises(ValueError, match="at least one image"):
        strict_accuracy([], [])
    with pytest.raises(ValueError, match="'bayes'"):
        soft_accuracy(["bayes"], ["bayes"])  # a bare string is not a set of labels


# --- Wilson interval --------------------------------------------------------------------------------


def test_wilson_18_of_20():
    lo, hi = wilson_interval(18, 20)
    assert lo == pytest.approx(0.699, abs=5e-4)
    assert hi == pytest.approx(0.972, abs=5e-4)


def test_wilson_extremes():
    z = 1.959963984540054
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(z * z / (10 + z * z))  # closed form for k = 0
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(10 / (10 + z * z))  # closed form for k = n


def test_wilson_z_controls_width():
    narrow = wilson_interval(5, 10, z=1.0)
    wide = wilson_interval(5, 10, z=3.0)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


@pytest.mark.parametrize(
    ("k", "n", "z", "needle"),
    [(0, 0, 1.96, "n=0"), (3, 2, 1.96, "k=3"), (-1, 5, 1.96, "k=-1"), (1, 5, 0.0, "z=0.0"), (1, 5, math.nan, "z=nan")],
)
def test_wilson_errors(k, n, z, needle):
    with pytest.raises(ValueError, match=needle):
        wilson_interval(k, n, z)


def test_wilson_rejects_non_integer_counts():
    with pytest.raises(ValueError, match="integers"):
        wilson_interval(1.5, 4)  # type: ignore[arg-type]


@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate_and_is_a_probability(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert lo < hi
    # Symmetry: the interval for failures mirrors the interval for successes.
    lo2, hi2 = wilson_interval(n - k, n)
    assert lo == pytest.approx(1.0 - hi2, abs=1e-12)
    assert hi == pytest.approx(1.0 - lo2, abs=1e-12)


# --- confusion matrix and recall --------------------------------------------------------------------


def test_confusion_matrix_and_recall_known_values():
    classes = ["a", "b", "c"]
    primary = ["a", "a", "b", "b", "b"]
    preds = ["a", "b", "b", "b", "c"]
    assert confusion_matrix(preds, primary, classes) == [[1, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert per_class_recall(preds, primary, classes) == {"a": 0.5, "b": 2 / 3, "c": None}


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="'zebra'"):
        confusion_matrix(["zebra"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="'zebra'"):
        confusion_matrix(["a"], ["zebra"], ["a", "b"])
    with pytest.raises(ValueError, match=r"duplicated: \['a'\]"):
        confusion_matrix(["a"], ["a"], ["a", "b", "a"])
    with pytest.raises(ValueError, match="classes must not be empty"):
        confusion_matrix(["a"], ["a"], [])


@st.composite
def labelled_sets(draw):
    """(preds, acceptable, primary) with primary in acceptable, all over CLASSES."""
    n = draw(st.integers(1, 40))
    label = st.sampled_from(CLASSES)
    preds = draw(st.lists(label, min_size=n, max_size=n))
    primary = draw(st.lists(label, min_size=n, max_size=n))
    extra = draw(st.lists(st.sets(label), min_size=n, max_size=n))
    acceptable = [{p} | e for p, e in zip(primary, extra)]
    return preds, acceptable, primary


@given(labelled_sets())
def test_soft_at_least_strict_when_primary_acceptable(data):
    preds, acceptable, primary = data
    assert soft_accuracy(preds, acceptable) >= strict_accuracy(preds, primary)


@given(labelled_sets())
def test_confusion_matrix_sums_and_trace(data):
    preds, _, primary = data
    m = confusion_matrix(preds, primary, CLASSES)
    n = len(preds)
    assert sum(map(sum, m)) == n
    assert sum(m[i][i] for i in range(len(CLASSES))) / n == pytest.approx(strict_accuracy(preds, primary))
    # Row sums are the primary-label counts, column sums the prediction counts.
    assert [sum(row) for row in m] == [primary.count(c) for c in CLASSES]
    assert [sum(col) for col in zip(*m)] == [preds.count(c) for c in CLASSES]


@given(labelled_sets())
def test_recall_none_exactly_for_absent_classes(data):
    preds, _, primary = data
    recall = per_class_recall(preds, primary, CLASSES)
    for c in CLASSES:
        assert (recall[c] is None) == (c not in primary)
        if recall[c] is not None:
            assert 0.0 <= recall[c] <= 1.0


# --- baselines --------------------------------------------------------------------------------------


def test_baselines_on_test_difficult():
    acceptable, primary = load_labels("test_difficult.json")
    assert len(primary) == 20
    b = baselines(CLASSES, acceptable, primary)
    assert b["uniform_soft"] == pytest.approx(0.55)
    assert b["uniform_strict"] == pytest.approx(1 / 6)
    # bayes, keras and nlp tie at 14/20 for soft; geeks and keras tie at 6/20 for strict: first in order wins.
    assert b["constant_soft"] == {"label": "bayes", "value": pytest.approx(0.70)}
    assert b["constant_strict"] == {"label": "geeks", "value": pytest.approx(0.30)}


def test_baselines_on_test_easy():
    acceptable, primary = load_labels("test_easy.json")
    assert len(primary) == 6
    b = baselines(CLASSES, acceptable, primary)
    assert b["uniform_soft"] == pytest.approx(1 / 6)
    assert b["constant_soft"] == {"label": "nlp", "value": pytest.approx(0.5)}
    assert b["constant_strict"] == {"label": "nlp", "value": pytest.approx(0.5)}


def test_baselines_tie_break_follows_class_order():
    acceptable, primary = load_labels("test_difficult.json")
    b = baselines(list(reversed(CLASSES)), acceptable, primary)
    assert b["constant_soft"]["label"] == "nlp"
    assert b["constant_strict"]["label"] == "keras"


@given(labelled_sets())
def test_baselines_match_constant_predictors(data):
    _, acceptable, primary = data
    b = baselines(CLASSES, acceptable, primary)
    n = len(primary)
    best_soft = max(soft_accuracy([c] * n, acceptable) for c in CLASSES)
    best_strict = max(strict_accuracy([c] * n, primary) for c in CLASSES)
    assert b["constant_soft"]["value"] == pytest.approx(best_soft)
    assert soft_accuracy([b["constant_soft"]["label"]] * n, acceptable) == pytest.approx(best_soft)
    assert b["constant_strict"]["value"] == pytest.approx(best_strict)
    # Uniform guessing is the mean of the constant predictors' accuracies.
    mean_soft = sum(soft_accuracy([c] * n, acceptable) for c in CLASSES) / len(CLASSES)
    assert b["uniform_soft"] == pytest.approx(mean_soft)
    assert b["uniform_soft"] <= b["constant_soft"]["value"] + 1e-12


# --- summary ----------------------------------------------------------------------------------------


def test_accuracy_summary_is_json_ready_and_consistent():
    acceptable, primary = load_labels("test_difficult.json")
    preds = ["keras"] * len(primary)
    s = accuracy_summary(preds, acceptable, primary, CLASSES)
    assert json.loads(json.dumps(s)) == s
    assert set(s) == {"n", "classes", "soft", "strict", "per_class_recall", "confusion_matrix", "baselines"}
    assert s["n"] == 20
    assert s["soft"]["k"] == 14 and s["soft"]["value"] == pytest.approx(0.7)
    assert s["strict"]["k"] == 6 and s["strict"]["value"] == pytest.approx(0.3)
    assert s["soft"]["wilson"] == pytest.approx(list(wilson_interval(14, 20)))
    assert s["strict"]["wilson"] == pytest.approx(list(wilson_interval(6, 20)))
    assert s["per_class_recall"]["keras"] == 1.0
    assert s["per_class_recall"]["geeks"] == 0.0
    assert s["per_class_recall"]["background"] is None  # no image has background as primary label
    keras_col = [row[CLASSES.index("keras")] for row in s["confusion_matrix"]]
    assert sum(keras_col) == 20
    assert s["baselines"] == baselines(CLASSES, acceptable, primary)


def test_accuracy_summary_perfect_predictor():
    acceptable, primary = load_labels("test_difficult.json")
    assert all(p in a for p, a in zip(primary, acceptable))
    s = accuracy_summary(primary, acceptable, primary, CLASSES)
    assert s["soft"]["value"] == 1.0 and s["strict"]["value"] == 1.0
    assert s["strict"]["wilson"][1] == 1.0
