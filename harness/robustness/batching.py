"""Forward passes in batches across many small groups of images: every group's probabilities, through one forward
function (one onnxruntime session), without holding more than about one batch of images in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def predict_groups(forward: Forward, groups: Iterable[np.ndarray], batch: int) -> list[np.ndarray]:
    """[probabilities (k_i, C)] of each group of k_i canonical images (k_i, 3, H, W), the groups concatenated and run
    `batch` images or a little more at a time (the forward function splits further where it must). `groups` may be
    a generator: its images are made as the batches need them."""
    sizes: list[int] = []
    pending: list[np.ndarray] = []
    count = 0
    results: list[np.ndarray] = []
    for g in groups:
        g = np.asarray(g, dtype=np.float32)
        sizes.append(len(g))
        if len(g):
            pending.append(g)
            count += len(g)
        if count >= batch:
            results.append(np.asarray(forward(np.concatenate(pending))))
            pending, count = [], 0
    if pending:
        results.append(np.asarray(forward(np.concatenate(pending))))
    probs = np.concatenate(results) if results else np.zeros((0, 0), np.float32)
    if len(probs) != sum(sizes):
        raise ValueError(f"the forward function returned {len(probs)} rows for {sum(sizes)} images")
    out, start = [], 0
    for k in sizes:
        out.append(probs[start : start + k])
        start += k
    return out


def answer(probs: np.ndarray, classes: list[str] | tuple[str, ...], label: str) -> dict[str, object]:
    """How one answer is recorded in the evidence: the predicted class, its probability, and the probability of the
    image's primary label (`p_label`)."""
    p = np.asarray(probs, dtype=np.float64)
    i = int(np.argmax(p))
    return {
        "predicted": classes[i],
        "probability": round(float(p[i]), 6),
        "p_label": round(float(p[classes.index(label)]), 6) if label in classes else None,
    }
