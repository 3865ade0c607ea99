"""Occlusion sensitivity (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks", ECCV).

A ``window`` x ``window`` square of constant ``baseline`` (grey 0.5 by default, all three channels) slides over the
image with ``stride``. Positions along each axis are 0, stride, 2 * stride, ... up to ``size - window``, plus
``size - window`` itself when the stride does not land there, so every pixel is covered (with stride <= window).
For each position k the occluded image gives probabilities p_k; the attribution of class c at a pixel is the mean,
over the windows covering that pixel, of ``p0[c] - p_k[c]`` (the probability drop). That is exactly Captum's
``Occlusion`` attribution for one target whenever its windows are these windows, i.e. when
``(size - window) % stride == 0`` on both axes; otherwise Captum's last window is cut at the border instead of
moved inside it. The map is ReLU(attribution) divided by its maximum (all zeros when no window lowers the
probability). Deterministic.

Cost: ``len(rows) * len(cols) + 1`` forward passes; at 224 px with window 32, stride 16: 13 x 13 + 1 = 170.
The windows form a grid, so the sum over windows is separable: attribution_c = R^T D_c X / count, with R, X the
(positions x pixels) row and column indicators and D_c the grid of drops; one small matrix product per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.saliency.perturbation import (
    Forward,
    Method,
    SaliencyResult,
    check_image,
    check_sizes,
    check_targets,
    float_param,
    int_param,
    normalise,
    sweep,
)

NAME = "occlusion"
DEFAULTS: Mapping[str, Any] = {"window": 32, "stride": 16, "baseline": 0.5, "batch": 32}


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the window along an axis of ``size`` pixels: 0, stride, ... <= size - window, plus
    size - window when not already there. ValueError unless 1 <= window <= size and 1 <= stride <= window."""
    check_sizes(size=size, window=window, stride=stride)
    if window > size:
        raise ValueError(f"window {window} is larger than the image side {size}")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave pixels that no window covers")
    last = size - window
    pos = list(range(0, last + 1, stride))
    if pos[-1] != last:
        pos.append(last)
    return pos


def _indicators(size: int, positions: Sequence[int], window: int) -> np.ndarray:
    """(len(positions), size) 0/1 matrix: row i marks the pixels covered by the window starting at positions[i]."""
    m = np.zeros((len(positions), size), dtype=np.float64)
    for i, p in enumerate(positions):
        m[i, p : p + window] = 1.0
    return m


def occlusion_attribution(
    forward: Forward,
    image: np.ndarray,
    window: int = 32,
    stride: int = 16,
    baseline: float = 0.5,
    batch: int = 32,
    targets: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw occlusion attribution before ReLU: ``(p0 (C,), attr (T, H, W) float64, passes)``.

    ``attr[i]`` belongs to class ``targets[i]``; with ``targets=None`` every class (T = C; mind the memory for
    1000-class models). ``attr[i, y, x]`` = mean over windows covering (y, x) of ``p0[c] - p_k[c]``."""
    img = check_image(image)
    _, h, w = img.shape
    ys, xs = window_positions(h, window, stride), window_positions(w, window, stride)
    grid = [(y, x) for y in ys for x in xs]
    b = float(baseline)
    if not (0.0 <= b <= 1.0):
        raise ValueError(f"baseline must be in [0, 1], got baseline={baseline!r}")
    wanted = check_targets(targets) if targets is not None else []

    def occlude(x: np.ndarray, k: int) -> None:
        y0, x0 = grid[k]
        x[:, y0 : y0 + window, x0 : x0 + window] = b

    probs = sweep(forward, img, len(grid), occlude, batch, wanted)
    p0 = probs[0]
    classes = wanted if targets is not None else list(range(len(p0)))
    drops = (p0[None, :] - probs[1:])[:, classes]  # (K, T)
    rows, cols = _indicators(h, ys, window), _indicators(w, xs, window)
    d = drops.T.reshape(len(classes), len(ys), len(xs))
    total = np.einsum("yh,tyx,xw->thw", rows, d, cols, optimize=True)
    count = np.outer(rows.sum(0), cols.sum(0))  # windows covering each pixel (>= 1 everywhere)
    return p0, total / count, len(grid) + 1


def compute(
    forward: Forward,
    image: np.ndarray,
    targets: Sequence[int],
    window: int = 32,
    stride: int = 16,
    baseline: float = 0.5,
    batch: int = 32,
) -> SaliencyResult:
    """Occlusion maps for ``targets`` from one sweep: ReLU(attribution) / max (zeros when nothing is positive)."""
    wanted = check_targets(targets)
    p0, attr, passes = occlusion_attribution(forward, image, window, stride, baseline, batch, wanted)
    return SaliencyResult(probabilities=p0, maps={c: normalise(attr[i]) for i, c in enumerate(wanted)}, passes=passes)


def passes(height: int, width: int, params: Mapping[str, Any]) -> int:
    """Forward passes per image: windows along H times windows along W, plus the unperturbed image."""
    p = {**DEFAULTS, **params}
    return (
        len(window_positions(height, p["window"], p["stride"])) * len(window_positions(width, p["window"], p["stride"]))
        + 1
    )


def description(params: Mapping[str, Any]) -> str:
    p = {**DEFAULTS, **params}
    return (
        f"occlusion sensitivity (Zeiler & Fergus 2014, ECCV): a {p['window']}x{p['window']} px square of "
        f"{p['baseline']:g} (0 black, 1 white) slid with stride {p['stride']} px, last window moved inside the "
        f"border; map = ReLU(mean probability drop over the windows covering each pixel) / max"
    )


def validate(params: Mapping[str, Any], where: str, size: tuple[int, int] | None) -> dict[str, Any]:
    hi = min(size) if size else None
    note = f"the image is {size[0]} x {size[1]} px" if size else ""
    window = int_param(params, "window", where, 1, hi, note)
    stride = int_param(params, "stride", where, 1, window, "at most the window, so every pixel is covered")
    baseline = float_param(params, "baseline", where, 0.0, 1.0, note="the grey level of the occluder")
    batch = int_param(params, "batch", where, 1)
    return {"window": window, "stride": stride, "baseline": baseline, "batch": batch}


METHOD = Method(
    name=NAME, defaults=DEFAULTS, compute=compute, passes=passes, description=description, validate=validate
)
