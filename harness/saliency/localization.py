"""CAM localization metrics (pointing game, energy share, Grad-CAM box IoU) as small pure functions over
2-D arrays, in the style of Quantus, plus rasterisation of COCO polygons and boxes into masks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "polygon_mask",
    "box_mask",
    "pointing_game",
    "energy_share",
    "cam_bbox",
    "box_iou",
    "gradcam_localization",
    "energy_chance",
    "pointing_chance",
]

# Pixel convention (used by every function here)
# ------------------------------------------------
# Coordinates are COCO pixel coordinates: x to the right, y down, pixel (row r, col c) is the unit square
# [c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5). Boxes are COCO [x, y, w, h].
# A box is snapped to integer pixel edges by rounding x0 = x, y0 = y, x1 = x + w, y1 = y + h to the
# nearest integer (halves round up); pixel (r, c) is inside when x0 <= c < x1 and y0 <= r < y1.
# Polygons are snapped the same way (each vertex rounded to the nearest integer pixel edge), and a pixel is
# inside when its centre lies inside or on the polygon. Hence the polygon of a box's four corners gives
# exactly box_mask of that box, and box_mask(cam_bbox(cam)) is exactly the bounding rectangle of the
# selected component.

Box = tuple[float, float, float, float]

# Polygon rasterisation grid: Pillow draws on an image _SUPERSAMPLE times finer, sampled at pixel centres.
_SUPERSAMPLE = 4


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")


def _as_map(cam: np.ndarray, name: str = "cam") -> np.ndarray:
    """Return ``cam`` as a 2-D float64 array; ValueError unless 2-D, non-empty and finite."""
    a = np.asarray(cam)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, found {int(np.sum(~np.isfinite(a)))} NaN/inf values")
    return a


def _as_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"cam and mask must have the same shape, got cam {shape} and mask {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"mask must be boolean (or 0/1), got dtype {m.dtype} with other values")
        m = m.astype(bool)
    return m


def _check_box(box: Sequence[float], name: str = "box") -> Box:
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 4 numbers [x, y, w, h], got {box!r}") from None
    if len(vals) != 4:
        raise ValueError(f"{name} must be 4 numbers [x, y, w, h], got {box!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be finite, got {box!r}")
    if vals[2] < 0 or vals[3] < 0:
        raise ValueError(f"{name} width and height must be >= 0, got {box!r}")
    return vals[0], vals[1], vals[2], vals[3]


def _check_fraction(v: float, name: str, *, allow_zero: bool) -> None:
    ok = math.isfinite(v) and (0 <= v <= 1 if allow_zero else 0 < v <= 1)
    if not ok:
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {name}={v!r}")


def polygon_mask(polygon: Sequence[tuple[float, float]] | Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of a polygon given as ``[(x, y), ...]`` pixel coordinates.

    A flat COCO segmentation list ``[x1, y1, x2, y2, ...]`` is accepted too. Vertices are rounded to
    integer pixel edges and a pixel is inside when its centre lies inside or on the polygon (see the
    module's pixel convention); parts outside the image are clipped. Rasterised with Pillow's
    ``ImageDraw.polygon`` on a 4x grid sampled at the pixel centres; Pillow rounds edge crossings to
    that grid, so a centre up to 1/8 px outside a slanted edge may also count as inside (axis-aligned
    edges are exact).
    """
    _check_size(height, width)
    pts: list[Any] = list(polygon)
    if pts and not isinstance(pts[0], (Sequence, np.ndarray)):
        if len(pts) % 2:
            raise ValueError(f"flat polygon must have an even number of coordinates, got {len(pts)}")
        pts = list(zip(pts[0::2], pts[1::2]))
    if len(pts) < 3:
        raise ValueError(f"polygon needs at least 3 points, got {len(pts)}: {polygon!r}")
    s = _SUPERSAMPLE
    scaled = []
    for p in pts:
        if len(p) != 2 or not all(math.isfinite(float(v)) for v in p):
            raise ValueError(f"polygon points must be finite (x, y) pairs, got {p!r}")
        # Integer pixel edge e sits at s*e on the fine grid; pixel centre c + 0.5 at s*c + s/2.
        scaled.append((s * _round_half_up(float(p[0])), s * _round_half_up(float(p[1]))))
    img = Image.new("1", (s * width, s * height), 0)
    ImageDraw.Draw(img).polygon(scaled, fill=1, outline=None)
    return np.asarray(img, dtype=bool)[s // 2 :: s, s // 2 :: s].copy()


def box_mask(bbox_xywh: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of a COCO ``[x, y, w, h]`` box.

    Pixel (r, c) is inside when ``x0 <= c < x1`` and ``y0 <= r < y1``, with x0 = round(x),
    x1 = round(x + w) (likewise y), halves rounded up; the box is clipped to the image.
    """
    _check_size(height, width)
    x, y, w, h = _check_box(bbox_xywh, "bbox_xywh")
    x0, x1 = _round_half_up(x), _round_half_up(x + w)
    y0, y1 = _round_half_up(y), _round_half_up(y + h)
    m = np.zeros((height, width), dtype=bool)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def pointing_game(cam: np.ndarray, mask: np.ndarray, tolerance_px: float = 15.0) -> bool:
    """Pointing game: a hit when the map's maximum lies within ``tolerance_px`` pixels of the region.

    Source: Zhang et al. (2016), "Top-down neural attention by excitation backprop", ECCV
    (15-pixel tolerance). The distance is the Euclidean distance between pixel centres, from the
    argmax pixel to the nearest pixel of ``mask`` (``scipy.ndimage.distance_transform_edt``); a
    pixel inside the mask has distance 0. Ties on the maximum: the first argmax in row-major order
    (``np.argmax``) is used, so a constant map points at pixel (0, 0). ``mask`` must not be empty.
    """
    a = _as_map(cam)
    m = _as_mask(mask, a.shape)
    if not math.isfinite(tolerance_px) or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a finite number >= 0, got tolerance_px={tolerance_px!r}")
    if not m.any():
        raise ValueError("mask is empty: the pointing game needs at least one region pixel")
    r, c = np.unravel_index(int(np.argmax(a)), a.shape)
    if m[r, c]:
        return True
    dist = ndimage.distance_transform_edt(~m)
    return bool(dist[r, c] <= tolerance_px)


def energy_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's energy that falls inside the region: ``sum(cam[mask]) / sum(cam)``.

    Source: the energy-based pointing game of Wang et al. (2020), "Score-CAM: Score-weighted
    visual explanations for convolutional neural networks", CVPRW. Values must be >= 0 (apply
    ReLU / normalise first; negative values are a ValueError). A map with zero total energy scores
    0.0. The result is in [0, 1].
    """
    a = _as_map(cam)
    m = _as_mask(mask, a.shape)
    if (a < 0).any():
        raise ValueError(f"cam must be non-negative for energy_share, got minimum {a.min()!r}")
    total = float(a.sum())
    if total == 0.0:
        return 0.0
    return min(1.0, float(a[m].sum()) / total)


def cam_bbox(cam: np.ndarray, threshold: float = 0.15) -> tuple[int, int, int, int] | None:
    """Grad-CAM box: threshold the map at ``threshold * max`` and box the largest connected segment.

    Source: Selvaraju et al. (2017), "Grad-CAM: Visual explanations from deep networks via
    gradient-based localization", ICCV (weakly-supervised localization, 15% of max). Pixels with
    ``cam >= threshold * max(cam)`` are kept; segments are 8-connected (``scipy.ndimage.label``
    with a 3x3 structure). Ties on segment size go to the segment with the larger summed map
    value, then to the first in row-major order. Returns integer COCO ``(x, y, w, h)`` covering
    the segment's pixels (so ``box_mask`` of it is its bounding rectangle), or None when the map has
    no positive value.
    """
    a = _as_map(cam)
    _check_fraction(threshold, "threshold", allow_zero=False)
    peak = float(a.max())
    if peak <= 0.0:
        return None
    labels, count = ndimage.label(a >= threshold * peak, structure=np.ones((3, 3), dtype=bool))
    idx = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(a), labels, idx)
    sums = ndimage.sum_labels(a, labels, idx)
    # lexsort: last key is primary; ties on (size, sum) keep the lowest label via the first key.
    order = np.lexsort((idx, -sums, -sizes))
    best = int(idx[order[0]])
    rows, cols = np.nonzero(labels == best)
    x0, y0 = int(cols.min()), int(rows.min())
    return x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1


def box_iou(a_xywh: Sequence[float], b_xywh: Sequence[float]) -> float:
    """Intersection over union of two COCO ``[x, y, w, h]`` boxes (continuous areas).

    For integer boxes inside the image this equals the IoU of their ``box_mask``s. Two
    zero-area boxes give 0.0.
    """
    ax, ay, aw, ah = _check_box(a_xywh, "a_xywh")
    bx, by, bw, bh = _check_box(b_xywh, "b_xywh")
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def gradcam_localization(
    cam: np.ndarray,
    boxes: Sequence[Sequence[float]],
    threshold: float = 0.15,
    iou_threshold: float = 0.5,
) -> tuple[bool, float]:
    """Grad-CAM localization: correct when the CAM box overlaps some ground-truth box with IoU >= 0.5.

    Source: Selvaraju et al. (2017), Grad-CAM, ICCV, following the ILSVRC localization criterion.
    ``boxes`` are COCO ``[x, y, w, h]`` in the map's pixel coordinates (resize the map to the
    image first). Returns ``(correct, best_iou)``; a map with no positive value gives
    ``(False, 0.0)``. ``boxes`` must not be empty.
    """
    a = _as_map(cam)
    _check_fraction(iou_threshold, "iou_threshold", allow_zero=True)
    checked = [_check_box(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
    if not checked:
        raise ValueError("boxes is empty: need at least one ground-truth box")
    pred = cam_bbox(a, threshold)
    if pred is None:
        return False, 0.0
    best = max(box_iou(pred, b) for b in checked)
    return best >= iou_threshold, best


def energy_chance(mask: np.ndarray) -> float:
    """Chance level of ``energy_share``: the share a uniform (constant, positive) map puts inside the region, which
    is also the expected share of a map of i.i.d. random values: the region's area fraction ``mask.mean()``.
    An empty mask gives 0.0 (as energy_share does)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
    m = _as_mask(m, m.shape)
    return float(m.mean())


def pointing_chance(mask: np.ndarray, tolerance_px: float = 15.0) -> float:
    """Chance level of ``pointing_game``: the hit rate of a peak at a uniformly random pixel, i.e. the fraction of
    pixels whose centre lies within ``tolerance_px`` (Euclidean, ``distance_transform_edt``, as in pointing_game) of
    the region: the region dilated by the tolerance. Tolerance 0 gives ``energy_chance``. An empty mask is a
    ValueError (the pointing game is undefined there)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
    m = _as_mask(m, m.shape)
    if not math.isfinite(tolerance_px) or tolerance_px < 0:
        raise ValueError(f"tolerance_px must be a finite number >= 0, got tolerance_px={tolerance_px!r}")
    if not m.any():
        raise ValueError("mask is empty: the pointing game needs at least one region pixel")
    dist = ndimage.distance_transform_edt(~m)
    return float((dist <= tolerance_px).mean())
