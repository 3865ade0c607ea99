"""Object masking (harness.robustness.masking): the labelled regions hidden against the same shape hidden elsewhere,
with its known answers: a model that reads only the labelled region depends on the object, one that reads only the
image's border does not (and its random control shows no difference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data import Dataset, Region, Sample
from harness.robustness.masking import GREY, input_mask, masked_versions, photo_mask, place_elsewhere
from harness.robustness.measures import masking_summary
from harness.spec import ModelSpec
from harness.thresholds import parse_thresholds
from harness.verdicts import judge
from tests.test_robustness import CLASSES, border_mask, checked_folder, dataset, redness, region_mask

GATED = {"object_gated": True, "object_margin": 0.0}


def _depends(run):
    t = parse_thresholds({"gated": ["*"], "robustness": GATED}, "t")
    return {v.id: v for v in judge(run, t, ["t"]) if v.criterion == "depends_on_object"}


def test_a_model_reading_the_region_depends_on_the_object_and_one_reading_the_border_does_not(tmp_path):
    ds = dataset(n_red=6, n_background=2)
    checked_folder(tmp_path, "region", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",))
    checked_folder(tmp_path, "border", redness(border_mask()), [0.0, -4.0], ds, corruptions=("jpeg",))
    by = _depends(tmp_path)
    region, border = by["onnx-region-t"], by["onnx-border-t"]
    assert region.status == "PASS" and region.gated and region.value > 0.3
    assert "loses the answer on 1.00" in region.detail and "elsewhere on 0.00" in region.detail
    assert border.status == "FAIL" and border.value < 0
    assert "loses the answer on 0.00" in border.detail and "elsewhere on 0.00" in border.detail  # no difference


def test_the_summary_counts_only_photos_answered_right_and_pairs_them_with_their_control(tmp_path):
    ds = dataset(n_red=4, n_background=2)
    folder = checked_folder(tmp_path, "region", redness(region_mask()), [0.0, -4.0], ds, corruptions=("jpeg",))
    recs = json.loads((folder / "robustness.json").read_text())["masking"]["t"]["images"]
    assert [r["status"] for r in recs] == ["masked"] * 4 + ["skipped"] * 2
    assert {r.get("skip_reason") for r in recs[4:]} == {"background"}
    m = masking_summary(recs)
    assert m["n"] == 4 and m["object_lost"] == 1.0 and m["random_lost"] == 0.0 and m["kept"] == 1.0
    assert m["mcnemar_p"] == pytest.approx(0.125) and m["lost_only_hiding_object"] == [r["image"] for r in recs[:4]]
    recs[0]["clean"]["predicted"] = "background"  # answered wrong clean: not counted
    assert masking_summary(recs)["n"] == 3


def test_no_region_annotations_means_no_masking_verdict(tmp_path):
    ds = dataset()
    plain = Dataset("t", ds.classes, tuple(Sample(s.name, s.image, s.label, s.acceptable) for s in ds.samples), False)
    checked_folder(tmp_path, "region", redness(region_mask()), [0.0, -4.0], plain, corruptions=("jpeg",))
    t = parse_thresholds({"gated": ["*"]}, "t")
    assert not [v for v in judge(tmp_path, t, ["t"]) if v.criterion == "depends_on_object"]
    by = _depends(tmp_path)  # gated: reported, and skipped for want of regions (never a pass)
    assert by["onnx-region-t"].status == "SKIP" and "no region annotations" in by["onnx-region-t"].detail


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(8, 40), w=st.integers(8, 40), top=st.integers(0, 30), left=st.integers(0, 30), size=st.integers(1, 20)
)
def test_the_control_is_the_same_shape_shifted_and_its_overlap_is_counted(h, w, top, left, size):
    mask = np.zeros((h, w), bool)
    mask[top : top + size, left : left + size] = True
    mask[top : top + size // 2, left : left + 1] = False  # not a plain rectangle
    other, overlap = place_elsewhere(mask, np.random.default_rng(0))
    assert other.sum() == mask.sum() and other.shape == mask.shape
    if mask.any():
        shifts = [
            (dy, dx) for dy in range(h) for dx in range(w) if np.array_equal(np.roll(mask, (dy, dx), (0, 1)), other)
        ]
        assert shifts, "a circular shift of the same shape"
        assert overlap == pytest.approx((other & mask).sum() / mask.sum())


def test_the_control_is_placed_away_from_the_region_when_there_is_room_and_says_when_there_is_none():
    mask = region_mask()
    other, overlap = place_elsewhere(mask, np.random.default_rng(1))
    assert overlap == 0.0 and not (other & mask).any()
    full = np.ones((10, 10), bool)
    assert place_elsewhere(full, np.random.default_rng(1))[1] == 1.0


def test_the_masked_versions_hide_keep_and_move_the_region():
    x = np.random.default_rng(2).random((3, 16, 16)).astype(np.float32)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    batch, overlaps = masked_versions(x, mask, "grey", 3, np.random.default_rng(3))
    assert batch.shape == (5, 3, 16, 16) and len(overlaps) == 3
    assert (batch[0][:, mask] == GREY).all() and np.array_equal(batch[0][:, ~mask], x[:, ~mask])
    assert (batch[1][:, ~mask] == GREY).all() and np.array_equal(batch[1][:, mask], x[:, mask])
    for img in batch[2:]:
        assert np.isclose(img, GREY).all(axis=0).sum() >= mask.sum()
    blurred, _ = masked_versions(x, mask, "blur", 1, np.random.default_rng(3))
    assert not (blurred[0][:, mask] == GREY).all() and blurred[0][:, mask].std() < x[:, mask].std()


def test_the_region_mask_follows_the_spec_s_resize_to_the_model_input():
    image = torch.zeros((3, 30, 60), dtype=torch.uint8)  # a 60 x 30 photo, the region its left half
    region = Region("red", ((0.0, 0.0), (30.0, 0.0), (30.0, 30.0), (0.0, 30.0)), (0.0, 0.0, 30.0, 30.0))
    m = photo_mask(Sample("a.png", image, "red", frozenset({"red"}), (region,)))
    assert m.sum() == 30 * 30
    spec = ModelSpec(
        input="x", layout="NCHW", size=(16, 16), dtype="float32", value_range="0..1", mean=None, std=None,
        channels="RGB", resize="stretch", output="y", output_kind="logits", classes=CLASSES,
    )  # fmt: skip
    stretched = input_mask(spec, m)
    assert stretched.shape == (16, 16) and stretched[:, :8].all() and not stretched[:, 8:].any()
