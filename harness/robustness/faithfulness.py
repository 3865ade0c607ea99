"""Are the maps faithful to the model? Deletion and insertion curves (Petsiuk, Das & Saenko 2018, "RISE: Randomized
Input Sampling for Explanation of Black-box Models", BMVC), for every saliency method's stored maps and, as the
control Quantus recommends, for a random map of the same image.

Deletion: the pixels are removed (set to 0, black, as in the paper's code) most important first, in `steps` equal
steps; the curve is the probability of the class the model predicted for the photo, from the intact image (x = 0) to
the all-black one (x = 1). A faithful map makes it fall early: a low area under the curve (AUC). Insertion: from a
blurred copy of the image (the paper's Gaussian, kernel 11, sigma 5 at 224 px, scaled to the input's size) the
original pixels are put back most important first: a faithful map makes it rise early (a high AUC). AUC is the
trapezoid over x in [0, 1] (the paper's `auc`). The random map: uniform noise on a RANDOM_GRID x RANDOM_GRID grid,
upsampled bilinearly (as smooth as the maps it stands beside, so the control removes pixels in blobs too, not in
salt-and-pepper the model may react to differently). Ties in a map are broken by a seeded random order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from harness.robustness.maps import resize_map

RANDOM_GRID = 8
BLUR_SIGMA_224 = 5.0
RANDOM = "random"


def auc(curve: Sequence[float]) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 2:
        raise ValueError(f"a curve needs at least 2 points, got {c.size}")
    return float((c.sum() - c[0] / 2 - c[-1] / 2) / (c.size - 1))


def pixel_order(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first; equal values in a seeded random order."""
    values = np.asarray(saliency, dtype=np.float64).ravel()
    tiebreak = rng.permutation(values.size)
    return np.lexsort((tiebreak, -values))


def random_map(hw: tuple[int, int], rng: np.random.Generator, grid: int = RANDOM_GRID) -> np.ndarray:
    """The control: uniform noise on a grid x grid lattice, upsampled bilinearly to hw."""
    return resize_map(rng.random((grid, grid)).astype(np.float32), hw)


def blurred(x: np.ndarray) -> np.ndarray:
    """The insertion curve's start: each channel blurred with the paper's Gaussian (sigma 5 px at 224 px)."""
    sigma = BLUR_SIGMA_224 * min(x.shape[1], x.shape[2]) / 224
    return np.stack([ndimage.gaussian_filter(ch, sigma, mode="reflect", truncate=1.0) for ch in x]).astype(np.float32)


def counts(n_pixels: int, steps: int) -> list[int]:
    """How many pixels are changed at each point 0..steps of a curve (0 first, all of them last)."""
    return [round(k * n_pixels / steps) for k in range(steps + 1)]


def interior_images(source: np.ndarray, start: np.ndarray, order: np.ndarray, steps: int) -> np.ndarray:
    """The images between a curve's ends: `start` with its first n_k pixels of `order` taken from `source`, for
    k = 1 .. steps - 1 (deletion: the photo, pixels from the black image; insertion: the blurred photo, pixels from
    the photo)."""
    c, h, w = source.shape
    flat_src, flat_start = source.reshape(c, h * w), start.reshape(c, h * w)
    out = []
    for n in counts(h * w, steps)[1:-1]:
        img = flat_start.copy()
        idx = order[:n]
        img[:, idx] = flat_src[:, idx]
        out.append(img.reshape(c, h, w))
    return np.stack(out) if out else np.zeros((0, c, h, w), np.float32)


def image_batch(
    x: np.ndarray, maps: Mapping[str, np.ndarray], steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """(every image the curves of one photo need, the names in order): the photo, the black image, the blurred one,
    then per map (the given ones, then RANDOM) its deletion and its insertion interior images."""
    h, w = x.shape[1:]
    black, blur = np.zeros_like(x), blurred(x)
    names = [*sorted(maps), RANDOM]
    everything = {**{k: resize_map(m, (h, w)) for k, m in maps.items()}, RANDOM: random_map((h, w), rng)}
    parts = [np.stack([x, black, blur])]
    for name in names:
        order = pixel_order(everything[name], rng)
        parts.append(interior_images(black, x, order, steps))  # deletion: x with the first pixels set to black
        parts.append(interior_images(x, blur, order, steps))  # insertion: the blur with the first pixels restored
    return np.concatenate(parts).astype(np.float32), names


def curves(probs: np.ndarray, names: Sequence[str], steps: int, target: int) -> dict[str, dict[str, list[float]]]:
    """The deletion and insertion curves (probability of `target`) of each map, from image_batch's probabilities."""
    p = np.asarray(probs, dtype=np.float64)[:, target]
    clean, black, blur = p[0], p[1], p[2]
    out: dict[str, dict[str, list[float]]] = {}
    k, at = steps - 1, 3
    for name in names:
        dele, ins = p[at : at + k], p[at + k : at + 2 * k]
        at += 2 * k
        out[name] = {
            "deletion": [round(float(v), 6) for v in (clean, *dele, black)],
            "insertion": [round(float(v), 6) for v in (blur, *ins, clean)],
        }
    return out


def image_scores(rec: Mapping[str, Any], method: str) -> dict[str, float] | None:
    """Deletion and insertion AUC of one image's curves for `method` (or RANDOM); None when it has none."""
    c = (rec.get("curves") or {}).get(method)
    if not isinstance(c, Mapping):
        return None
    return {"deletion": auc(c["deletion"]), "insertion": auc(c["insertion"])}
