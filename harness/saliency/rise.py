"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko 2018, BMVC).

Masks, as in the paper: ``masks`` random binary ``grid`` x ``grid`` arrays (each cell kept with probability ``p``),
bilinearly upsampled to ``(grid + 1) * cell`` pixels with ``cell = ceil(size / grid)`` per axis (half-pixel
centres, edges clamped, i.e. torch's ``interpolate(mode="bilinear", align_corners=False)``), then cropped to H x W at
a random shift in ``[0, cell)`` per axis. The masked image is ``image * mask`` (black where masked out, as in the
paper). Everything is drawn from ``numpy.random.default_rng(seed)`` before any forward pass, so the maps depend on
the seed only (not on ``batch``).

Map of class c. The paper's estimate is ``S = sum_i p_c(I * M_i) M_i / (N * p)``. Its expectation over masks is the
class score given that the pixel is kept; what varies from pixel to pixel is that score plus sampling noise of the
mask density ``sum_i M_i``, which is there even when the model ignores the input entirely. We use the same estimate
with the scores centred (a control variate): ``S = sum_i (p_c(I * M_i) - mean_j p_c(I * M_j)) M_i / (N * p)``. It
differs from the paper's by ``mean_j p_c * sum_i M_i / (N * p)``, whose expectation is the same at every pixel, and
that constant is removed anyway: the map is
``S - min(S)`` divided by its maximum. A model whose output ignores the masks gives exactly all zeros.
Cost: ``masks + 1`` forward passes (default 200 + 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.saliency.perturbation import (
    MAX_SEED,
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

NAME = "rise"
DEFAULTS: Mapping[str, Any] = {"masks": 200, "grid": 8, "p": 0.5, "seed": 0, "batch": 32}


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out_size, in_size) matrix of 1-D bilinear upsampling with half-pixel centres and clamped edges."""
    u = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    u = np.clip(u, 0.0, in_size - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = u - i0
    a = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(a, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(a, (np.arange(out_size), i1), frac)
    return a


class MaskSet:
    """The ``n`` RISE masks of an H x W image, drawn once from ``seed``; ``mask(i)`` builds mask i (float32, [0, 1])."""

    def __init__(self, n: int, height: int, width: int, grid: int = 8, p: float = 0.5, seed: int = 0):
        check_sizes(n=n, height=height, width=width, grid=grid)
        if not (0.0 < float(p) < 1.0):
            raise ValueError(f"p must be in (0, 1), got p={p!r}")
        self.n, self.height, self.width, self.grid, self.p = int(n), int(height), int(width), int(grid), float(p)
        cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
        rng = np.random.default_rng(seed)
        self.cells = rng.random((n, grid, grid)) < p
        self.shift_y = rng.integers(0, cell_h, n)
        self.shift_x = rng.integers(0, cell_w, n)
        self._up_h = _bilinear_matrix((grid + 1) * cell_h, grid)
        self._up_w = _bilinear_matrix((grid + 1) * cell_w, grid)

    def mask(self, i: int) -> np.ndarray:
        sy, sx = int(self.shift_y[i]), int(self.shift_x[i])
        rows = self._up_h[sy : sy + self.height]
        cols = self._up_w[sx : sx + self.width]
        return (rows @ self.cells[i].astype(np.float64) @ cols.T).astype(np.float32)


def rise_masks(n: int, height: int, width: int, grid: int = 8, p: float = 0.5, seed: int = 0) -> np.ndarray:
    """All masks as an (n, H, W) float32 array (for inspection and tests; ``compute`` builds them batch by batch)."""
    ms = MaskSet(n, height, width, grid, p, seed)
    return np.stack([ms.mask(i) for i in range(n)]) if n else np.zeros((0, height, width), np.float32)


def compute(
    forward: Forward,
    image: np.ndarray,
    targets: Sequence[int],
    masks: int = 200,
    grid: int = 8,
    p: float = 0.5,
    seed: int = 0,
    batch: int = 32,
) -> SaliencyResult:
    """RISE maps for ``targets`` from one set of ``masks`` masked images (see the module docstring)."""
    img = check_image(image)
    wanted = check_targets(targets)
    _, h, w = img.shape
    ms = MaskSet(masks, h, w, grid, p, seed)

    def apply(x: np.ndarray, i: int) -> None:
        x *= ms.mask(i)[None]

    probs = sweep(forward, img, masks, apply, batch, wanted)
    # The weighted sum rebuilds the masks instead of holding all N of them (three tiny matrix products each).
    p0 = probs[0]
    d = probs[1:, wanted] - p0[wanted]  # (N, T): centred on p0 first, exact zeros when the model ignores the mask
    total = np.zeros((len(wanted), h, w), dtype=np.float64)
    density = np.zeros((h, w), dtype=np.float64)
    for i in range(masks):
        m = ms.mask(i).astype(np.float64)
        total += d[i][:, None, None] * m[None]
        density += m
    centred = total - d.mean(0)[:, None, None] * density[None]  # = sum_i (p_i - mean_j p_j) M_i
    sal = centred / (masks * ms.p)
    maps = {c: normalise(sal[t] - sal[t].min()) for t, c in enumerate(wanted)}
    return SaliencyResult(probabilities=p0, maps=maps, passes=masks + 1)


def passes(height: int, width: int, params: Mapping[str, Any]) -> int:
    """Forward passes per image: one per mask, plus the unperturbed image."""
    return int({**DEFAULTS, **params}["masks"]) + 1


def description(params: Mapping[str, Any]) -> str:
    q = {**DEFAULTS, **params}
    return (
        f"RISE (Petsiuk et al. 2018, BMVC): {q['masks']} random {q['grid']}x{q['grid']} binary masks, keep "
        f"probability {q['p']:g}, bilinearly upsampled and randomly shifted, seed {q['seed']}; map = "
        f"probability-weighted mask sum with centred scores, minus its minimum, / max"
    )


def validate(params: Mapping[str, Any], where: str, size: tuple[int, int] | None) -> dict[str, Any]:
    note = f"the image is {size[0]} x {size[1]} px" if size else ""
    return {
        "masks": int_param(params, "masks", where, 1),
        "grid": int_param(params, "grid", where, 1, min(size) if size else None, note),
        "p": float_param(params, "p", where, 0.0, 1.0, open_ends=True, note="keep probability of a cell"),
        "seed": int_param(params, "seed", where, 0, MAX_SEED),
        "batch": int_param(params, "batch", where, 1),
    }


METHOD = Method(
    name=NAME, defaults=DEFAULTS, compute=compute, passes=passes, description=description, validate=validate
)
