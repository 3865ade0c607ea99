"""Classification metrics over label strings: soft/strict accuracy, Wilson intervals, confusion matrix,
per-class recall and chance baselines. Pure functions, no I/O."""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from typing import Any

from scipy.stats import binomtest, norm

__all__ = [
    "soft_accuracy",
    "strict_accuracy",
    "wilson_interval",
    "confusion_matrix",
    "per_class_recall",
    "baselines",
    "accuracy_summary",
]

# Two-sided 95% normal quantile, Phi^-1(0.975).
Z95 = 1.959963984540054


def _check_same_length(**seqs: Sequence[Any]) -> int:
    """Return the common length of the named sequences; ValueError if they differ or are empty."""
    lengths = {name: len(seq) for name, seq in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"sequences must have the same length, got lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"need at least one image, got empty sequences {sorted(lengths)}")
    return n


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if not classes:
        raise ValueError("classes must not be empty")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise ValueError(f"classes must be unique, duplicated: {dupes}")
    return classes


def _class_index(classes: list[str], label: str, what: str) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise ValueError(f"{what} label {label!r} is not in classes {classes}") from None


def _soft_hits(preds: Sequence[str], acceptable: Sequence[Collection[str]]) -> int:
    _check_same_length(preds=preds, acceptable=acceptable)
    for i, acc in enumerate(acceptable):
        if isinstance(acc, str):
            raise ValueError(f"acceptable[{i}] must be a collection of labels, got the string {acc!r}")
    return sum(p in acc for p, acc in zip(preds, acceptable))


def _strict_hits(preds: Sequence[str], primary: Sequence[str]) -> int:
    _check_same_length(preds=preds, primary=primary)
    return sum(p == t for p, t in zip(preds, primary))


def soft_accuracy(preds: Sequence[str], acceptable: Sequence[Collection[str]]) -> float:
    """Fraction of images whose prediction is in that image's acceptable set.

    ``acceptable[i]`` is the set of labels counted correct for image ``i`` (the annotation's
    ``acceptable_labels``, plus ``'background'`` when ``background_acceptable`` is true; the data
    loader adds it). This is the "soft" accuracy of the original experiment.
    """
    return _soft_hits(preds, acceptable) / len(preds)


def strict_accuracy(preds: Sequence[str], primary: Sequence[str]) -> float:
    """Fraction of images whose prediction equals the primary label (largest visible known cover)."""
    return _strict_hits(preds, primary) / len(preds)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n.

    Source: E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
    inference", JASA 22(158):209-212; recommended for small n by Brown, Cai & DasGupta (2001),
    "Interval estimation for a binomial proportion", Statistical Science 16(2).

    ``z`` is the normal quantile (default 1.96 for a two-sided 95% interval). Returns ``(lo, hi)``
    within [0, 1]; ``lo`` is exactly 0 when k == 0 and ``hi`` exactly 1 when k == n.
    Example: ``wilson_interval(18, 20)`` is about (0.699, 0.972).
    """
    try:
        k = operator.index(k)
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"k and n must be integers, got k={k!r}, n={n!r}") from None
    if n <= 0:
        raise ValueError(f"n must be a positive number of trials, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must satisfy 0 <= k <= n, got k={k}, n={n}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive finite number, got z={z!r}")
    # scipy's binomtest(...).proportion_ci(method="wilson") computes it; z is turned into its two-sided level
    p = k / n
    ci = binomtest(k, n).proportion_ci(confidence_level=float(2 * norm.cdf(z) - 1), method="wilson")
    lo = 0.0 if k == 0 else max(0.0, min(p, float(ci.low)))
    hi = 1.0 if k == n else min(1.0, max(p, float(ci.high)))
    return lo, hi


def confusion_matrix(preds: Sequence[str], primary: Sequence[str], classes: Sequence[str]) -> list[list[int]]:
    """Counts ``m[i][j]`` of images whose primary label is ``classes[i]`` and prediction is ``classes[j]``.

    Rows are the true (primary) label, columns the prediction, both in ``classes`` order. A label
    outside ``classes`` is a ValueError. The matrix sums to n and its trace / n is the strict accuracy.
    """
    _check_same_length(preds=preds, primary=primary)
    classes = _check_classes(classes)
    m = [[0] * len(classes) for _ in classes]
    for p, t in zip(preds, primary):
        m[_class_index(classes, t, "primary")][_class_index(classes, p, "predicted")] += 1
    return m


def per_class_recall(preds: Sequence[str], primary: Sequence[str], classes: Sequence[str]) -> dict[str, float | None]:
    """Recall per class on the primary label: correct / images of that class; None where a class has no images."""
    m = confusion_matrix(preds, primary, classes)
    out: dict[str, float | None] = {}
    for i, c in enumerate(classes):
        total = sum(m[i])
        out[c] = m[i][i] / total if total else None
    return out


def baselines(classes: Sequence[str], acceptable: Sequence[Collection[str]], primary: Sequence[str]) -> dict[str, Any]:
    """Chance-level references for soft and strict accuracy on this test set.

    Returns a JSON-ready dict:

    - ``uniform_soft``: expected soft accuracy of guessing uniformly over ``classes``, i.e. the mean
      over images of ``|acceptable_i & classes| / len(classes)``.
    - ``uniform_strict``: expected strict accuracy of uniform guessing, ``1 / len(classes)``.
    - ``constant_soft``: ``{"label", "value"}``, the single class that, always predicted, maximises
      soft accuracy, and that accuracy.
    - ``constant_strict``: the same for strict accuracy (the majority primary label).

    Ties go to the class that comes first in ``classes``.
    """
    n = _check_same_length(acceptable=acceptable, primary=primary)
    classes = _check_classes(classes)
    class_set = set(classes)
    for i, acc in enumerate(acceptable):
        if isinstance(acc, str):
            raise ValueError(f"acceptable[{i}] must be a collection of labels, got the string {acc!r}")
    uniform_soft = sum(len(class_set & set(acc)) for acc in acceptable) / (n * len(classes))
    soft_by_class = [sum(c in acc for acc in acceptable) / n for c in classes]
    strict_by_class = [sum(c == t for t in primary) / n for c in classes]
    # max() returns the first maximal element, so ties go to the earliest class.
    i_soft = max(range(len(classes)), key=soft_by_class.__getitem__)
    i_strict = max(range(len(classes)), key=strict_by_class.__getitem__)
    return {
        "uniform_soft": uniform_soft,
        "uniform_strict": 1.0 / len(classes),
        "constant_soft": {"label": classes[i_soft], "value": soft_by_class[i_soft]},
        "constant_strict": {"label": classes[i_strict], "value": strict_by_class[i_strict]},
    }


def accuracy_summary(
    preds: Sequence[str],
    acceptable: Sequence[Collection[str]],
    primary: Sequence[str],
    classes: Sequence[str],
) -> dict[str, Any]:
    """All classification metrics for one model on one test set, as a JSON-ready dict.

    Keys:

    - ``n``: number of images.
    - ``classes``: the class order used by the matrix below.
    - ``soft`` / ``strict``: ``{"k": correct count, "value": k / n, "wilson": [lo, hi]}`` with the
      95% Wilson score interval (see :func:`wilson_interval`).
    - ``per_class_recall``: ``{class: recall or None}`` on the primary label.
    - ``confusion_matrix``: rows = primary label, columns = prediction, in ``classes`` order.
    - ``baselines``: see :func:`baselines`.
    """
    n = _check_same_length(preds=preds, acceptable=acceptable, primary=primary)
    classes = _check_classes(classes)
    k_soft = _soft_hits(preds, acceptable)
    k_strict = _strict_hits(preds, primary)
    return {
        "n": n,
        "classes": classes,
        "soft": {"k": k_soft, "value": k_soft / n, "wilson": list(wilson_interval(k_soft, n))},
        "strict": {"k": k_strict, "value": k_strict / n, "wilson": list(wilson_interval(k_strict, n))},
        "per_class_recall": per_class_recall(preds, primary, classes),
        "confusion_matrix": confusion_matrix(preds, primary, classes),
        "baselines": baselines(classes, acceptable, primary),
    }
