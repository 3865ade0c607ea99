"""Nearest training image by cosine similarity of frozen features, and the training set's own reference: each training
image's similarity to its nearest OTHER training image (leave-one-out), whose spread says what "close" means for a
set whose images are already alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest(queries: np.ndarray, references: np.ndarray, leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest reference, its cosine similarity) per query row; both arrays are L2-normalised.
    `leave_one_out`: queries are the references themselves and each image's own row is left out."""
    if len(queries) == 0 or len(references) == 0 or (leave_one_out and len(references) < 2):
        return np.zeros(len(queries), dtype=int), np.full(len(queries), np.nan)
    sims = queries.astype(np.float64) @ references.astype(np.float64).T
    if leave_one_out:
        np.fill_diagonal(sims, -np.inf)
    idx = sims.argmax(axis=1)
    return idx, np.clip(sims[np.arange(len(queries)), idx], -1.0, 1.0)


def reference_level(leave_one_out: Sequence[float], quantile: float) -> float | None:
    """The `quantile` of the training images' leave-one-out nearest similarities (None without any)."""
    values = [float(v) for v in leave_one_out if v is not None and np.isfinite(v)]
    return float(np.quantile(values, quantile)) if values else None


def share_at_or_above(values: Sequence[float], level: float) -> float:
    """The share of `values` at or above `level` (0 for none)."""
    return float(np.mean([v >= level - 1e-12 for v in values])) if len(values) else 0.0
