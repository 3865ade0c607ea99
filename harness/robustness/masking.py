"""Does the answer depend on the object? Hide the labelled regions of a photo, and, as the control, hide a region of
the same shape and area placed at random elsewhere in the same photo (several seeded draws); keep only the regions.

Everything happens on the model's input (the canonical float32 3 x H x W, after the spec's resize): the regions'
mask is rasterised over the photo (polygons, else boxes, as the localization scores do) and taken through the same
resize as the photo. A hidden region is filled with grey (0.5) or with a strong blur of the photo (`fill`). The
control's shape is the same mask shifted circularly (a part that leaves one side re-enters on the other, so the
covers of a photo full of books still have a place elsewhere); of `TRIES` shifts drawn uniformly, the one
overlapping the labelled regions least is used, and its overlap is recorded (a region covering most of the photo
cannot be placed elsewhere, and says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from harness.data import Sample
from harness.preprocess import prepare
from harness.robustness.batching import answer
from harness.robustness.corruptions import photo_rng, to_uint8
from harness.saliency import localization
from harness.spec import ModelSpec

GREY = 0.5
TRIES = 64
BACKGROUND = "background"


def photo_mask(sample: Sample) -> np.ndarray:
    """Boolean (h, w) mask of every labelled region of the photo (union; a polygon, else its box)."""
    h, w = int(sample.image.shape[1]), int(sample.image.shape[2])
    mask = np.zeros((h, w), dtype=bool)
    for r in sample.regions:
        m = localization.polygon_mask(r.polygon, h, w) if len(r.polygon) >= 3 else np.zeros((h, w), bool)
        if not m.any():
            m = localization.box_mask(r.bbox, h, w)
        mask |= m
    return mask


def input_mask(spec: ModelSpec, mask: np.ndarray) -> np.ndarray:
    """A photo's (h, w) mask taken to the model's input geometry (the spec's resize): boolean (H, W)."""
    t = torch.from_numpy(np.repeat(np.asarray(mask, dtype=np.uint8)[None] * 255, 3, axis=0))
    return prepare(spec, [t])[0, 0] >= 0.5


def overlaps_by_shift(mask: np.ndarray) -> np.ndarray:
    """How many pixels of `mask` still overlap it after a circular shift by (dy, dx), for every shift at once (its
    circular autocorrelation, by FFT): entry [dy % h, dx % w]."""
    f = np.fft.rfft2(np.asarray(mask, dtype=np.float64))
    return np.rint(np.fft.irfft2(f * np.conj(f), s=mask.shape))


def place_elsewhere(
    mask: np.ndarray, rng: np.random.Generator, tries: int = TRIES, overlaps: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """(the mask shifted circularly (what leaves one side re-enters on the other: the same shape and area, with a
    place elsewhere even when it covers much of the image), the share of its pixels that still overlap the original):
    of `tries` shifts drawn uniformly, the least overlapping one (the first drawn among equals). `overlaps`:
    overlaps_by_shift(mask), when the caller places the same mask several times."""
    h, w = mask.shape
    area = int(np.count_nonzero(mask))
    if area == 0:
        return mask.copy(), 0.0
    dys, dxs = rng.integers(0, h, size=tries), rng.integers(0, w, size=tries)
    table = overlaps if overlaps is not None else overlaps_by_shift(mask)
    counts = table[dys, dxs]
    best = int(np.argmin(counts))
    return np.roll(mask, (int(dys[best]), int(dxs[best])), axis=(0, 1)), float(counts[best]) / area


def filler(x: np.ndarray, fill: str) -> np.ndarray:
    """What a hidden region shows: grey, or the image blurred with a Gaussian of sigma min(H, W) / 16."""
    if fill == "grey":
        return np.full_like(x, GREY)
    sigma = min(x.shape[1], x.shape[2]) / 16
    return np.stack([ndimage.gaussian_filter(ch, sigma, mode="reflect") for ch in x]).astype(np.float32)


def masked_versions(
    x: np.ndarray, mask: np.ndarray, fill: str, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[float]]:
    """(batch of 2 + draws canonical images: the regions hidden, only the regions kept (the rest grey), then the same
    shape hidden elsewhere `draws` times; the overlap of each draw with the regions)."""
    fill_img = filler(x, fill)
    out = [np.where(mask, fill_img, x), np.where(mask, x, np.float32(GREY))]
    overlaps = []
    table = overlaps_by_shift(mask)
    for _ in range(draws):
        other, overlap = place_elsewhere(mask, rng, overlaps=table)
        out.append(np.where(other, fill_img, x))
        overlaps.append(round(overlap, 4))
    return np.stack(out).astype(np.float32), overlaps


def skip_reason(sample: Sample, has_regions: bool) -> str:
    """Why a photo is not masked ('' when it is): the test set has no regions, the photo is background, or none."""
    if not has_regions:
        return "no_annotations"
    if sample.label == BACKGROUND:
        return "background"
    return "" if sample.regions else "no_regions"


def image_record(
    sample: Sample,
    classes: Sequence[str],
    clean: np.ndarray,
    probs: np.ndarray | None,
    area: float,
    overlaps: Sequence[float],
    reason: str,
) -> dict[str, Any]:
    """One photo's masking evidence: its clean answer, and (when masked) the answers with the regions hidden, with
    only the regions kept, and with the same shape hidden elsewhere (each draw with its overlap)."""
    classes = list(classes)
    rec: dict[str, Any] = {
        "image": sample.name,
        "label": sample.label,
        "acceptable": sorted(sample.acceptable),
        "clean": answer(clean, classes, sample.label),
    }
    if reason or probs is None:
        return rec | {"status": "skipped", "skip_reason": reason or "not masked"}
    return rec | {
        "status": "masked",
        "area_fraction": round(float(area), 4),
        "hidden": answer(probs[0], classes, sample.label),
        "kept": answer(probs[1], classes, sample.label),
        "random": [answer(p, classes, sample.label) | {"overlap": o} for p, o in zip(probs[2:], overlaps)],
    }


def image_rng(x: np.ndarray, seed: int) -> np.random.Generator:
    """The placements' generator of one photo (its canonical pixels, the run's seed)."""
    return photo_rng(to_uint8(x.transpose(1, 2, 0)), "masking", 0, seed)
