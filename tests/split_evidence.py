"""metrics.json's entry of one test set with known counts, written by harness.evaluate.split_metrics from per-image
predictions (so its summary agrees with them, as the verdicts check), for tests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from harness.evaluate import split_metrics


def split_entry(n: int, soft_k: int, strict_k: int, constant_soft_k: int, constant_strict_k: int) -> dict[str, Any]:
    """n images: soft_k right by soft accuracy, strict_k of them by strict accuracy; the best constant answer scores
    constant_soft_k (soft) and constant_strict_k (strict). Needs 1 <= constant_strict_k <= constant_soft_k,
    strict_k <= soft_k and soft_k - strict_k <= constant_soft_k."""
    assert 1 <= constant_strict_k <= constant_soft_k <= n and 0 <= strict_k <= soft_k <= n
    assert soft_k - strict_k <= constant_soft_k
    classes = ["a", "b", "w", *(f"u{i}" for i in range(n))]
    primary = ["a" if i < constant_strict_k else f"u{i}" for i in range(n)]
    # images with "b" acceptable: the soft-only right ones, then wrong ones, then strictly right ones
    order = [*range(strict_k, soft_k), *range(soft_k, n), *range(strict_k)]
    with_b = set(order[:constant_soft_k])
    predicted = [primary[i] if i < strict_k else "b" if i < soft_k else "w" for i in range(n)]
    samples = [
        SimpleNamespace(name=f"img_{i}.png", label=primary[i], acceptable={primary[i], *(["b"] if i in with_b else [])})
        for i in range(n)
    ]
    probs = np.full((n, len(classes)), 0.1 / (len(classes) - 1))
    for i, p in enumerate(predicted):
        probs[i, classes.index(p)] = 0.9
    return split_metrics(SimpleNamespace(samples=samples), None, classes, probabilities=probs)
