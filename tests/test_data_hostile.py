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
    return {
        "images": [{"id": 1, "file_name": "test_x/a.png", "primary_label": "bayes", "acceptable_labels": ["bayes"]}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [2, 2, 10, 10], "segmentation": [[2, 2, 12, 2, 12, 12]]}
        ],
        "categories": [{"id": 1, "name": "background"}, {"id": 2, "name": "bayes"}],
    }


def test_good_coco_loads(tmp_path):
    _coco(tmp_path, _good(tmp_path))
    ds = load_test(tmp_path, "test_x", CLASSES)
    assert ds.samples[0].name == "test_x/a.png" and ds.samples[0].regions[0].bbox == (2.0, 2.0, 10.0, 10.0)


# --- path traversal ------------------------------------------------------------------------------------------------


@pytest.fixture()
def opened(monkeypatch) -> list[str]:
    """Every path Pillow is asked to open (to prove that a refused path is never read)."""
    seen: list[str] = []
    real = Image.open

    def spy(fp, *a, **k):
        seen.append(str(fp))
        return real(fp, *a, **k)

    monkeypatch.setattr(Image, "open", spy)
    return seen


@pytest.mark.parametrize(
    "name",
    [
        "../outside.png",
        "ABS",
        "test_x/../../outside.png",
        "C:\\outside.png",
        "escape/../outside.png",
        "test_x/a.png\x00",
    ],
)
def test_file_name_outside_the_root_is_refused_before_reading(tmp_path, name, opened):
    root = tmp_path / "data"
    outside = _png(tmp_path / "outside.png")  # exists: it must still not be read
    coco = _good(root)
    (root / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # "escape/.." is outside
    (tmp_path / "elsewhere").mkdir()
    coco["images"].insert(0, dict(coco["images"][0], id=7))  # a good entry first: nothing is decoded either
    coco["images"][1]["file_name"] = str(outside) if name == "ABS" else name
    _coco(root, coco)
    with pytest.raises(DataError, match=r"test_x\.json: images\[1\]: file_name .* not inside the dataset root"):
        load_test(root, "test_x", CLASSES)
    assert opened == []


def test_names_are_normalised_and_symlinks_inside_the_root_are_fine(tmp_path):
    coco = _good(tmp_path)
    (tmp_path / "linked").symlink_to(tmp_path / "test_x", target_is_directory=True)
    coco["images"][0]["file_name"] = "test_x/./sub/../a.png"
    coco["images"].append(dict(coco["images"][0], id=2, file_name="linked/a.png"))
    _coco(tmp_path, coco)
    names = [s.name for s in load_test(tmp_path, "test_x", CLASSES).samples]
    assert names == ["test_x/a.png", "linked/a.png"]


def test_symlinked_image_escaping_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    for c in CLASSES:
        _png(root / "train" / c / "x.png")
    (root / "train" / "bayes" / "link.png").symlink_to(_png(tmp_path / "secret.png"))
    with pytest.raises(DataError, match=r"link\.png: resolves to .* outside the dataset root"):
        load_train(root)


def test_class_folder_symlinked_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "data"
    _png(root / "train" / "background" / "x.png")
    _png(tmp_path / "elsewhere" / "y.png")
    (root / "train" / "bayes").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DataError, match=r"y\.png: resolves to .* outside the dataset root"):
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
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
        return coco

    return f


IMG0 = r"images\[0\] \(test_x/a\.png\): "


@pytest.mark.parametrize(
    "path, value, needle",
    [
        ("", None, r"holds None, not a COCO object"),
        ("", [], r"holds \[\], not a COCO object"),
        ("images", KeyError, r"missing top-level key 'images'"),
        ("images", {"a": 1}, r"top level: 'images' must be a list"),
        ("annotations", "x", r"top level: 'annotations' must be a list"),
        ("categories", None, r"top level: 'categories' must be a list"),
        ("images.0", "x", r"images\[0\]: must be an object"),
        ("annotations.0", [1], r"annotations\[0\]: must be an object"),
        ("categories.0", 5, r"categories\[0\]: must be an object"),
        ("images.0.id", KeyError, r"images\[0\]: missing key 'id'"),
        ("images.0.id", "1", r"images\[0\]: 'id' = '1' must be an integer"),
        ("images.0.id", True, r"images\[0\]: 'id' = True must be an integer"),
        ("images.0.file_name", KeyError, r"images\[0\]: missing key 'file_name'"),
        ("images.0.file_name", ["a.png"], r"images\[0\]: 'file_name' = \['a.png'\] must be a path"),
        ("images.0.primary_label", KeyError, IMG0 + r"missing key 'primary_label'"),
        ("images.0.primary_label", 3, IMG0 + r"'primary_label' = 3 must be a label string"),
        (
            "images.0.acceptable_labels",
            "bayes",
            IMG0 + r"'acceptable_labels' = 'bayes' must be a list of label strings",
        ),
        ("images.0.acceptable_labels", ["bayes", 2], IMG0 + r"'acceptable_labels' = \['bayes', 2\] must be a list"),
        ("images.0.background_acceptable", "yes", IMG0 + r"'background_acceptable' = 'yes' must be true or false"),
        ("annotations.0.image_id", KeyError, r"annotations\[0\]: missing key 'image_id'"),
        ("annotations.0.category_id", KeyError, r"annotations\[0\]: missing key 'category_id'"),
        ("annotations.0.category_id", 7, r"annotations\[0\]: unknown category_id 7"),
        ("annotations.0.bbox", KeyError, r"annotations\[0\]: missing key 'bbox'"),
        ("annotations.0.bbox", "2 2 10 10", r"annotations\[0\]: 'bbox' = '2 2 10 10' must be a list"),
        ("annotations.0.bbox", [1, 2, 3], r"annotations\[0\]: 'bbox' = \[1, 2, 3\] must be 4 numbers"),
        ("annotations.0.bbox", [1, 2, "a", 4], r"annotations\[0\]: 'bbox' = \[1, 2, 'a', 4\] must be 4 numbers"),
        (
            "annotations.0.bbox",
            [1, 2, float("nan"), 4],
            r"annotations\[0\]: 'bbox' = \[1, 2, nan, 4\] must be 4 numbers",
        ),
        (
            "annotations.0.segmentation",
            {"counts": "x", "size": [30, 40]},
            r"annotations\[0\]: 'segmentation' = .*\(RLE masks are not supported\)",
        ),
        ("annotations.0.segmentation", [2, 2, 12, 2, 12, 12], r"annotations\[0\]: 'segmentation'\[0\] = 2 must be"),
        ("annotations.0.segmentation", [[1, 2, 3]], r"annotations\[0\]: 'segmentation'\[0\] = \[1, 2, 3\] must be"),
        ("annotations.0.segmentation", [[2, 2, 12, 2, 12, 12], [1, 2, 3, 4]], r"annotations\[0\]: 'segmentation'\[1\]"),
        ("annotations.0.segmentation", [[2, 2, 12, 2, "x", 12]], r"annotations\[0\]: 'segmentation'\[0\]"),
        ("categories.1.id", KeyError, r"categories\[1\]: missing key 'id'"),
        ("categories.1.name", KeyError, r"categories\[1\]: missing key 'name'"),
        ("categories.1.name", 2, r"categories\[1\]: 'name' = 2 must be a string"),
        ("annotations.0.image_id", 99, r"annotations\[0\]: image_id 99 matches no entry of 'images'"),
        (
            "annotations.0.segmentation",
            [[2, 2, 120, 2, 12, 12]],
            r"annotations\[0\]: polygon .* outside the 40x30 image",
        ),
        ("annotations.0.bbox", [2, 2, 100, 10], r"annotations\[0\]: box .* outside the 40x30 image"),
    ],
)
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


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_a_clear_error(tmp_path, cut):
    f = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(f)
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * cut)])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot decode image"):
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


@pytest.mark.parametrize(
    "suffix, array, mode, expected",
    [
        (".png", np.full((20, 24), 30000, np.uint16), None, 117),  # Pillow opens it as I;16
        (".tif", np.full((20, 24), 30000, np.uint16), "I;16B", 117),
        (".tif", np.full((20, 24), 30000, np.int32), None, 117),  # mode I
        (".tif", np.full((20, 24), 0.5, np.float32), None, 128),  # mode F in [0, 1]
    ],
)
def test_high_bit_depth_is_scaled_not_clipped(tmp_path, suffix, array, mode, expected):
    im = Image.frombytes(mode, array.shape[::-1], array.astype(">u2").tobytes()) if mode else Image.fromarray(array)
    im.save(tmp_path / f"deep{suffix}")
    if mode:
        with Image.open(tmp_path / f"deep{suffix}") as stored:
            assert stored.mode == mode
    t, _, size = decode_image(tmp_path / f"deep{suffix}")
    assert tuple(t.shape) == (3, 20, 24) and size == (24, 20)
    assert abs(int(t[0, 0, 0]) - expected) <= 1 and bool((t == t[0, 0, 0]).all())


def test_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (8, 6), (255, 0, 0, 0))  # fully transparent red
    im.save(tmp_path / "clear.png")
    t, _, _ = decode_image(tmp_path / "clear.png")
    assert bool((t == 255).all())


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


def test_small_images_are_never_upscaled(tmp_path):
    t, scale, _ = decode_image(_png(tmp_path / "s.png", size=(40, 30)), max_short_side=512)
    assert tuple(t.shape) == (3, 30, 40) and scale == 1.0
    t, scale, _ = decode_image(_png(tmp_path / "s.png", size=(40, 30)), max_short_side=30)
    assert tuple(t.shape) == (3, 30, 40) and scale == 1.0


def test_bundled_set_is_unchanged(bundled_root):
    """The 640 x 480 photos are kept as stored, bit for bit (published figures depend on them)."""
    assert working_short_side(64) == working_short_side(224) == 512 and working_short_side(320) == 640
    classes = load_train(bundled_root).classes
    for hard in (
        load_test(bundled_root, "test_difficult", classes),
        load_test(bundled_root, "test_difficult", classes, max_short_side=working_short_side(224)),
    ):
        assert all(
            tuple(s.image.shape) == (3, 480, 640) and s.scale == 1.0 and s.original_size == (640, 480)
            for s in hard.samples
        )
    s = hard.samples[0]
    with Image.open(bundled_root / s.name) as im:
        assert np.array_equal(s.image.permute(1, 2, 0).numpy(), np.asarray(im.convert("RGB")))
    raw = json.loads((bundled_root / "annotations" / "test_difficult.json").read_text())
    boxes = {tuple(float(v) for v in a["bbox"]) for a in raw["annotations"]}
    assert all(r.bbox in boxes for x in hard.samples for r in x.regions)


def test_large_jpeg_is_decoded_at_working_size(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(tmp_path / "big.jpg", quality=70)
    t, scale, size = decode_image(tmp_path / "big.jpg", max_short_side=300)
    assert tuple(t.shape) == (3, 300, 400) and size == (2000, 1500) and scale == pytest.approx(0.2)


def test_exif_orientation_then_working_resolution_keeps_regions_aligned(tmp_path):
    """COCO coordinates refer to the photo as displayed: rotate first, then scale."""
    arr = np.zeros((300, 600, 3), np.uint8)  # stored landscape 600 x 300; displayed portrait 300 x 600
    arr[:, :100] = 255  # the band that ends up at the top once displayed
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    coco = _good(tmp_path)
    im.save(tmp_path / "test_x" / "a.jpg", exif=exif.tobytes(), quality=95)
    coco["images"][0]["file_name"] = "test_x/a.jpg"
    coco["annotations"][0]["bbox"] = [0, 0, 300, 100]  # the band, in displayed pixels
    coco["annotations"][0]["segmentation"] = [[0, 0, 300, 0, 300, 100, 0, 100]]
    _coco(tmp_path, coco)
    s = load_test(tmp_path, "test_x", CLASSES, max_short_side=150).samples[0]
    assert tuple(s.image.shape) == (3, 300, 150) and s.original_size == (300, 600) and s.scale == 0.5
    assert s.regions[0].bbox == (0.0, 0.0, 150.0, 50.0)
    assert s.image[:, 5:45, :].float().mean() > 200 and s.image[:, 60:, :].float().mean() < 50


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(20, 400),
    h=st.integers(20, 400),
    short=st.integers(8, 200),
    box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 1), st.floats(0.01, 1)),
)
def test_scaled_regions_stay_inside_the_scaled_image(tmp_path_factory, w, h, short, box):
    """Any region valid on the stored photo (1 px tolerance) lands inside the working image (same tolerance) at
    the same relative place, and the working image's shorter side is exactly min(stored, max_short_side)."""
    root = tmp_path_factory.mktemp("h")
    coco = _good(root)
    _png(root / "test_x" / "a.png", size=(w, h))
    x0, y0 = box[0] * (w + 1) - 1, box[1] * (h + 1) - 1
    bw, bh = box[2] * (w + 1 - x0), box[3] * (h + 1 - y0)
    coco["annotations"][0]["bbox"] = [x0, y0, bw, bh]
    coco["annotations"][0]["segmentation"] = [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]
    _coco(root, coco)
    s = load_test(root, "test_x", CLASSES, max_short_side=short).samples[0]
    H, W = s.image.shape[1:]
    assert min(H, W) == min(short, w, h) and s.original_size == (w, h)
    assert s.scale == 1.0 if min(w, h) <= short else s.scale == pytest.approx(short / min(w, h))
    x, y, sw, sh = s.regions[0].bbox
    assert -1 <= x and -1 <= y and x + sw <= W + 1 and y + sh <= H + 1
    assert all(-1 <= px <= W + 1 and -1 <= py <= H + 1 for px, py in s.regions[0].polygon)
    assert x / W == pytest.approx(x0 / w) and (y + sh) / H == pytest.approx((y0 + bh) / h)


@pytest.mark.parametrize("label", ["$x_$ cover", "a_$b", "$\\frac{$", "50% off ^_^"])
def test_mathtext_class_names_do_not_crash_overlays(tmp_path, label):
    import torch

    from harness.data import Region
    from harness.saliency.gradcam import save_overlay

    img = torch.zeros(3, 30, 40, dtype=torch.uint8)
    cam = np.zeros((30, 40), np.float32)
    cam[5:10, 5:10] = 1
    regions = [Region(label, ((1.0, 1.0), (20.0, 1.0), (20.0, 20.0)), (1, 1, 19, 19)), Region(label, (), (2, 2, 5, 5))]
    out = save_overlay(
        tmp_path / "o.png",
        img,
        [(f"predicted {label}", cam), (f"label {label}", cam)],
        regions,
        f"{label}/img.jpg: predicted {label}",
    )
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100
