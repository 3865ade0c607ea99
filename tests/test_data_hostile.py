"""Hostile and unusual datasets: path traversal, malformed COCO, decompression bombs, real-photo decoding, memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.data import DataError, decode_image, load_test, load_train, working_short_side

CLASSES = ("background", "bayes")


def _png(path: Path, size=(40, 30), color=(120, 30, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _coco(root: Path, content, split: str = "test_x") -> Path:
    ann = root / "annotations" / f"{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(content if isinstance(content, str) else json.dumps(content))
    return ann


def _good(root: Path) -> dict:
    _png(root / "test_x" / "a.png")
    return {"images": [{"id": 1, "file_name": "test_x/a.png", "primary_label": "bayes", "acceptable_labels": ["bayes"]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 2, 10, 10],
                             "segmentation": [[2, 2, 12, 2, 12, 12]]}],
            "categories": [{"id": 1, "name": "background"}, {"id": 2, "name": "bayes"}]}


def test_good_coco_loads(tmp_path):
    _coco(tmp_path, _good(tmp_path))
    ds = load_test(tmp_path, "test_x", CLASSES)
    assert ds.samples[0].name == "test_x/a.png" and ds.samples[0].regions[0].bbox == (2.0, 2.0, 10.0, 10.0)


# --- path traversal ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside.png", "ABS", "test_x/../../outside.png"])
def test_file_name_outside_the_root_is_refused(tmp_path, name):
    root = tmp_path / "data"
    outside = _png(tmp_path / "outside.png")  # exists: it must still not be read
    coco = _good(root)
    coco["images"][0]["file_name"] = str(outside) if name == "ABS" else name
    ann = _coco(root, coco)
    with pytest.raises(DataError, match=r"test_x\.json: images\[0\]: file_name .* not inside the dataset root"):
        load_test(root, "test_x", CLASSES)
    assert ann.is_file()


def test_symlinked_image_escaping_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    for c in CLASSES:
        _png(root / "train" / c / "x.png")
    (root / "train" / "bayes" / "link.png").symlink_to(_png(tmp_path / "secret.png"))
    with pytest.raises(DataError, match=r"link\.png: resolves to .* outside the dataset root"):
        load_train(root)


# --- malformed COCO ------------------------------------------------------------------------------------------------


def _mutate(path: str, value):
    def f(coco):
        if path == "":
            return value
        keys = path.split(".")
        node = coco
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
        return coco
    return f


@pytest.mark.parametrize("path, value, needle", [
    ("", None, "holds None, not a COCO object"),
    ("images", {"a": 1}, "'images' must be a list"),
    ("images.0", "x", r"images\[0\]: must be an object"),
    ("annotations.0.bbox", KeyError, r"annotations\[0\]: missing key 'bbox'"),
    ("images.0.file_name", KeyError, r"images\[0\]: missing key 'file_name'"),
    ("annotations.0.image_id", KeyError, r"annotations\[0\]: missing key 'image_id'"),
    ("categories.1.name", KeyError, r"categories\[1\]: missing key 'name'"),
    ("annotations.0.bbox", [1, 2, 3], r"annotations\[0\]: 'bbox' = \[1, 2, 3\] must be 4 numbers"),
    ("annotations.0.bbox", [1, 2, "a", 4], r"annotations\[0\]: 'bbox'"),
    ("images.0.acceptable_labels", "bayes", r"images\[0\]: 'acceptable_labels' = 'bayes' must be a list"),
    ("images.0.primary_label", 3, r"images\[0\]: 'primary_label' = 3 must be a label string"),
    ("images.0.background_acceptable", "yes", r"images\[0\]: 'background_acceptable'"),
    ("annotations.0.segmentation", [[1, 2, 3]], r"annotations\[0\]: 'segmentation'\[0\]"),
    ("annotations.0.image_id", 99, r"annotations\[0\]: image_id 99 matches no entry of 'images'"),
    ("annotations.0.segmentation", [[2, 2, 120, 2, 12, 12]], r"annotations\[0\]: polygon .* outside the 40x30 image"),
    ("annotations.0.bbox", [2, 2, 100, 10], r"annotations\[0\]: box .* outside the 40x30 image"),
])
def test_malformed_coco_names_file_entry_and_key(tmp_path, path, value, needle):
    coco = _mutate(path, value)(_good(tmp_path))
    _coco(tmp_path, coco)
    with pytest.raises(DataError, match=r"test_x\.json: .*" + needle):
        load_test(tmp_path, "test_x", CLASSES)


def test_duplicate_image_ids(tmp_path):
    coco = _good(tmp_path)
    coco["images"].append(dict(coco["images"][0]))
    _coco(tmp_path, coco)
    with pytest.raises(DataError, match=r"images\[1\]: duplicate image id 1"):
        load_test(tmp_path, "test_x", CLASSES)


# --- decoding real photos ------------------------------------------------------------------------------------------


def test_decompression_bomb_is_a_clear_error(tmp_path, monkeypatch):
    f = _png(tmp_path / "big.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big\.png: refused as a possible decompression bomb.*MAX_IMAGE_PIXELS"):
        decode_image(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between 1x and 2x the limit: Pillow only warns
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(f)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left of the stored pixels
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    t, scale, size = decode_image(tmp_path / "phone.jpg")
    assert tuple(t.shape) == (3, 60, 30) and size == (30, 60) and scale == 1.0
    assert t[:, :10, :].float().mean() > 200  # the band is now at the top


def test_16_bit_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((20, 20), 30000, np.uint16)).save(tmp_path / "deep.png")
    t, _, _ = decode_image(tmp_path / "deep.png")
    assert abs(int(t[0, 0, 0]) - 117) <= 1 and t.shape[0] == 3


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "L", "1"])
def test_other_modes_decode_to_rgb(tmp_path, mode):
    im = Image.new("RGB", (16, 12), (200, 100, 50)).convert(mode)
    f = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(f)
    t, _, _ = decode_image(f)
    assert tuple(t.shape) == (3, 12, 16)


def test_working_resolution_scales_image_and_regions(tmp_path):
    coco = _good(tmp_path)
    _png(tmp_path / "test_x" / "a.png", size=(1200, 900))
    coco["annotations"][0]["bbox"] = [120, 90, 600, 450]
    coco["annotations"][0]["segmentation"] = [[120, 90, 720, 90, 720, 540]]
    _coco(tmp_path, coco)
    s = load_test(tmp_path, "test_x", CLASSES, max_short_side=300).samples[0]
    assert tuple(s.image.shape) == (3, 300, 400) and s.scale == pytest.approx(1 / 3) and s.original_size == (1200, 900)
    assert s.regions[0].bbox == pytest.approx((40, 30, 200, 150))
    assert s.regions[0].polygon[1] == pytest.approx((240, 30))


def test_small_images_are_never_upscaled_and_the_bundled_set_is_unchanged(tmp_path, bundled_root):
    t, scale, _ = decode_image(_png(tmp_path / "s.png", size=(40, 30)), max_short_side=512)
    assert tuple(t.shape) == (3, 30, 40) and scale == 1.0
    classes = load_train(bundled_root).classes
    hard = load_test(bundled_root, "test_difficult", classes, max_short_side=working_short_side(224))
    assert all(tuple(s.image.shape) == (3, 480, 640) and s.scale == 1.0 for s in hard.samples)
    assert working_short_side(224) == 512 and working_short_side(320) == 640


def test_large_jpeg_is_decoded_at_working_size(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(tmp_path / "big.jpg", quality=70)
    t, scale, size = decode_image(tmp_path / "big.jpg", max_short_side=300)
    assert tuple(t.shape) == (3, 300, 400) and size == (2000, 1500) and scale == pytest.approx(0.2)


@settings(max_examples=40, deadline=None)
@given(w=st.integers(40, 400), h=st.integers(40, 400), short=st.integers(20, 200),
       box=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0.05, 0.5), st.floats(0.05, 0.5)))
def test_scaled_regions_stay_inside_the_scaled_image(tmp_path_factory, w, h, short, box):
    root = tmp_path_factory.mktemp("h")
    coco = _good(root)
    _png(root / "test_x" / "a.png", size=(w, h))
    coco["annotations"][0]["bbox"] = [box[0] * w, box[1] * h, box[2] * w, box[3] * h]
    coco["annotations"][0]["segmentation"] = []
    _coco(root, coco)
    s = load_test(root, "test_x", CLASSES, max_short_side=short).samples[0]
    H, W = s.image.shape[1:]
    assert min(H, W) <= max(short, 1) or s.scale == 1.0
    x, y, bw, bh = s.regions[0].bbox
    assert -1e-6 <= x and -1e-6 <= y and x + bw <= W + 1 and y + bh <= H + 1


def test_mathtext_class_names_do_not_crash_overlays(tmp_path):
    import torch

    from harness.cam import save_overlay
    from harness.data import Region

    img = torch.zeros(3, 30, 40, dtype=torch.uint8)
    region = Region("$x$_cover", ((1.0, 1.0), (20.0, 1.0), (20.0, 20.0)), (1, 1, 19, 19))
    out = save_overlay(tmp_path / "o.png", img, [("predicted $x$_{cover}", np.zeros((30, 40), np.float32))],
                       [region], "a_$b photo")
    assert out.stat().st_size > 0
