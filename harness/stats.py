"""Statistics that give each claim its strength: binomial intervals, exact paired (McNemar) and one-sample
binomial tests, calibration (ECE, reliability) and selective prediction (risk-coverage, AURC, operating point).

Pure functions over plain Python / numpy inputs, no I/O; results are JSON-ready (Python floats, ints, lists,
dicts). Where scipy has the formula it is used (``scipy.stats.binomtest`` and its ``proportion_ci``).
Bad input raises ValueError naming the argument and the value at fault.

Conventions shared by the calibration and selective-prediction functions:

- ``confidences[i]`` is the model's confidence in its answer for image ``i`` (the top softmax probability),
  a finite float in [0, 1]; ``correct[i]`` is whether that answer was right, a ``bool`` (or ``numpy.bool_``;
  0/1 integers are refused so that a label or count passed by mistake is caught).
- Both sequences have the same, non-zero length.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "wilson",
    "clopper_pearson",
    "mcnemar_exact",
    "paired",
    "binomial_vs_constant",
    "ece",
    "risk_coverage",
    "operating_point",
    "softmax",
]


def softmax(scores: np.ndarray, dtype: type[np.floating[Any]] | None = np.float64) -> np.ndarray:
    """Row-wise softmax of (N, C) scores (max-subtracted, so large logits do not overflow), computed in `dtype`;
    None computes in the scores' own dtype."""
    z = np.asarray(scores) if dtype is None else np.asarray(scores).astype(dtype)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --- validation -------------------------------------------------------------------------------------


def _count(name: str, value: Any) -> int:
    """A non-negative integer count (Python or numpy int, not bool)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer count, got the bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer count, got {value!r} ({type(value).__name__})") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value}")
    return value


def _trials(k: Any, n: Any) -> tuple[int, int]:
    """Validated (k, n) with n >= 1 and 0 <= k <= n."""
    k = _count("k", k)
    n = _count("n", n)
    if n == 0:
        raise ValueError("n must be a positive number of trials, got n=0 (no images: nothing to estimate)")
    if k > n:
        raise ValueError(f"k must satisfy 0 <= k <= n, got k={k}, n={n}")
    return k, n


def _probability(name: str, value: Any, *, open_interval: bool = False) -> float:
    """A finite float in [0, 1] (or in (0, 1) when ``open_interval``)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got the bool {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not (math.isfinite(value) and ok):
        where = "strictly between 0 and 1" if open_interval else "in [0, 1]"
        raise ValueError(f"{name} must be {where}, got {name}={value!r}")
    return value


def _bools(name: str, seq: Any) -> np.ndarray:
    """A 1-d bool array from a sequence of bool / numpy.bool_; anything else is refused by index."""
    if isinstance(seq, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of bools, got the string {seq!r}")
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1:
            raise ValueError(f"{name} must be 1-dimensional, got an array of shape {seq.shape}")
        if seq.dtype == np.bool_:
            return seq.copy()
    try:
        items = list(seq)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of bools, got {type(seq).__name__}") from None
    for i, v in enumerate(items):
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(
                f"{name}[{i}] must be a bool (True = the answer was right), got {v!r} ({type(v).__name__})"
            )
    return np.array(items, dtype=bool)


def _confidences(seq: Any) -> np.ndarray:
    """A 1-d float64 array of finite confidences in [0, 1]."""
    if isinstance(seq, (str, bytes)):
        raise ValueError(f"confidences must be a sequence of numbers, got the string {seq!r}")
    try:
        arr = np.asarray(seq, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"confidences must be a sequence of numbers in [0, 1], got {seq!r}") from None
    if arr.ndim != 1:
        raise ValueError(f"confidences must be 1-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr >= 0.0) & (arr <= 1.0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"confidences must be finite and in [0, 1] (probabilities, not logits or percentages), "
            f"got confidences[{i}]={float(arr[i])!r} ({bad.size} bad value(s))"
        )
    return arr


def _scored(confidences: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = _confidences(confidences)
    ok = _bools("correct", correct)
    if conf.size != ok.size:
        raise ValueError(
            f"confidences and correct must have the same length, got len(confidences)={conf.size}, "
            f"len(correct)={ok.size}"
        )
    if conf.size == 0:
        raise ValueError("need at least one image, got empty confidences and correct")
    return conf, ok


# --- intervals --------------------------------------------------------------------------------------


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the proportion k/n (scipy ``proportion_ci(method="wilson")``).

    Same interval as :func:`harness.metrics.wilson_interval` (which takes a z quantile instead of a
    confidence level). Example: ``wilson(14, 20)`` is about (0.481, 0.855).
    """
    k, n = _trials(k, n)
    confidence = _probability("confidence", confidence, open_interval=True)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval for k/n (scipy ``proportion_ci(method="exact")``).

    Conservative: coverage is at least ``confidence`` for every true proportion. Closed forms at the
    edges: k == 0 gives (0, 1 - (alpha/2)**(1/n)), k == n gives ((alpha/2)**(1/n), 1).
    """
    k, n = _trials(k, n)
    confidence = _probability("confidence", confidence, open_interval=True)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


# --- tests ------------------------------------------------------------------------------------------


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    ``a_only``: images model A got right and B wrong; ``b_only``: the reverse. Under the null (both
    models equally accurate) each discordant image is a fair coin, so the p-value is the two-sided
    binomial test of ``min(a_only, b_only)`` successes in ``a_only + b_only`` trials at p = 0.5,
    i.e. ``min(1, 2 * P(X <= min))``. No discordant images (both 0) gives 1.0. Example: 1 vs 6 -> 0.125.
    """
    a_only = _count("a_only", a_only)
    b_only = _count("b_only", b_only)
    n = a_only + b_only
    if n == 0:
        return 1.0
    return min(1.0, float(binomtest(min(a_only, b_only), n, 0.5).pvalue))


def paired(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """Paired correctness of two models on the same images, in the same order.

    Returns ``{"n", "both", "neither", "a_only", "b_only", "p"}``: counts of images both / neither got
    right, right only for A, right only for B, and the exact McNemar p-value (:func:`mcnemar_exact`)
    on the two discordant counts.
    """
    a = _bools("a_correct", a_correct)
    b = _bools("b_correct", b_correct)
    if a.size != b.size:
        raise ValueError(
            f"a_correct and b_correct must pair the same images, got len(a_correct)={a.size}, len(b_correct)={b.size}"
        )
    if a.size == 0:
        raise ValueError("need at least one image, got empty a_correct and b_correct")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    return {
        "n": int(a.size),
        "both": int(np.sum(a & b)),
        "neither": int(np.sum(~a & ~b)),
        "a_only": a_only,
        "b_only": b_only,
        "p": mcnemar_exact(a_only, b_only),
    }


def binomial_vs_constant(k: int, n: int, p0: float) -> float:
    """One-sided exact binomial p-value that accuracy k/n exceeds a constant answer's accuracy ``p0``.

    ``P(X >= k)`` for X ~ Binomial(n, p0) (scipy ``binomtest(..., alternative="greater")``). Edge cases:
    p0 == 1 gives 1.0 (nothing can beat it); p0 == 0 gives 0.0 when k > 0, else 1.0.
    Example: 20/20 against p0 = 0.7 gives 0.7**20, about 7.98e-4.
    """
    k, n = _trials(k, n)
    p0 = _probability("p0", p0)
    if p0 == 1.0:
        return 1.0
    if p0 == 0.0:
        return 0.0 if k > 0 else 1.0
    return min(1.0, float(binomtest(k, n, p0, alternative="greater").pvalue))


# --- calibration ------------------------------------------------------------------------------------


def ece(confidences: Sequence[float], correct: Sequence[bool], bins: int = 15) -> dict[str, Any]:
    """Expected calibration error with ``bins`` equal-width bins over [0, 1], and the reliability table.

    Bin convention: the edges are ``e_i = i / bins`` (as computed in float64) and bin ``i`` holds the
    confidences in ``(e_i, e_{i+1}]``, except the first bin, which also holds 0. So a confidence of
    exactly 1.0 falls in the TOP bin (not past it), 0.0 in the first, and a confidence equal to an
    inner edge (e.g. 1/15) in the bin below that edge. Inputs are converted to float64 first, so a
    float32 1/15 is not the float64 edge 1/15.

    ``ECE = sum_b (n_b / N) * |acc_b - conf_b|`` over non-empty bins, with ``acc_b`` the fraction right
    and ``conf_b`` the mean confidence in bin b. Returns ``{"ece", "bins", "n", "reliability"}``, with
    ``reliability`` one ``{"lo", "hi", "count", "confidence", "accuracy"}`` per bin (the last two None for
    an empty bin).
    """
    conf, ok = _scored(confidences, correct)
    if isinstance(bins, (bool, np.bool_)):
        raise ValueError(f"bins must be a positive integer, got the bool {bins!r}")
    try:
        bins = operator.index(bins)
    except TypeError:
        raise ValueError(f"bins must be a positive integer, got {bins!r}") from None
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got bins={bins}")
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    # searchsorted(side="left") puts c == e_j at index j, i.e. in bin j - 1 = (e_{j-1}, e_j]; 0.0 -> bin 0.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    conf_sums = np.bincount(idx, weights=conf, minlength=bins)
    right = np.bincount(idx, weights=ok.astype(np.float64), minlength=bins)
    n = int(conf.size)
    # n_b * |acc_b - conf_b| = |right_b - conf_sum_b|; capped because float sums may overshoot 1 by an ulp.
    value = min(1.0, float(np.sum(np.abs(right - conf_sums))) / n)
    reliability = []
    for i in range(bins):
        c = int(counts[i])
        reliability.append(
            {
                "lo": float(edges[i]),
                "hi": float(edges[i + 1]),
                "count": c,
                "confidence": float(conf_sums[i] / c) if c else None,
                "accuracy": float(right[i] / c) if c else None,
            }
        )
    return {"ece": value, "bins": bins, "n": n, "reliability": reliability}


# --- selective prediction ---------------------------------------------------------------------------


def _curve(conf: np.ndarray, ok: np.ndarray) -> tuple[list[dict[str, Any]], float]:
    """Points (one per distinct confidence, descending) and the tie-aware AURC."""
    order = np.argsort(-conf, kind="stable")
    c = conf[order]
    r = ok[order]
    n = c.size
    # Group ends: the last sorted position of each run of equal confidences.
    ends = np.append(np.flatnonzero(c[1:] != c[:-1]), n - 1)
    starts = np.concatenate(([0], ends[:-1] + 1))
    cum_right = np.cumsum(r.astype(np.int64))
    points = []
    errors_per_image = np.empty(n, dtype=np.float64)
    for s, e in zip(starts, ends):
        answered = int(e) + 1
        right = int(cum_right[e])
        points.append(
            {
                "threshold": float(c[e]),
                "coverage": answered / n,
                "risk": (answered - right) / answered,
                "answered": answered,
                "right": right,
            }
        )
        size = int(e - s) + 1
        group_errors = size - int(np.sum(r[s : e + 1]))
        errors_per_image[s : e + 1] = group_errors / size
    expected_errors = np.cumsum(errors_per_image)
    aurc = float(np.mean(expected_errors / np.arange(1, n + 1)))
    return points, min(1.0, max(0.0, aurc))


def risk_coverage(confidences: Sequence[float], correct: Sequence[bool]) -> dict[str, Any]:
    """Risk-coverage curve of selective prediction (answer only the most confident images).

    Sorting by confidence descending, answering every image with confidence >= a threshold gives
    coverage ``answered / N`` and risk ``errors among them / answered``. Tied confidences enter
    together, so ``points`` has one ``{"threshold", "coverage", "risk", "answered", "right"}`` per
    distinct confidence, from the highest threshold (least coverage) to the lowest (coverage 1).

    ``aurc`` is the area under the risk-coverage curve of Geifman & El-Yaniv (2017, "Selective
    classification for deep neural networks"; the AURC of Geifman et al. 2019):
    ``AURC = (1/N) * sum_{k=1..N} risk(k)``, with ``risk(k)`` the error rate among the k most confident
    images. Inside a group of tied confidences ``risk(k)`` is its expectation over a uniformly random
    order of the tied images (errors accrue linearly through the group), so the AURC is the mean of the
    tie-broken AURC over all tie-breaks and does not depend on the input order; with no ties it is the
    plain formula. A model whose confidences are all equal has AURC = its error rate.
    ``full_risk`` is the risk at coverage 1, i.e. the error rate.
    """
    conf, ok = _scored(confidences, correct)
    points, aurc = _curve(conf, ok)
    return {"n": int(conf.size), "points": points, "aurc": aurc, "full_risk": points[-1]["risk"]}


def operating_point(confidences: Sequence[float], correct: Sequence[bool], target: float) -> dict[str, Any] | None:
    """The lowest confidence threshold at which selective accuracy reaches ``target``.

    Among the points of :func:`risk_coverage` (ties enter together), the one with the largest coverage
    whose accuracy ``right / answered`` is >= ``target``. Selective accuracy need not fall monotonically
    with coverage, so this is the largest qualifying coverage, even when some higher threshold misses the
    target. Returns ``{"threshold", "coverage", "answered", "right", "accuracy"}`` (answer when
    confidence >= threshold), or None when no threshold reaches the target, not even answering only the
    most confident image(s).
    """
    conf, ok = _scored(confidences, correct)
    target = _probability("target", target)
    points, _ = _curve(conf, ok)
    for p in reversed(points):
        accuracy = p["right"] / p["answered"]
        if accuracy >= target:
            return {
                "threshold": p["threshold"],
                "coverage": p["coverage"],
                "answered": p["answered"],
                "right": p["right"],
                "accuracy": accuracy,
            }
    return None
