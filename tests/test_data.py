"""Dataset loading and validation, split and oversampling."""

from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data import DataError, load_test, load_train, oversample, stratified_split
from tests.conftest import write_image

CLASSES = ("background", "bayes", "geeks", "keras", "nlp", "technium")


def test_bundled_dataset(bundled_root):
    train = load_train(bundled_root)
    assert train.classes == CLASSES
    assert Counter(s.label for s in train.samples) == {
        "background": 27,
        "bayes": 9,
        "geeks": 8,
        "keras": 9,
        "nlp": 9,
        "technium": 9,
    }
    easy = load_test(bundled_root, "test_easy", train.classes)
    hard = load_test(bundled_root, "test_difficult", train.classes)
    assert (len(easy), len(hard)) == (6, 20) and hard.has_regions
    s = hard.samples[0]
    assert s.image.dtype == torch.uint8 and tuple(s.image.shape) == (3, 480, 640)
    assert s.label in s.acceptable and s.regions and all(r.label in CLASSES for r in s.regions)
    # the unknown_book category is data, not a class: never a region label
    assert all(r.label != "unknown_book" for x in hard.samples for r in x.regions)


def test_plain_imagefolder_test_split(tiny_root):
    train = load_train(tiny_root)
    test = load_test(tiny_root, "test_plain", train.classes)
    assert not test.has_regions and len(test) == 3
    assert {s.label for s in test.samples} == set(train.classes)


def test_missing_and_empty_class_folders(tmp_path, tiny_root):
    with pytest.raises(DataError, match="training folder missing"):
        load_train(tmp_path / "nowhere")
    (tiny_root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        load_train(tiny_root)


def test_corrupt_image_named(tiny_root):
    bad = tiny_root / "train" / "red" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot decode"):
        load_train(tiny_root)


def _coco(root: Path, images, annotations, cats=("background", "red", "green")):
    import json

    (root / "annotations").mkdir(exist_ok=True)
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(cats)] + [{"id": 99, "name": "unknown_book"}],
    }
    (root / "annotations" / "t.json").write_text(json.dumps(doc))


def _img(file_name, primary="red", acceptable=("red",), w=48, h=40):
    return {
        "id": 1,
        "file_name": file_name,
        "width": w,
        "height": h,
        "acceptable_labels": list(acceptable),
        "primary_label": primary,
        "background_acceptable": False,
    }


def test_coco_errors(tiny_root):
    write_image(tiny_root / "t" / "a.jpg", (220, 30, 30))
    classes = ("background", "green", "red")
    _coco(tiny_root, [_img("t/missing.jpg")], [])
    with pytest.raises(DataError, match="missing file .*missing.jpg"):
        load_test(tiny_root, "t", classes)
    _coco(tiny_root, [_img("t/a.jpg", primary="blue", acceptable=["blue"])], [])
    with pytest.raises(DataError, match="unknown label 'blue'"):
        load_test(tiny_root, "t", classes)
    _coco(
        tiny_root,
        [_img("t/a.jpg")],
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [40, 30, 30, 30],
                "segmentation": [[40, 30, 70, 30, 70, 60, 40, 60]],
            }
        ],
    )
    with pytest.raises(DataError, match="lies outside the 48x40 image"):
        load_test(tiny_root, "t", classes)
    _coco(tiny_root, [_img("t/a.jpg")], [{"id": 1, "image_id": 1, "category_id": 42, "bbox": [1, 1, 3, 3]}])
    with pytest.raises(DataError, match="unknown category_id 42"):
        load_test(tiny_root, "t", classes)
    with pytest.raises(DataError, match="test set 'nope' not found"):
        load_test(tiny_root, "nope", classes)


def test_coco_background_acceptable(tiny_root):
    write_image(tiny_root / "t" / "a.jpg", (220, 30, 30))
    img = _img("t/a.jpg") | {"background_acceptable": True}
    _coco(
        tiny_root,
        [img],
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 2,
                "bbox": [5, 5, 10, 10],
                "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]],
            }
        ],
    )
    s = load_test(tiny_root, "t", ("background", "green", "red")).samples[0]
    assert s.acceptable == {"red", "background"} and s.regions[0].label == "red"


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(2, 30), min_size=2, max_size=6), frac=st.floats(0.1, 0.5), seed=st.integers(0, 99))
def test_split_is_stratified_and_oversampling_balances(counts, frac, seed):
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    tr, va = stratified_split(labels, frac, seed)
    assert sorted(tr + va) == list(range(len(labels)))
    for c in range(len(counts)):
        assert any(labels[i] == c for i in tr) and any(labels[i] == c for i in va)
    assert stratified_split(labels, frac, seed) == (tr, va)
    epoch = oversample(labels, tr, seed)
    per_class = Counter(labels[i] for i in epoch)
    assert len(set(per_class.values())) == 1
    assert per_class[0] == max(Counter(labels[i] for i in tr).values())
    assert set(epoch) == set(tr)
