"""Tests for harness.saliency.localization: masks, pointing game, energy share and Grad-CAM box localization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from harness.saliency.localization import (
    box_iou,
    box_mask,
    cam_bbox,
    energy_share,
    gradcam_localization,
    pointing_game,
    polygon_mask,
)

ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "small-book-images" / "annotations"
H, W = 48, 64


def all_three(cam: np.ndarray, box) -> tuple[bool, float, bool, float]:
    """Pointing game, energy share and Grad-CAM localization of ``cam`` against one box."""
    mask = box_mask(box, *cam.shape)
    ok, iou = gradcam_localization(cam, [box])
    return pointing_game(cam, mask), energy_share(cam, mask), ok, iou


# --- masks ------------------------------------------------------------------------------------------


def test_box_mask_known_pixels():
    m = box_mask([2, 3, 4, 5], 10, 12)
    expected = np.zeros((10, 12), dtype=bool)
    expected[3:8, 2:6] = True
    np.testing.assert_array_equal(m, expected)


def test_box_mask_rounds_edges_half_up_and_clips():
    # x0 = round(1.5) = 2, x1 = round(3.7) = 4, y0 = round(0.4) = 0, y1 = round(3.7) = 4
    m = box_mask([1.5, 0.4, 2.2, 3.3], 6, 6)
    assert np.argwhere(m).min(0).tolist() == [0, 2]
    assert np.argwhere(m).max(0).tolist() == [3, 3]
    clipped = box_mask([-3, 4, 5, 100], 8, 6)
    assert clipped.sum() == 2 * 4  # columns 0-1, rows 4-7
    assert not box_mask([20, 20, 5, 5], 8, 6).any()


def test_polygon_triangle_counts_centres_on_the_edge():
    # Centre (c + .5, r + .5) lies inside or on x + y <= 4 iff c + r <= 3: 1 + 2 + 3 + 4 = 10 pixels.
    m = polygon_mask([(0, 0), (4, 0), (0, 4)], 5, 5)
    rr, cc = np.indices((5, 5))
    np.testing.assert_array_equal(m, rr + cc <= 3)


def test_polygon_accepts_flat_coco_list():
    pts = [(3, 2), (20, 4), (15, 18), (4, 12)]
    flat = [v for p in pts for v in p]
    np.testing.assert_array_equal(polygon_mask(flat, 24, 24), polygon_mask(pts, 24, 24))


@given(st.integers(-5, W), st.integers(-5, H), st.integers(0, W), st.integers(0, H))
def test_rectangle_polygon_equals_box_mask(x, y, w, h):
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if w == 0 or h == 0:
        assert not box_mask([x, y, w, h], H, W).any()
    else:
        np.testing.assert_array_equal(polygon_mask(corners, H, W), box_mask([x, y, w, h], H, W))


@pytest.mark.parametrize("name", ["test_easy.json", "test_difficult.json"])
def test_real_polygons_match_coco_area_and_bbox(name):
    with open(ANNOTATIONS / name, encoding="utf-8") as f:
        coco = json.load(f)
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for ann in coco["annotations"]:
        m = polygon_mask(ann["segmentation"][0], *sizes[ann["image_id"]])
        assert m.sum() == pytest.approx(ann["area"], rel=0.02), ann["id"]
        rows, cols = np.nonzero(m)
        extent = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()]
        assert box_iou(extent, ann["bbox"]) > 0.97, ann["id"]


def test_mask_errors():
    with pytest.raises(ValueError, match="at least 3 points"):
        polygon_mask([(0, 0), (1, 1)], 4, 4)
    with pytest.raises(ValueError, match="even number"):
        polygon_mask([0, 0, 1, 1, 2], 4, 4)
    with pytest.raises(ValueError, match="height=0"):
        box_mask([0, 0, 1, 1], 0, 4)
    with pytest.raises(ValueError, match="width and height must be >= 0"):
        box_mask([0, 0, -1, 1], 4, 4)


# --- the three metrics: known answers --------------------------------------------------------------


def test_indicator_map_of_the_box_scores_perfectly():
    box = [10, 5, 20, 15]
    cam = box_mask(box, H, W).astype(np.float32)
    hit, share, ok, iou = all_three(cam, box)
    assert hit is True
    assert share == 1.0
    assert ok is True and iou == 1.0
    assert cam_bbox(cam) == (10, 5, 20, 15)


def test_map_far_from_the_region_scores_zero():
    box = [2, 2, 10, 8]  # columns 2-11, rows 2-9
    cam = np.zeros((H, W))
    cam[30:40, 45:60] = 1.0  # nearest pixel is > 20 px away
    hit, share, ok, iou = all_three(cam, box)
    assert hit is False
    assert share == 0.0
    assert ok is False and iou < 0.5
    assert iou == 0.0


def test_pointing_game_tolerance_boundary():
    mask = box_mask([10, 10, 10, 10], H, W)  # last region column is 19
    for col, expected in [(19, True), (34, True), (35, False)]:
        cam = np.zeros((H, W))
        cam[15, col] = 1.0
        assert pointing_game(cam, mask) is expected, col
    cam = np.zeros((H, W))
    cam[15, 35] = 1.0
    assert pointing_game(cam, mask, tolerance_px=16.0) is True
    assert pointing_game(cam, mask, tolerance_px=0.0) is False
    # Diagonal distance is Euclidean: 12 px right and 9 px down from (19, 19) is 15 px.
    cam = np.zeros((H, W))
    cam[19 + 9, 19 + 12] = 1.0
    assert pointing_game(cam, mask) is True


def test_pointing_game_ties_use_first_argmax():
    cam = np.ones((H, W))  # every pixel is a maximum: the first, (0, 0), is used
    assert pointing_game(cam, box_mask([0, 0, 3, 3], H, W)) is True
    assert pointing_game(cam, box_mask([40, 30, 5, 5], H, W)) is False
    cam = np.zeros((H, W))
    cam[40, 60] = cam[2, 2] = 5.0  # (2, 2) comes first in row-major order
    assert pointing_game(cam, box_mask([0, 0, 5, 5], H, W)) is True


def test_energy_share_partial_and_zero():
    cam = np.zeros((4, 4))
    cam[0, 0], cam[3, 3] = 3.0, 1.0
    assert energy_share(cam, box_mask([0, 0, 2, 2], 4, 4)) == 0.75
    assert energy_share(np.zeros((4, 4)), box_mask([0, 0, 2, 2], 4, 4)) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        energy_share(cam - 0.5, box_mask([0, 0, 2, 2], 4, 4))


def test_cam_bbox_threshold_and_largest_component():
    cam = np.zeros((20, 20))
    cam[2:4, 2:4] = 1.0  # small, holds the peak
    cam[10:16, 8:18] = 0.5  # large segment at half the peak
    cam[0, 19] = 0.1  # below 15% of the peak
    assert cam_bbox(cam) == (8, 10, 10, 6)
    cam[9, 7] = 0.2  # diagonal neighbour: 8-connected, so it joins the large segment
    assert cam_bbox(cam) == (7, 9, 11, 7)
    assert cam_bbox(cam, threshold=0.6) == (2, 2, 2, 2)
    assert cam_bbox(np.zeros((5, 5))) is None
    assert cam_bbox(-np.ones((5, 5))) is None


def test_cam_bbox_equal_sizes_prefer_more_energy():
    cam = np.zeros((10, 10))
    cam[0:2, 0:2] = 0.5
    cam[6:8, 6:8] = 1.0
    assert cam_bbox(cam) == (6, 6, 2, 2)


def test_gradcam_localization_threshold_and_best_box():
    cam = box_mask([10, 10, 20, 10], H, W).astype(float)  # 200 px
    ok, iou = gradcam_localization(cam, [[40, 30, 5, 5], [10, 10, 20, 20]])  # IoU 200/400 with the second
    assert iou == pytest.approx(0.5) and ok is True
    ok, iou = gradcam_localization(cam, [[10, 10, 20, 20]], iou_threshold=0.51)
    assert ok is False and iou == pytest.approx(0.5)
    assert gradcam_localization(np.zeros((H, W)), [[0, 0, 5, 5]]) == (False, 0.0)


def test_box_iou_known_values():
    assert box_iou([0, 0, 2, 2], [1, 1, 2, 2]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [0, 0, 2, 2]) == 1.0
    assert box_iou([0, 0, 2, 2], [2, 0, 2, 2]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    assert box_iou([0.5, 0.5, 1, 1], [0, 0, 2, 2]) == pytest.approx(0.25)


def test_input_errors_name_the_bad_values():
    cam = np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        energy_share(cam, np.zeros((5, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 4\)"):
        pointing_game(cam, np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"2-D.*\(4, 5, 3\)"):
        cam_bbox(np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="finite"):
        cam_bbox(np.full((4, 5), np.nan))
    with pytest.raises(ValueError, match="mask is empty"):
        pointing_game(cam, np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="tolerance_px=-1"):
        pointing_game(cam, np.ones((4, 5), dtype=bool), tolerance_px=-1)
    with pytest.raises(ValueError, match="threshold=1.5"):
        cam_bbox(cam, threshold=1.5)
    with pytest.raises(ValueError, match="boxes is empty"):
        gradcam_localization(cam, [])
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        gradcam_localization(cam, [[0, 0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="iou_threshold=2"):
        gradcam_localization(cam, [[0, 0, 1, 1]], iou_threshold=2)


@pytest.mark.parametrize("name", ["test_easy.json"])
def test_real_cover_masks_as_maps(name):
    with open(ANNOTATIONS / name, encoding="utf-8") as f:
        coco = json.load(f)
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    for ann in coco["annotations"]:
        mask = polygon_mask(ann["segmentation"][0], *sizes[ann["image_id"]])
        cam = mask.astype(np.float32)
        assert pointing_game(cam, mask)
        assert energy_share(cam, mask) == 1.0
        ok, iou = gradcam_localization(cam, [ann["bbox"]])
        assert ok and iou > 0.97, ann["id"]


# --- hypothesis properties -------------------------------------------------------------------------

int_maps = st.tuples(st.integers(3, 24), st.integers(3, 24)).flatmap(
    lambda hw: arrays(np.int64, hw, elements=st.integers(0, 255)).map(lambda a: a.astype(np.float64))
)


@st.composite
def map_and_box(draw):
    cam = draw(int_maps)
    h, w = cam.shape
    x, y = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
    bw, bh = draw(st.integers(1, w - x)), draw(st.integers(1, h - y))
    return cam, [x, y, bw, bh]


def unique_max(cam: np.ndarray) -> bool:
    return int((cam == cam.max()).sum()) == 1


def unambiguous_segments(cam: np.ndarray, threshold: float = 0.15) -> bool:
    """No pixel sits on the threshold and the largest segment is unique by (size, energy)."""
    peak = cam.max()
    if peak <= 0 or np.any(np.abs(cam - threshold * peak) < 1e-6 * peak):
        return False
    labels, count = ndimage.label(cam >= threshold * peak, structure=np.ones((3, 3)))
    keys = sorted(((labels == i).sum(), cam[labels == i].sum()) for i in range(1, count + 1))
    return count == 1 or keys[-1] != keys[-2]


@given(map_and_box())
def test_transposing_image_and_box_gives_the_same_scores(data):
    cam, (x, y, w, h) = data
    assume(unique_max(cam) and unambiguous_segments(cam))
    hit, share, ok, iou = all_three(cam, [x, y, w, h])
    hit_t, share_t, ok_t, iou_t = all_three(cam.T.copy(), [y, x, h, w])
    assert hit == hit_t
    assert share == pytest.approx(share_t, rel=1e-12, abs=1e-12)
    assert ok == ok_t and iou == pytest.approx(iou_t, rel=1e-12)
    bx, by, bw, bh = cam_bbox(cam)
    assert cam_bbox(cam.T.copy()) == (by, bx, bh, bw)


@given(map_and_box(), st.floats(1e-3, 1e3))
def test_scaling_the_map_by_a_positive_constant_changes_nothing(data, scale):
    cam, box = data
    assume(unambiguous_segments(cam))
    mask = box_mask(box, *cam.shape)
    assert pointing_game(cam * scale, mask) == pointing_game(cam, mask)
    assert energy_share(cam * scale, mask) == pytest.approx(energy_share(cam, mask), rel=1e-9, abs=1e-12)
    assert cam_bbox(cam * scale) == cam_bbox(cam)
    assert gradcam_localization(cam * scale, [box]) == gradcam_localization(cam, [box])


@given(
    st.tuples(st.integers(1, 16), st.integers(1, 16)).flatmap(
        lambda hw: st.tuples(
            arrays(np.float64, hw, elements=st.floats(0, 1e6, allow_nan=False)),
            arrays(np.bool_, hw),
        )
    )
)
def test_energy_share_is_a_fraction(data):
    cam, mask = data
    share = energy_share(cam, mask)
    assert 0.0 <= share <= 1.0
    if cam.sum() > 0:
        assert share + energy_share(cam, ~mask) == pytest.approx(1.0)


@given(map_and_box())
def test_box_iou_matches_mask_iou_for_pixel_boxes(data):
    cam, box = data
    pred = cam_bbox(cam)
    assume(pred is not None)
    a, b = box_mask(pred, *cam.shape), box_mask(box, *cam.shape)
    assert box_iou(pred, box) == pytest.approx((a & b).sum() / (a | b).sum())
    # box_mask(cam_bbox(cam)) is tight: each of its border rows and columns holds an above-threshold pixel.
    above = (cam >= 0.15 * cam.max()) & a
    x0, y0, bw, bh = pred
    for line in (above[y0], above[y0 + bh - 1], above[:, x0], above[:, x0 + bw - 1]):
        assert line.any()
